"""The route guard: `require(scope)` turns a request's API key into a Principal or a 401/403/429.

Why a module of its own: the guard needs the API context (key store and rate limiter), and the context is built
from the auth module's parts; keeping the guard apart lets both import downward with no cycle.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import HTTPException, Request, Security

from service.api.auth import AuthError, Principal, Scope, api_key_header, authenticate, presented_key
from service.api.context import api_context


def require(scope: Scope) -> Callable[..., Awaitable[Principal]]:
    """A dependency that admits only keys holding `scope` (admin holds every scope) and within their rate."""

    async def dependency(request: Request, header_key: str | None = Security(api_key_header)) -> Principal:
        ctx = api_context(request.app)
        key = header_key or presented_key(dict(request.headers), dict(request.query_params))
        try:
            return await authenticate(ctx.keys, ctx.limiter, key, scope)
        except AuthError as err:
            headers = {"WWW-Authenticate": "ApiKey"} if err.status_code == 401 else None
            raise HTTPException(err.status_code, detail=err.detail, headers=headers) from None

    dependency.__name__ = f"require_{scope.value}"
    return dependency
