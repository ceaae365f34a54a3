"""Cross-venue bar closes shared per (group, bar end) (see service.scoring.closes for why)."""

from __future__ import annotations

from typing import Any

from service.state.base import CommandRunner, Script

# KEYS: one hash per (group, bar end). ARGV: field, value per key (in KEYS order), then the ttl in ms.
# Returns, per key, the hash's contents after the write (HGETALL's flat field/value list).
_SHARE_LUA = """
local out = {}
local ttl = ARGV[#ARGV]
for i, k in ipairs(KEYS) do
  redis.call('HSET', k, ARGV[2 * i - 1], ARGV[2 * i])
  redis.call('PEXPIRE', k, ttl)
  out[i] = redis.call('HGETALL', k)
end
return out
"""


def _share_py(r: CommandRunner, keys: list[str], args: list[bytes]) -> Any:
    out: list[list[bytes]] = []
    ttl = args[-1]
    for i, k in enumerate(keys):
        r.call("HSET", k, args[2 * i], args[2 * i + 1])
        r.call("PEXPIRE", k, ttl)
        flat: list[bytes] = []
        for f, v in r.call("HGETALL", k).items():
            flat += [f.encode() if isinstance(f, str) else f, v]
        out.append(flat)
    return out


SHARE_SCRIPT = Script("rmad_xv_share_closes", _SHARE_LUA, _share_py)
