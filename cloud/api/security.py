"""The bearer-token check every route but health and the API docs goes through."""

from __future__ import annotations

import hmac

from edgewise.cloud.errors import AuthenticationError
from fastapi import Request


class BearerToken:
    """A FastAPI dependency comparing the request's bearer token with the service's, in constant time."""

    def __init__(self, *, token: str) -> None:
        self._expected = f"Bearer {token}".encode()

    async def __call__(self, request: Request) -> None:
        given = request.headers.get("authorization", "").encode()
        if not given:
            raise AuthenticationError(
                "this call needs the workspace token: set EDGEWISE_TOKEN (it is in the service's data folder, "
                "file 'token') or send 'Authorization: Bearer <token>'"
            )
        if not hmac.compare_digest(given, self._expected):
            raise AuthenticationError("the bearer token is wrong: use the one in the service's data folder")
