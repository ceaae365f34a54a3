"""Liveness, readiness and metrics endpoints, for orchestrators and Prometheus."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel

from service.api.deps import RuntimeDep
from service.metrics import READY, REGISTRY

router = APIRouter(tags=["health"])


class Liveness(BaseModel):
    status: str


class PartStatus(BaseModel):
    ok: bool
    detail: str


class Readiness(BaseModel):
    ready: bool
    parts: dict[str, PartStatus]
    not_ready: list[str]


@router.get("/healthz", operation_id="healthz", response_model=Liveness)
async def healthz() -> Liveness:
    """The process is alive and serving HTTP (does not touch dependencies)."""
    return Liveness(status="ok")


@router.get(
    "/readyz",
    operation_id="readyz",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "Some part is not ready; `not_ready` names it."}},
)
async def readyz(runtime: RuntimeDep) -> Response:
    """Ready only when the bus, the state store and every component answer."""
    parts = await runtime.readiness()
    for name, h in parts.items():
        READY.labels(component=name).set(1 if h.ok else 0)
    not_ready = [n for n, h in parts.items() if not h.ok]
    body = Readiness(
        ready=not not_ready,
        parts={n: PartStatus(ok=h.ok, detail=h.detail) for n, h in parts.items()},
        not_ready=not_ready,
    )
    return JSONResponse(body.model_dump(), status_code=200 if not not_ready else 503)


@router.get("/metrics", operation_id="metrics", response_class=Response, include_in_schema=True)
async def metrics() -> Response:
    """Prometheus exposition of every rmad_ metric in this process."""
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
