"""One error body for every 4xx/5xx (`Problem`: detail, fields, errors), its handlers, and the OpenAPI that says so.

Why one shape: a client reads `detail` (words) and `fields` (what to fix) from any failure, whether FastAPI's
validation, a route's HTTPException, the edge guard (400/413/415) or a WebSocket handshake refused over a bad query.
The OpenAPI document declares `Problem` for every 4xx a route can give, so schema-checking clients and the
schemathesis suite hold the service to it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from fastapi import FastAPI, Request, WebSocket
from fastapi.exceptions import RequestValidationError, WebSocketRequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.status import WS_1008_POLICY_VIOLATION

from service.api.payloads import FieldProblem, Problem


def _field(loc: Any) -> str:
    """`body.items.0.price` style name of a failing field (the leading `body`/`query` kept: it says where)."""
    return ".".join(str(p) for p in loc) if isinstance(loc, list | tuple) else str(loc)


def problem_body(detail: str, errors: Iterable[Mapping[str, Any]] = ()) -> dict[str, Any]:
    """The JSON of a `Problem` (built as a dict: error paths must not fail on an odd `loc` or message)."""
    errs = [
        {
            "field": _field(e.get("loc", ())),
            "msg": str(e.get("msg", "invalid")),
            "type": str(e.get("type", "value_error")),
            "loc": [p if isinstance(p, int) else str(p) for p in e.get("loc", ())],
        }
        for e in errors
    ]
    return {"detail": detail, "fields": [e["field"] for e in errs], "errors": errs}


def problem(status: int, detail: str, errors: Iterable[Mapping[str, Any]] = (), **headers: str) -> JSONResponse:
    return JSONResponse(problem_body(detail, errors), status_code=status, headers=headers or None)


def validation_problem(errors: list[Any]) -> dict[str, Any]:
    message = "; ".join(f"{_field(e.get('loc', ()))}: {e.get('msg', 'invalid')}" for e in errors)
    return problem_body(message or "invalid request", errors)


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    """422 whose detail names every failing field."""
    assert isinstance(exc, RequestValidationError)
    return JSONResponse(validation_problem(list(exc.errors())), status_code=422)


async def _http_error(_request: Request, exc: Exception) -> JSONResponse:
    """A route's (or the router's 404/405) HTTPException in the one shape, its headers kept (Retry-After, ...)."""
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    return JSONResponse(problem_body(detail), status_code=exc.status_code, headers=exc.headers)


async def _ws_validation_error(websocket: WebSocket, exc: Exception) -> None:
    """A WebSocket handshake with a bad query: an HTTP 422 with the Problem body where the server can send one
    (uvicorn can), else a close frame whose reason names the field."""
    assert isinstance(exc, WebSocketRequestValidationError)
    body = validation_problem(list(exc.errors()))
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(JSONResponse(body, status_code=422))
        return
    await websocket.close(code=WS_1008_POLICY_VIOLATION, reason=body["detail"][:120])


_EDGE = {
    "400": "malformed body (nested deeper than RMAD_API_MAX_JSON_DEPTH)",
    "413": "body larger than RMAD_API_MAX_BODY_BYTES",
    "415": "body is not application/json",
}


def _openapi(app: FastAPI) -> dict[str, Any]:
    """The generated document with `Problem` as the body of every 4xx (FastAPI declares its own 422 shape)."""
    if app.openapi_schema:
        return app.openapi_schema
    doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    schemas["Problem"] = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas["Problem"].pop("$defs", None)
    schemas["FieldProblem"] = FieldProblem.model_json_schema(ref_template="#/components/schemas/{model}")
    ref = {"application/json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
    for item in doc.get("paths", {}).values():
        for op in item.values():
            if not isinstance(op, dict) or "responses" not in op:
                continue
            responses = op["responses"]
            if "requestBody" in op:
                for code, why in _EDGE.items():
                    responses.setdefault(code, {"description": why})
            for code, resp in responses.items():
                if code.startswith(("4", "5")):
                    resp["content"] = ref
                    if code == "422":
                        resp["description"] = "a field is invalid (named in `fields`)"
    app.openapi_schema = doc
    return doc


def install_errors(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(WebSocketRequestValidationError, _ws_validation_error)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
