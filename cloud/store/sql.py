"""`SqlStore`: every metadata read and write of the workspace, on SQLite or PostgreSQL.

One instance is shared by the service's request threads and runner threads; each call is one transaction on
its own pooled connection. Several instances (or processes) may share one database.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from edgewise.cloud.errors import ConflictError, InvalidInputError, NotFoundError
from edgewise.cloud.names import check_name
from edgewise.cloud.store import query
from edgewise.cloud.store.database import (
    Database,
    check_page_size,
    create_engine,
    decode_page_token,
    encode_page_token,
)
from edgewise.cloud.store.records import (
    Artifact,
    Experiment,
    FileEntry,
    GitInfo,
    Page,
    Run,
    RunSpec,
    RunStatus,
)
from edgewise.cloud.store.schema import (
    artifacts,
    experiments,
    latest_metrics,
    run_tags,
    runs,
    snapshot_files,
)
from edgewise.cloud.store.sql_activities import SqlActivities
from edgewise.cloud.store.sql_deployments import SqlDeployments
from edgewise.cloud.store.sql_devices import SqlDevices
from edgewise.cloud.store.sql_images import SqlImages
from edgewise.cloud.store.sql_metrics import SqlMetrics, require_run
from edgewise.cloud.store.sql_models import SqlModelRegistry
from edgewise.cloud.store.sql_telemetry import SqlTelemetry
from edgewise.cloud.store.values import check_files, check_tags, dumps, loads, new_id, now

UNFINISHED = (RunStatus.QUEUED.value, RunStatus.PREPARING.value, RunStatus.RUNNING.value)
MAX_RUN_NAME = 256

_RUN_SELECT = sa.select(runs, experiments.c.name.label("experiment_name")).join(
    experiments, experiments.c.id == runs.c.experiment_id
)
_RUN_COUNT = (
    sa.select(sa.func.count())
    .where(runs.c.experiment_id == experiments.c.id, runs.c.parent_id.is_(None))
    .scalar_subquery()
)


class SqlStore(SqlMetrics, SqlModelRegistry, SqlImages, SqlActivities, SqlDevices, SqlDeployments, SqlTelemetry):
    """The workspace's metadata: experiments, runs, metrics, artifacts, the model and image registries, activities,
    devices."""

    def __init__(self, *, database: Database) -> None:
        self._db = database

    @property
    def database(self) -> Database:
        """For code that batches several of the store's writes into one transaction on the same tables."""
        return self._db

    @property
    def is_local(self) -> bool:
        """True for SQLite: a short transaction costs less than handing it to another thread."""
        return self._db.dialect == "sqlite"

    @classmethod
    def open(cls, url: str) -> SqlStore:
        """Connect to `url` (sqlite:///PATH or postgresql://...) and migrate its schema to the newest revision."""
        database = Database(engine=create_engine(url))
        try:
            database.migrate()
        except BaseException:
            database.dispose()
            raise
        return cls(database=database)

    def close(self) -> None:
        self._db.dispose()

    # -- experiments -----------------------------------------------------------------------------------------

    def _ensure_experiment(self, conn: sa.Connection, name: str) -> str:
        check_name("experiment", name)
        insert = self._db.insert(experiments).values(id=new_id(), name=name, created_at=now())
        conn.execute(insert.on_conflict_do_nothing(index_elements=["name"]))
        return str(conn.execute(sa.select(experiments.c.id).where(experiments.c.name == name)).scalar_one())

    def get_or_create_experiment(self, name: str) -> Experiment:
        with self._db.write() as conn:
            self._ensure_experiment(conn, name)
            return self._experiment(conn, name)

    def get_experiment(self, name: str) -> Experiment:
        with self._db.read() as conn:
            return self._experiment(conn, name)

    def _experiment(self, conn: sa.Connection, name: str) -> Experiment:
        row = conn.execute(
            sa.select(experiments, _RUN_COUNT.label("run_count")).where(experiments.c.name == name)
        ).first()
        if row is None:
            raise NotFoundError(f"no experiment named {name!r}; it is created when its first run is submitted")
        return _experiment_record(row._mapping)

    def list_experiments(self, *, page_size: int = 100, page_token: str | None = None) -> Page[Experiment]:
        """Experiments by name, each with its number of top-level runs."""
        offset, size = decode_page_token(page_token), check_page_size(page_size)
        stmt = sa.select(experiments, _RUN_COUNT.label("run_count")).order_by(experiments.c.name)
        with self._db.read() as conn:
            rows = conn.execute(stmt.offset(offset).limit(size + 1)).all()
        return _page([_experiment_record(r._mapping) for r in rows], offset, size)

    # -- runs ------------------------------------------------------------------------------------------------

    def create_run(
        self,
        *,
        experiment: str,
        spec: RunSpec | None,
        snapshot: list[FileEntry],
        git: GitInfo | None,
        name: str | None = None,
        parent_id: str | None = None,
        tags: dict[str, str] | None = None,
        status: RunStatus = RunStatus.QUEUED,
    ) -> Run:
        """A new run; the experiment is created on first use, and a child run joins its parent's experiment."""
        files = check_files(snapshot, what="snapshot file")
        checked_tags = check_tags(tags)
        status = RunStatus(status)
        if name is not None and (not isinstance(name, str) or len(name) > MAX_RUN_NAME):
            raise InvalidInputError(f"a run name is a text of at most {MAX_RUN_NAME} characters, not {name!r}")
        run_id, created = new_id(), now()
        with self._db.write() as conn:
            if parent_id is not None:
                parent = conn.execute(sa.select(runs.c.experiment_id).where(runs.c.id == parent_id)).first()
                if parent is None:
                    raise NotFoundError(f"no run {parent_id!r} to be the parent of a new run")
                experiment_id = str(parent.experiment_id)
            else:
                experiment_id = self._ensure_experiment(conn, experiment)
            conn.execute(
                runs.insert().values(
                    id=run_id,
                    experiment_id=experiment_id,
                    parent_id=parent_id,
                    name=name,
                    status=status.value,
                    created_at=created,
                    started_at=created if status is RunStatus.RUNNING else None,
                    ended_at=created if status.terminal else None,
                    spec=None if spec is None else dumps(spec.to_dict(), what="the run spec"),
                    git=None if git is None else dumps(git.to_dict(), what="the git information"),
                )
            )
            if files:
                conn.execute(
                    snapshot_files.insert(),
                    [
                        {"run_id": run_id, "path": f.path, "digest": f.digest, "size": f.size, "mode": f.mode}
                        for f in files
                    ],
                )
            if checked_tags:
                conn.execute(
                    run_tags.insert(), [{"run_id": run_id, "key": k, "value": v} for k, v in checked_tags.items()]
                )
            return self._get_run(conn, run_id)

    def get_run(self, run_id: str) -> Run:
        with self._db.read() as conn:
            return self._get_run(conn, run_id)

    def _get_run(self, conn: sa.Connection, run_id: str) -> Run:
        row = conn.execute(_RUN_SELECT.where(runs.c.id == run_id)).first()
        if row is None:
            raise NotFoundError(f"no run {run_id!r}")
        return _load_runs(conn, [row])[0]

    def list_runs(
        self,
        *,
        experiment: str | None = None,
        filter: str | None = None,
        order_by: str | None = None,
        include_children: bool = False,
        parent_id: str | None = None,
        page_size: int = 100,
        page_token: str | None = None,
    ) -> Page[Run]:
        """Runs matching a filter, in the given order (newest first by default); top-level runs unless
        `include_children` or `parent_id` asks for child runs."""
        offset, size = decode_page_token(page_token), check_page_size(page_size)
        stmt = _RUN_SELECT
        if experiment is not None:
            stmt = stmt.where(experiments.c.name == experiment)
        if parent_id is not None:
            stmt = stmt.where(runs.c.parent_id == parent_id)
        elif not include_children:
            stmt = stmt.where(runs.c.parent_id.is_(None))
        condition = query.filter_clause(filter)
        if condition is not None:
            stmt = stmt.where(condition)
        stmt = stmt.order_by(*query.order_clauses(order_by)).offset(offset).limit(size + 1)
        with self._db.read() as conn:
            rows = conn.execute(stmt).all()
            items = _load_runs(conn, rows[:size])
        return Page(items=items, next_page_token=encode_page_token(offset + size) if len(rows) > size else None)

    def update_run_status(
        self, run_id: str, status: RunStatus, *, exit_code: int | None = None, reason: str | None = None
    ) -> Run:
        """Move a run to `status`; a run that has ended (completed, failed, canceled) never changes again."""
        status = RunStatus(status)
        with self._db.write() as conn:
            row = conn.execute(
                sa.select(runs.c.status, runs.c.started_at).where(runs.c.id == run_id).with_for_update()
            ).first()
            if row is None:
                raise NotFoundError(f"no run {run_id!r}")
            current = RunStatus(row.status)
            if current.terminal:
                raise ConflictError(
                    f"run {run_id} has already ended ({current.value}); it cannot become {status.value}"
                )
            values: dict[str, Any] = {"status": status.value}
            stamp = now()
            if status is RunStatus.RUNNING and row.started_at is None:
                values["started_at"] = stamp
            if status.terminal:
                values["ended_at"] = stamp
            if exit_code is not None:
                values["exit_code"] = exit_code
            if reason is not None:
                values["status_reason"] = reason
            conn.execute(sa.update(runs).where(runs.c.id == run_id).values(**values))
            return self._get_run(conn, run_id)

    def fail_unfinished_runs(self, reason: str) -> list[str]:
        """Mark every queued, preparing or running run failed with `reason`; answer their ids."""
        with self._db.write() as conn:
            result = conn.execute(
                sa.update(runs)
                .where(runs.c.status.in_(UNFINISHED))
                .values(status=RunStatus.FAILED.value, status_reason=reason, ended_at=now())
                .returning(runs.c.id)
            )
            return sorted(str(r) for r in result.scalars())

    def set_run_tags(self, run_id: str, tags: Mapping[str, str]) -> Run:
        """Add or replace the given tags; other tags stay."""
        checked = check_tags(tags)
        with self._db.write() as conn:
            require_run(conn, run_id)
            if checked:
                stmt = self._db.insert(run_tags)
                stmt = stmt.on_conflict_do_update(index_elements=["run_id", "key"], set_={"value": stmt.excluded.value})
                conn.execute(stmt, [{"run_id": run_id, "key": k, "value": v} for k, v in checked.items()])
            return self._get_run(conn, run_id)

    def get_snapshot(self, run_id: str) -> list[FileEntry]:
        with self._db.read() as conn:
            require_run(conn, run_id)
            rows = conn.execute(
                sa.select(snapshot_files).where(snapshot_files.c.run_id == run_id).order_by(snapshot_files.c.path)
            ).all()
        return [FileEntry(path=r.path, digest=r.digest, size=r.size, mode=r.mode) for r in rows]

    def set_run_pid(self, run_id: str, pid: int | None) -> None:
        """Remember the process group of a run's script, so a restarted service can stop an orphan."""
        with self._db.write() as conn:
            if conn.execute(sa.update(runs).where(runs.c.id == run_id).values(pid=pid)).rowcount == 0:
                raise NotFoundError(f"no run {run_id!r}")

    def unfinished_run_pids(self) -> dict[str, int]:
        """Process groups recorded for runs that never ended: what a previous service instance may have left."""
        with self._db.read() as conn:
            rows = conn.execute(
                sa.select(runs.c.id, runs.c.pid).where(runs.c.status.in_(UNFINISHED), runs.c.pid.is_not(None))
            )
            return {str(row.id): int(row.pid) for row in rows}

    def get_run_pid(self, run_id: str) -> int | None:
        with self._db.read() as conn:
            row = conn.execute(sa.select(runs.c.pid).where(runs.c.id == run_id)).first()
        if row is None:
            raise NotFoundError(f"no run {run_id!r}")
        return None if row.pid is None else int(row.pid)

    # -- artifacts -------------------------------------------------------------------------------------------

    def add_artifacts(self, run_id: str, entries: Sequence[FileEntry]) -> None:
        """Record files of a run (blobs uploaded beforehand); a path given again points at the new blob."""
        files = check_files(entries, what="artifact path")
        if not files:
            return
        stamp = now()
        stmt = self._db.insert(artifacts)
        stmt = stmt.on_conflict_do_update(
            index_elements=["run_id", "path"],
            set_={"digest": stmt.excluded.digest, "size": stmt.excluded.size, "created_at": stmt.excluded.created_at},
        )
        with self._db.write() as conn:
            require_run(conn, run_id)
            conn.execute(
                stmt,
                [
                    {"run_id": run_id, "path": f.path, "digest": f.digest, "size": f.size, "created_at": stamp}
                    for f in files
                ],
            )

    def list_artifacts(self, run_id: str, prefix: str | None = None) -> list[Artifact]:
        """A run's files by path; with `prefix`, only those whose path starts with it."""
        stmt = sa.select(artifacts).where(artifacts.c.run_id == run_id).order_by(artifacts.c.path)
        if prefix:
            stmt = stmt.where(artifacts.c.path.startswith(prefix, autoescape=True))
        with self._db.read() as conn:
            require_run(conn, run_id)
            return [_artifact_record(r._mapping) for r in conn.execute(stmt)]

    def get_artifact(self, run_id: str, path: str) -> Artifact:
        with self._db.read() as conn:
            require_run(conn, run_id)
            row = conn.execute(
                sa.select(artifacts).where(artifacts.c.run_id == run_id, artifacts.c.path == path)
            ).first()
        if row is None:
            raise NotFoundError(f"run {run_id} has no file {path!r}")
        return _artifact_record(row._mapping)


