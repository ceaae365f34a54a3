"""The edge guard: what every request body must be before any route reads it.

Why an ASGI middleware in front of everything (the scoring fast path included): the limits must hold for every
route alike, and they must hold before a parser runs. A body over RMAD_API_MAX_BODY_BYTES is refused as soon as
its declared length or the bytes read pass the limit (413, nothing more is read); a body that is not JSON is 415
(a form or text/plain used to get a misleading 422); a body nested deeper than RMAD_API_MAX_JSON_DEPTH is 400
before `json.loads` can recurse into a RecursionError (a 500). Everything else reaches the app with its body
replayed unchanged.
"""

from __future__ import annotations

import re

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.errors import problem_body

_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKET = re.compile(rb"[\[\]{}]")


def json_depth_over(body: bytes, limit: int) -> bool:
    """True when `body` nests arrays/objects deeper than `limit` (strings skipped; malformed JSON is the parser's
    business, this only bounds its recursion). Cheap for the usual body: fewer brackets than the limit cannot nest
    deeper than it."""
    if body.count(b"[") + body.count(b"{") <= limit:
        return False
    depth = 0
    for m in _BRACKET.finditer(_STRING.sub(b"", body)):
        if m.group() in (b"[", b"{"):
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


def _is_json(ctype: bytes) -> bool:
    media = ctype.split(b";", 1)[0].strip().lower()
    return media == b"application/json" or (media.startswith(b"application/") and media.endswith(b"+json"))


class EdgeGuard:
    def __init__(self, app: ASGIApp, max_body_bytes: int = 4 << 20, max_depth: int = 32) -> None:
        self.app = app
        self.max_body = max_body_bytes
        self.max_depth = max_depth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in _METHODS:
            await self.app(scope, receive, send)
            return
        ctype: bytes | None = None
        length: bytes | None = None
        for name, value in scope["headers"]:
            if name == b"content-type" and ctype is None:
                ctype = value
            elif name == b"content-length" and length is None:
                length = value
        if length is not None and length.isdigit() and int(length) > self.max_body:
            await self._refuse(send, 413, f"request body of {int(length)} bytes; at most {self.max_body} accepted")
            return
        messages: list[Message] = []
        body = bytearray()
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            body += message.get("body", b"")
            if len(body) > self.max_body:
                await self._refuse(send, 413, f"request body over {self.max_body} bytes")
                return
            if not message.get("more_body", False):
                break
        if body and (ctype is None or not _is_json(ctype)):
            shown = "none" if ctype is None else ctype.decode("latin-1")[:60]
            await self._refuse(send, 415, f"request body must be application/json (Content-Type: {shown})")
            return
        if body and json_depth_over(bytes(body), self.max_depth):
            await self._refuse(send, 400, f"request body nested deeper than {self.max_depth} levels")
            return
        pending = iter(messages)

        async def replay() -> Message:
            for message in pending:
                return message
            return await receive()

        await self.app(scope, replay, send)

    @staticmethod
    async def _refuse(send: Send, status: int, detail: str) -> None:
        body = orjson.dumps(problem_body(detail, [{"loc": ("body",), "msg": detail, "type": f"http_{status}"}]))
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        if status == 413:
            headers.append((b"connection", b"close"))  # the rest of the body is not read
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
