"""The workspace's HTTP API (FastAPI): routers only translate between HTTP and `Workspace` calls."""

from edgewise.cloud.api.app import API_PREFIX, create_app

__all__ = ["API_PREFIX", "create_app"]
