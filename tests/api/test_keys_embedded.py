"""`rmad keys` without Redis (the embedded mode of `make demo`): it asks the running API, which keeps the keys in its
own process; and the /v1/keys routes it uses are admin-only."""

from __future__ import annotations

import asyncio
import json
import os
import sys

from tests.api.conftest import api_settings, harness


async def _rmad(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "service.cli", "keys", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return int(proc.returncode or 0), out.decode(), err.decode()


async def test_keys_cli_in_embedded_mode(unique: str) -> None:
    settings = api_settings(None, unique)  # type: ignore[arg-type]
    assert settings.redis_url is None
    async with harness(settings, serve=True) as h:
        assert h.runtime.state.kind == "memory"
        env = {k: v for k, v in os.environ.items() if not k.startswith("RMAD_")}
        env["RMAD_ENV"] = "test"
        rc, _, err = await _rmad(env, "list", "--api-url", h.base_url)
        assert rc == 2 and "--admin-key" in err  # outside development there is no default admin key
        rc, _, err = await _rmad(env, "list", "--api-url", h.base_url, "--admin-key", h.keys["subscribe"])
        assert rc == 1 and "403" in err
        admin = ["--api-url", h.base_url, "--admin-key", h.keys["admin"]]
        rc, out, err = await _rmad(env, "create", "--name", "desk", "--scopes", "feedback,subscribe", "--json", *admin)
        assert rc == 0, err
        made = json.loads(out)
        # the new key works against the same running API (its store is that process's memory)
        r = await h.client.get("/v1/cases", headers={"X-API-Key": made["key"]})
        assert r.status_code == 200
        rc, out, _ = await _rmad(env, "list", "--json", *admin)
        assert rc == 0 and "desk" in [k["name"] for k in json.loads(out)] and made["key"] not in out
        assert (await _rmad(env, "revoke", made["key_id"], *admin))[0] == 0
        assert (await _rmad(env, "revoke", made["key_id"], *admin))[0] == 1
        rc, _, err = await _rmad(env, "list", "--api-url", "http://127.0.0.1:9", "--admin-key", "x")
        assert rc == 2 and "not reachable" in err


async def test_key_routes_are_admin_only(unique: str) -> None:
    async with harness(api_settings(None, unique)) as h:  # type: ignore[arg-type]
        body = {"name": "x", "scopes": ["subscribe"]}
        assert (await h.client.post("/v1/keys", json=body, headers=h.h("feedback"))).status_code == 403
        r = await h.client.post("/v1/keys", json={"name": "x", "scopes": ["root"]}, headers=h.h("admin"))
        assert r.status_code == 422 and "body.scopes.0" in r.json()["fields"]
        r = await h.client.post("/v1/keys", json=body, headers=h.h("admin"))
        assert r.status_code == 201 and r.json()["key"].startswith("rmad_")
        assert (await h.client.delete("/v1/keys/abc", headers=h.h("admin"))).status_code == 404
