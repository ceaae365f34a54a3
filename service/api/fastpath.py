"""POST /v1/score/transaction answered without FastAPI's routing and dependency machinery, when it can be answered
exactly as the route would answer it.

Why: scoring a trade is the API's hot path, and on this 2-core machine FastAPI's per-request work for that route
(route matching through every included router, dependency resolution, the request object, the exception and
exit-stack middlewares) cost more CPU than the rest of the request's Python code put together; bench.api measures it.

How it stays identical: this middleware takes only a request whose answer it knows to be the route's own: a body
with `Content-Type: application/json` that parses (json.loads, as FastAPI does) and validates as `TransactionIn`
(the route's body type), a key in `X-API-Key` or `Authorization: Bearer` that verifies and holds the `score` scope,
and a rate-limit take that is allowed. It then runs the route's own scoring (`routes_scoring._score_one`) and
sends the same response the route sends. Anything else (no key, a wrong or unscoped key, over the limit, a body that
does not parse or validate, another content type) goes on to the FastAPI route with the body replayed, so every
error is FastAPI's own 401/403/422/429. Nothing with a side effect happens before that decision except an allowed
rate-limit take, after which the request is always answered here (a refused take changes no bucket, so the route's
own take answers it). The route stays registered, so the OpenAPI schema and /docs are unchanged.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import HTTPException
from fastapi.exceptions import RequestValidationError
from pydantic import TypeAdapter, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.auth import Scope as KeyScope
from service.api.context import api_context
from service.api.payloads import TransactionIn
from service.api.routes_scoring import _score_one, _unavailable, router, score_json
from service.api.scoring import ModelUnavailable

PATH = "/v1/score/transaction"


def _route() -> Any:
    return next(r for r in router.routes if getattr(r, "path", None) == PATH and "POST" in getattr(r, "methods", ()))


class ScoreFastPath:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._body = TypeAdapter(TransactionIn)
        self._route: Any = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != PATH or scope["method"] != "POST" or scope.get("root_path"):
            await self.app(scope, receive, send)
            return
        api_key = authorization = ctype = None
        for name, value in scope["headers"]:  # the first of each, as Starlette's Headers.get
            if name == b"x-api-key":
                api_key = value if api_key is None else api_key
            elif name == b"authorization":
                authorization = value if authorization is None else authorization
            elif name == b"content-type":
                ctype = value if ctype is None else ctype
        key = api_key.decode("latin-1") if api_key else None  # as `require`: X-API-Key, else a Bearer token
        if not key and authorization is not None:
            auth = authorization.decode("latin-1")
            if auth.lower().startswith("bearer "):
                key = auth[7:].strip() or None
        messages: list[Message] = []
        body = b""
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        if not key or ctype is None or ctype.lower() != b"application/json" or messages[-1]["type"] != "http.request":
            await self._route_answers(scope, messages, receive, send)
            return
        try:
            item = self._body.validate_python(json.loads(body))
        except (ValueError, ValidationError):  # json.JSONDecodeError is a ValueError; FastAPI words the 422
            await self._route_answers(scope, messages, receive, send)
            return
        ctx = api_context(scope["app"])
        principal = await ctx.keys.verify(key)
        if principal is None or not principal.allows(KeyScope.SCORE):
            await self._route_answers(scope, messages, receive, send)
            return
        if not (await ctx.limiter.take(principal)).allowed:
            await self._route_answers(scope, messages, receive, send)
            return
        if self._route is None:
            self._route = _route()
        scope["route"] = self._route  # the route template for the HTTP metrics, as the router would set it
        ctx.fast_path_served += 1
        response: Response
        try:
            response = score_json(await _score_one(ctx, item))
        except ModelUnavailable as exc:
            response = await self._http_error(scope, receive, _unavailable(exc))
        except RequestValidationError as exc:  # a value the body schema cannot judge (an event time out of bounds)
            response = await self._app_error(scope, receive, exc)
        await response(scope, receive, send)

    async def _route_answers(self, scope: Scope, messages: list[Message], receive: Receive, send: Send) -> None:
        """Hand the request to the FastAPI route, replaying the body messages already read."""
        pending = iter(messages)

        async def replay() -> Message:
            for message in pending:
                return message
            return await receive()

        await self.app(scope, replay, send)

    @staticmethod
    async def _http_error(scope: Scope, receive: Receive, exc: HTTPException) -> Response:
        """The app's own HTTPException handler's response (what the route's raise would have produced)."""
        handler = scope["app"].exception_handlers[StarletteHTTPException]
        response: Response = await handler(Request(scope, receive), exc)
        return response

    @staticmethod
    async def _app_error(scope: Scope, receive: Receive, exc: RequestValidationError) -> Response:
        """The app's own 422 handler's response (what the route's raise would have produced)."""
        handler = scope["app"].exception_handlers[RequestValidationError]
        response: Response = await handler(Request(scope, receive), exc)
        return response
