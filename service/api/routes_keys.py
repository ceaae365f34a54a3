"""Key management over HTTP (admin scope): what `rmad keys` uses when the API keeps its state in its own process.

Why: with no RMAD_REDIS_URL (`make demo`, the embedded mode) the keys live in the running API's in-process store,
which no other process can reach; the CLI then asks the running API instead. The plain key is returned once.
"""

from __future__ import annotations

import dataclasses
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path
from pydantic import BaseModel, ConfigDict, Field

from service.api.access import require
from service.api.auth import Principal, Scope, parse_scopes
from service.api.routes_alerts import AUTH_RESPONSES, Ctx

router = APIRouter(prefix="/v1", tags=["keys"])
Admin = Annotated[Principal, Depends(require(Scope.ADMIN))]


class KeyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Annotated[str, Field(min_length=1, max_length=200)]
    scopes: list[Scope] = Field(min_length=1, max_length=8)
    rate_per_s: Annotated[float | None, Field(gt=0, le=1e6)] = None
    burst: Annotated[int | None, Field(ge=1, le=10**7)] = None


class KeyInfoOut(BaseModel):
    key_id: str
    name: str
    scopes: list[str]
    created_ms: int
    revoked_ms: int | None
    rate_per_s: float | None
    burst: int | None


class KeyCreated(KeyInfoOut):
    key: str = Field(description="the plain key, shown once; only its HMAC is stored")


@router.post("/keys", operation_id="create_key", response_model=KeyCreated, status_code=201, responses=AUTH_RESPONSES)
async def create_key(ctx: Ctx, _: Admin, body: KeyIn) -> KeyCreated:
    """Create a key; the response is the only place the plain key ever appears."""
    key, info = await ctx.keys.create(
        body.name, parse_scopes(s.value for s in body.scopes), body.rate_per_s, body.burst
    )
    return KeyCreated(key=key, **dataclasses.asdict(info))


@router.get("/keys", operation_id="list_keys", response_model=list[KeyInfoOut], responses=AUTH_RESPONSES)
async def list_keys(ctx: Ctx, _: Admin) -> list[KeyInfoOut]:
    """Every key (never the secrets)."""
    return [KeyInfoOut(**dataclasses.asdict(i)) for i in await ctx.keys.list()]


@router.delete(
    "/keys/{key_id}",
    operation_id="revoke_key",
    status_code=204,
    responses={**AUTH_RESPONSES, 404: {"description": "no active key with that id"}},
)
async def revoke_key(ctx: Ctx, _: Admin, key_id: Annotated[str, Path(pattern=r"^[0-9a-f]{1,32}$")]) -> None:
    """Revoke a key by id."""
    if not await ctx.keys.revoke(key_id):
        raise HTTPException(404, detail=f"no active key {key_id}")
