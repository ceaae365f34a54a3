"""`rmad keys create|revoke|list`: manage API keys in the configured state store (RMAD_REDIS_URL).

The plain key is printed once by `create` and never stored (only its peppered HMAC is); keep it somewhere safe.
With no RMAD_REDIS_URL (the embedded mode of `make demo`) the keys live inside the running API's own store, so the
command asks that API over HTTP instead (`--api-url`, default http://RMAD_HOST:RMAD_PORT), authenticated with an
admin key: `--admin-key`, else RMAD_API_KEY, else the development key when RMAD_ENV=development.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import sys
from typing import Any

import httpx

from service.api.auth import ALL_SCOPES, KeyStore, parse_scopes
from service.settings import Settings, SettingsError, load_settings
from service.state import make_state


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="keys_command", required=True)
    c = sub.add_parser("create", help="create a key and print it once")
    c.add_argument("--name", required=True, help="who or what the key is for")
    c.add_argument(
        "--scopes",
        default="subscribe",
        help=f"comma-separated scopes from {','.join(sorted(ALL_SCOPES))} (admin implies all); default subscribe",
    )
    c.add_argument("--rate", type=float, default=None, help="requests/s for this key (default RMAD_API_RATE_PER_S)")
    c.add_argument("--burst", type=int, default=None, help="bucket size for this key (default RMAD_API_RATE_BURST)")
    c.add_argument("--json", action="store_true", help="print JSON")
    r = sub.add_parser("revoke", help="revoke a key by id")
    r.add_argument("key_id", help="the id shown by `rmad keys list` (the part after rmad_)")
    ls = sub.add_parser("list", help="list keys (never the secrets)")
    ls.add_argument("--json", action="store_true", help="print JSON")
    for p in (c, r, ls):
        p.add_argument("--api-url", default=None, help="the running API, without RMAD_REDIS_URL (embedded mode)")
        p.add_argument("--admin-key", default=None, help="admin key for --api-url (default RMAD_API_KEY / dev key)")


async def _run(args: argparse.Namespace) -> int:
    try:
        settings = load_settings()
    except SettingsError as err:
        print(f"rmad keys: {err}", file=sys.stderr)
        return 2
    if settings.redis_url is None:
        return await _run_http(args, settings)
    state = make_state(settings)
    try:
        store = KeyStore(state, settings)
        if args.keys_command == "create":
            try:
                scopes = parse_scopes(args.scopes.split(","))
            except ValueError as err:
                print(f"rmad keys create: --scopes: {err}", file=sys.stderr)
                return 2
            if not scopes:
                print("rmad keys create: --scopes: give at least one scope", file=sys.stderr)
                return 2
            key, info = await store.create(args.name, scopes, args.rate, args.burst)
            if args.json:
                print(json.dumps({"key": key, "key_id": info.key_id, "name": info.name, "scopes": info.scopes}))
            else:
                print(key)
                print(f"id {info.key_id}, scopes {','.join(info.scopes)} (shown once; store it now)", file=sys.stderr)
            return 0
        if args.keys_command == "revoke":
            if await store.revoke(args.key_id):
                print(f"revoked {args.key_id}")
                return 0
            print(f"rmad keys revoke: no active key {args.key_id}", file=sys.stderr)
            return 1
        infos = await store.list()
        if args.json:
            print(json.dumps([dataclasses.asdict(i) for i in infos]))
        else:
            for i in infos:
                state_txt = "revoked" if i.revoked_ms else "active"
                print(f"{i.key_id}\t{state_txt}\t{','.join(i.scopes)}\t{i.name}")
        return 0
    finally:
        await state.close()


def run(args: argparse.Namespace) -> int:
    return asyncio.run(_run(args))


def _print_created(args: argparse.Namespace, key: str, info: dict[str, Any]) -> None:
    if args.json:
        print(json.dumps({"key": key, "key_id": info["key_id"], "name": info["name"], "scopes": info["scopes"]}))
    else:
        print(key)
        print(f"id {info['key_id']}, scopes {','.join(info['scopes'])} (shown once; store it now)", file=sys.stderr)


async def _run_http(args: argparse.Namespace, settings: Settings) -> int:
    """The embedded mode: the keys are in the running API's process; ask it (admin scope)."""
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    url = (getattr(args, "api_url", None) or f"http://{host}:{settings.port}").rstrip("/")
    admin = getattr(args, "admin_key", None) or os.environ.get("RMAD_API_KEY") or ""
    if not admin and settings.env == "development":
        admin = settings.api_dev_key.get_secret_value()
    if not admin:
        print("rmad keys: no RMAD_REDIS_URL, so the running API is asked; give --admin-key or RMAD_API_KEY",
              file=sys.stderr)  # fmt: skip
        return 2
    headers = {"X-API-Key": admin}
    try:
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=10) as client:
            if args.keys_command == "create":
                try:
                    scopes = sorted(s.value for s in parse_scopes(args.scopes.split(",")))
                except ValueError as err:
                    print(f"rmad keys create: --scopes: {err}", file=sys.stderr)
                    return 2
                body = {"name": args.name, "scopes": scopes, "rate_per_s": args.rate, "burst": args.burst}
                r = await client.post("/v1/keys", json=body)
                if r.status_code != 201:
                    print(f"rmad keys create: {url} answered {r.status_code}: {r.text[:300]}", file=sys.stderr)
                    return 1
                out = r.json()
                _print_created(args, out["key"], out)
                return 0
            if args.keys_command == "revoke":
                r = await client.delete(f"/v1/keys/{args.key_id}")
                if r.status_code == 204:
                    print(f"revoked {args.key_id}")
                    return 0
                print(f"rmad keys revoke: {url} answered {r.status_code}: {r.text[:300]}", file=sys.stderr)
                return 1
            r = await client.get("/v1/keys")
            if r.status_code != 200:
                print(f"rmad keys list: {url} answered {r.status_code}: {r.text[:300]}", file=sys.stderr)
                return 1
            infos = r.json()
    except httpx.HTTPError as err:
        print(f"rmad keys: no RMAD_REDIS_URL and the API at {url} is not reachable ({err})", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(infos))
    else:
        for i in infos:
            print(f"{i['key_id']}\t{'revoked' if i['revoked_ms'] else 'active'}\t{','.join(i['scopes'])}\t{i['name']}")
    return 0
