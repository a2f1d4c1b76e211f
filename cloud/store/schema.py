"""The workspace's tables (SQLAlchemy Core), shared by the store, the query compiler and the migrations.

Times are seconds since the epoch (float), as in the records. JSON documents (run specs, git info, model
files, metric payloads) are stored as text and parsed by the store, so SQLite and PostgreSQL behave the same.
A migration in `migrations/versions/` must follow every change made here.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

ID = sa.String(32)
NAME = sa.String(128)
KEY = sa.String(256)
TIME = sa.Float()

experiments = sa.Table(
    "experiments",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("name", NAME, nullable=False, unique=True),
    sa.Column("created_at", TIME, nullable=False),
)

runs = sa.Table(
    "runs",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("experiment_id", ID, sa.ForeignKey("experiments.id", ondelete="CASCADE"), nullable=False),
    sa.Column("parent_id", ID, sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=True),
    sa.Column("name", KEY, nullable=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("created_at", TIME, nullable=False),
    sa.Column("started_at", TIME, nullable=True),
    sa.Column("ended_at", TIME, nullable=True),
    sa.Column("exit_code", sa.Integer, nullable=True),
    sa.Column("status_reason", sa.Text, nullable=True),
    sa.Column("spec", sa.Text, nullable=True),
    sa.Column("git", sa.Text, nullable=True),
    sa.Column("pid", sa.Integer, nullable=True),
    sa.Index(None, "experiment_id", "created_at"),
    sa.Index(None, "parent_id"),
    sa.Index(None, "status"),
)

run_tags = sa.Table(
    "run_tags",
    metadata,
    sa.Column("run_id", ID, sa.ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("key", KEY, primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)

snapshot_files = sa.Table(
    "snapshot_files",
    metadata,
    sa.Column("run_id", ID, sa.ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("path", sa.Text, primary_key=True),
    sa.Column("digest", sa.String(80), nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("mode", sa.Integer, nullable=False),
)

# Every logged point, in logging order (`id`). Scalars carry `value`; other kinds a JSON `payload`.
metrics = sa.Table(
    "metrics",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("run_id", ID, sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    sa.Column("name", KEY, nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("value", sa.Float, nullable=True),
    sa.Column("step", sa.BigInteger, nullable=True),
    sa.Column("timestamp", TIME, nullable=False),
    sa.Column("payload", sa.Text, nullable=True),
    sa.Index(None, "run_id", "name", "id"),
)

# The latest value of each scalar metric of a run (highest step, then latest timestamp, then last logged):
# what run filters and sorts read, so they never scan the points.
latest_metrics = sa.Table(
    "latest_metrics",
    metadata,
    sa.Column("run_id", ID, sa.ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("name", KEY, primary_key=True),
    sa.Column("value", sa.Float, nullable=False),
    sa.Column("step", sa.BigInteger, nullable=False),  # -1 when the point had no step
    sa.Column("timestamp", TIME, nullable=False),
    sa.Index(None, "name", "value"),
)

artifacts = sa.Table(
    "artifacts",
    metadata,
    sa.Column("run_id", ID, sa.ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("path", sa.Text, primary_key=True),
    sa.Column("digest", sa.String(80), nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("created_at", TIME, nullable=False),
)

# One row per model name; `last_version` is bumped in the transaction that inserts a version, which makes
# version numbers unique and gap-free under concurrent registrations on SQLite and PostgreSQL alike.
registered_models = sa.Table(
    "registered_models",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", NAME, nullable=False, unique=True),
    sa.Column("last_version", sa.Integer, nullable=False, server_default="0"),
    sa.Column("created_at", TIME, nullable=False),
)

model_versions = sa.Table(
    "model_versions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("model_id", sa.Integer, sa.ForeignKey("registered_models.id", ondelete="CASCADE"), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("created_at", TIME, nullable=False),
    sa.Column("format", sa.String(64), nullable=False),
    sa.Column("framework", sa.String(128), nullable=True),
    sa.Column("description", sa.Text, nullable=True),
    sa.Column("files", sa.Text, nullable=False),
    sa.Column("run_id", ID, sa.ForeignKey("runs.id", ondelete="SET NULL"), nullable=True),
    sa.Column("experiment", NAME, nullable=True),
    sa.Column("properties", sa.Text, nullable=False),
    sa.UniqueConstraint("model_id", "version"),
    sa.Index(None, "created_at"),
)

model_tags = sa.Table(
    "model_tags",
    metadata,
    sa.Column("version_id", sa.Integer, sa.ForeignKey("model_versions.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("key", KEY, primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
    sa.Index(None, "key"),
)

# Long operations (image builds): status, progress and outcome, polled by clients.
activities = sa.Table(
    "activities",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("created_at", TIME, nullable=False),
    sa.Column("started_at", TIME, nullable=True),
    sa.Column("ended_at", TIME, nullable=True),
    sa.Column("progress", sa.Float, nullable=False),
    sa.Column("message", sa.Text, nullable=True),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("result", KEY, nullable=True),
    sa.Column("parameters", sa.Text, nullable=False),
    sa.Index(None, "status"),
    sa.Index(None, "created_at"),
)

# One row per image name, with its version counter (as `registered_models` for models).
image_repositories = sa.Table(
    "image_repositories",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", NAME, nullable=False, unique=True),
    sa.Column("last_version", sa.Integer, nullable=False, server_default="0"),
    sa.Column("created_at", TIME, nullable=False),
)

images = sa.Table(
    "images",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("repository_id", sa.Integer, sa.ForeignKey("image_repositories.id", ondelete="CASCADE"), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("created_at", TIME, nullable=False),
    sa.Column("manifest_digest", sa.String(80), nullable=False),
    sa.Column("config_digest", sa.String(80), nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("media_type", sa.String(128), nullable=False),
    sa.Column("model_digest", sa.String(80), nullable=True),
    sa.Column("models", sa.Text, nullable=False),
    sa.Column("activity_id", ID, sa.ForeignKey("activities.id", ondelete="SET NULL"), nullable=True),
    sa.Column("base", sa.Text, nullable=True),
    sa.Column("kind", sa.String(16), nullable=False, server_default="oci"),  # oci | fpga
    sa.Column("details", sa.Text, nullable=True),  # JSON: what the build measured (e.g. an FPGA's resources)
    sa.UniqueConstraint("repository_id", "version"),
    sa.Index(None, "created_at"),
    sa.Index(None, "manifest_digest"),
)

image_tags = sa.Table(
    "image_tags",
    metadata,
    sa.Column("image_id", sa.Integer, sa.ForeignKey("images.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("key", KEY, primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
    sa.Index(None, "key"),
)

# What uses a model version or an image: exactly one of `version_id` and `image_id` is set. An image records
# kind "image" on each model version it holds (informational); an active "deployment" reference forbids
# deleting the model version or image it points at.
model_references = sa.Table(
    "model_references",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("version_id", sa.Integer, sa.ForeignKey("model_versions.id", ondelete="CASCADE"), nullable=True),
    sa.Column("image_id", sa.Integer, sa.ForeignKey("images.id", ondelete="CASCADE"), nullable=True),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("ref", KEY, nullable=False),
    sa.Column("active", sa.Boolean, nullable=False),
    sa.Column("created_at", TIME, nullable=False),
    sa.UniqueConstraint("version_id", "kind", "ref"),
    sa.UniqueConstraint("image_id", "kind", "ref"),
    sa.CheckConstraint("(version_id IS NULL) <> (image_id IS NULL)", name="ck_model_references_one_target"),
    sa.Index(None, "kind", "ref"),
)

# Registered devices. Credentials live with the broker's accounts, not here; the state columns hold what the
# device last said about itself over MQTT (None until it has said anything).
devices = sa.Table(
    "devices",
    metadata,
    sa.Column("id", NAME, primary_key=True),
    sa.Column("created_at", TIME, nullable=False),
    sa.Column("last_seen_at", TIME, nullable=True),
    sa.Column("status", sa.String(16), nullable=True),
    sa.Column("reported", sa.Text, nullable=True),
    sa.Column("desired_version", sa.BigInteger, nullable=True),
)

# A device's tags, one row each (as for runs, models and images), so tag filters and deployment target
# conditions compile to indexed SQL instead of reading every device.
device_tags = sa.Table(
    "device_tags",
    metadata,
    sa.Column("device_id", NAME, sa.ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("key", KEY, primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
    sa.Index(None, "key"),
)

# Telemetry records as devices send them (docs/agent.md): one row per (device, sequence number), so a record the
# device sent twice (a batch resent after a lost acknowledgement) is stored once.
telemetry_records = sa.Table(
    "telemetry_records",
    metadata,
    sa.Column("device_id", NAME, sa.ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("ts", TIME, nullable=False),  # when the device produced it
    sa.Column("received_at", TIME, nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),  # health | scoring | sample | event
    sa.Column("module", NAME, nullable=True),
    sa.Column("data", sa.Text, nullable=False),
    sa.Index(None, "device_id", "ts"),
)

# Deployments of images to devices (one row each; deleting a deployment removes the row). `target` is a
# condition over device tags, or `device_id` names one device. `serial` orders creation (ties of priority).
deployments = sa.Table(
    "deployments",
    metadata,
    sa.Column("name", NAME, primary_key=True),
    sa.Column("serial", sa.Integer, nullable=False),
    sa.Column("image_name", NAME, nullable=False),
    sa.Column("image_version", sa.Integer, nullable=False),
    sa.Column("manifest_digest", sa.String(80), nullable=False),
    sa.Column("image", sa.Text, nullable=False),
    sa.Column("device_id", NAME, nullable=True),
    sa.Column("target", sa.Text, nullable=True),
    sa.Column("priority", sa.Integer, nullable=False),
    sa.Column("module", NAME, nullable=False),
    sa.Column("module_type", sa.String(16), nullable=False, server_default="oci"),  # oci | fpga: the image's kind
    sa.Column("env", sa.Text, nullable=False),
    sa.Column("restart_policy", sa.String(16), nullable=False),
    sa.Column("settings", sa.Text, nullable=False),
    sa.Column("rollout", sa.Text, nullable=False),  # {"batch_size", "batch_percent", "max_failures"}
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("reason", sa.Text, nullable=True),
    sa.Column("created_at", TIME, nullable=False),
)

# Each targeted device's progress through a deployment (pending, targeted, applied, succeeded, failed,
# rolled-back), its rollout batch, and the manifest version that first included the deployment.
deployment_devices = sa.Table(
    "deployment_devices",
    metadata,
    sa.Column("deployment", NAME, sa.ForeignKey("deployments.name", ondelete="CASCADE"), primary_key=True),
    sa.Column("device_id", NAME, primary_key=True),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("reason", sa.Text, nullable=True),
    sa.Column("batch", sa.Integer, nullable=True),
    sa.Column("version", sa.BigInteger, nullable=True),
    sa.Column("updated_at", TIME, nullable=False),
    sa.Index(None, "device_id"),
)

# Every manifest published to a device, by version (kept after the device is removed, so a device added
# again under the same id continues with higher versions).
device_manifests = sa.Table(
    "device_manifests",
    metadata,
    sa.Column("device_id", NAME, primary_key=True),
    sa.Column("version", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("document", sa.Text, nullable=False),
    sa.Column("created_at", TIME, nullable=False),
)
