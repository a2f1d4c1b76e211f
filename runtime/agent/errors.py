"""The agent's exception tree, rooted at `AgentError`.

    AgentError
    ├── ConfigError            the connection string or config file is unusable
    ├── ManifestError          a desired manifest was rejected (reason in `code`)
    ├── ImageError             an image could not be pulled, verified or unpacked
    │   ├── RegistryUnavailableError   the registry could not be reached (worth retrying)
    │   └── ImageIntegrityError        content did not match its digest, or an entry escapes its root
    ├── ModuleError            a module could not be started, probed or stopped
    │   └── HealthCheckError   a started module did not become healthy (reason in the message)
    └── LinkError              the MQTT link failed (worth retrying)

Errors from other libraries (paho, sqlite3, http.client, OSError) are turned into these where they enter.
"""

from __future__ import annotations


class AgentError(Exception):
    """Root of every error the agent raises on purpose."""


class ConfigError(AgentError):
    """The agent's configuration cannot be used; the message names the field to fix."""


class ManifestError(AgentError):
    """A desired manifest was not accepted.

    `code` is one of: `malformed`, `unsigned`, `bad-signature`, `stale`, `wrong-device`.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class ImageError(AgentError):
    """An image could not be pulled, verified or unpacked."""


class RegistryUnavailableError(ImageError):
    """The registry did not answer or answered 5xx; pulling again later may succeed."""


class ImageIntegrityError(ImageError):
    """Pulled content does not match its digest, or the image is unsafe to unpack."""


class ModuleError(AgentError):
    """A module could not be started, probed or stopped."""


class HealthCheckError(ModuleError):
    """A module did not pass its health check (not live, not ready, or the warm-up inference failed)."""


class LinkError(AgentError):
    """The MQTT link failed: not connected, refused, or a publish was not acknowledged in time."""