def _page(items: list[Any], offset: int, size: int) -> Page[Any]:
    more = len(items) > size
    return Page(items=items[:size], next_page_token=encode_page_token(offset + size) if more else None)


def _experiment_record(m: sa.RowMapping) -> Experiment:
    return Experiment(id=m["id"], name=m["name"], created_at=m["created_at"], run_count=int(m["run_count"] or 0))


def _artifact_record(m: sa.RowMapping) -> Artifact:
    return Artifact(run_id=m["run_id"], path=m["path"], digest=m["digest"], size=m["size"], created_at=m["created_at"])


def _load_runs(conn: sa.Connection, rows: Sequence[sa.Row[Any]]) -> list[Run]:
    """Run records with their tags and latest metric values, two queries for the whole list."""
    ids = [row.id for row in rows]
    tags: dict[str, dict[str, str]] = {i: {} for i in ids}
    values: dict[str, dict[str, float]] = {i: {} for i in ids}
    if ids:
        for t in conn.execute(sa.select(run_tags).where(run_tags.c.run_id.in_(ids)).order_by(run_tags.c.key)):
            tags[t.run_id][t.key] = t.value
        for v in conn.execute(
            sa.select(latest_metrics).where(latest_metrics.c.run_id.in_(ids)).order_by(latest_metrics.c.name)
        ):
            values[v.run_id][v.name] = v.value
    result = []
    for row in rows:
        m = row._mapping
        spec, git = loads(m["spec"]), loads(m["git"])
        result.append(
            Run(
                id=m["id"],
                experiment=m["experiment_name"],
                status=RunStatus(m["status"]),
                created_at=m["created_at"],
                name=m["name"],
                parent_id=m["parent_id"],
                started_at=m["started_at"],
                ended_at=m["ended_at"],
                exit_code=m["exit_code"],
                status_reason=m["status_reason"],
                spec=None if spec is None else RunSpec.from_dict(spec),
                git=None if git is None else GitInfo.from_dict(git),
                tags=tags[m["id"]],
                metrics=values[m["id"]],
            )
        )
    return result
