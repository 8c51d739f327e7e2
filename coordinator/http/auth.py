"""Who may change the fleet over HTTP: a bearer token from ``[http] token``; reading needs none.

A missing or wrong token is a 401 (with ``WWW-Authenticate: Bearer``); with no
token configured every change is refused with a 403 saying how to enable it.
The comparison takes the same time whatever the guess.
"""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from coordinator.http.context import ApiContext, api_context
from coordinator.http.errors import ApiError

__all__ = ["require_token"]

_bearer = HTTPBearer(auto_error=False, description="the token in the coordinator's [http] table")


def require_token(ctx: Annotated[ApiContext, Depends(api_context)],
                  credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> str:
    """The dependency of every route that changes something; returns who is acting ("token")."""
    expected = ctx.config.token
    if expected is None:
        raise ApiError(403, "changes_disabled", "this coordinator takes no changes over HTTP: set "
                       "[http] token (or token_file) in its configuration")
    given = credentials.credentials if credentials is not None else ""
    if credentials is None or credentials.scheme.lower() != "bearer" or not secrets.compare_digest(
            given.encode(), expected.encode()):
        raise ApiError(401, "unauthorized", "this needs Authorization: Bearer <[http] token>",
                       headers={"WWW-Authenticate": "Bearer"})
    return "token"
