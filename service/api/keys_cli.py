"""`rmad keys create|revoke|list`: manage API keys in the configured state store (RMAD_REDIS_URL).

The plain key is printed once by `create` and never stored (only its peppered HMAC is); keep it somewhere safe.
With no RMAD_REDIS_URL the keys would live in this short-lived process only, so the command refuses.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys

from service.api.auth import ALL_SCOPES, KeyStore, parse_scopes
from service.settings import SettingsError, load_settings
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


async def _run(args: argparse.Namespace) -> int:
    try:
        settings = load_settings()
    except SettingsError as err:
        print(f"rmad keys: {err}", file=sys.stderr)
        return 2
    if settings.redis_url is None:
        print("rmad keys: RMAD_REDIS_URL is not set; keys must live in the Redis the API uses", file=sys.stderr)
        return 2
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
