"""Alert bookkeeping scripts: the API's append-once alert log (APPEND_ALERT) and the worker's exactly-once delivery
claim and confirm (CLAIM_SCRIPT, DONE_SCRIPT; see service.scoring.delivery for the protocol).
"""

from __future__ import annotations

from typing import Any

from service.state.base import CommandRunner, Script

# KEYS: alert:<id> hash, log stream. ARGV: id, alert json, stream maxlen, hash ttl ms. Returns {appended, seq}.

_APPEND_LUA = """
local cur = redis.call('HGET', KEYS[1], 'seq')
if cur then return {0, cur} end
local seq = redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[3], '*', 'id', ARGV[1], 'json', ARGV[2])
redis.call('HSET', KEYS[1], 'seq', seq, 'json', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return {1, seq}
"""


def _append_py(r: CommandRunner, keys: list[str], args: list[bytes]) -> list[Any]:
    cur = r.call("HGET", keys[0], "seq")
    if cur is not None:
        return [0, cur]
    seq = r.call("XADD", keys[1], "MAXLEN", args[2], "*", "id", args[0], "json", args[1])
    r.call("HSET", keys[0], "seq", seq, "json", args[1])
    r.call("PEXPIRE", keys[0], args[3])
    return [1, seq]


APPEND_ALERT = Script("api_append_alert", _APPEND_LUA, _append_py)


# KEYS: done key, in-flight hash. ARGV: id, alert json. 1 = claimed (publish it), 0 = already confirmed.
_CLAIM_LUA = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
return 1
"""


def _claim_py(r: CommandRunner, keys: list[str], args: list[bytes]) -> Any:
    if r.call("EXISTS", keys[0]):
        return 0
    r.call("HSET", keys[1], args[0], args[1])
    return 1


# KEYS: done key, in-flight hash. ARGV: id, ttl ms.
_DONE_LUA = """
redis.call('SET', KEYS[1], '1', 'PX', ARGV[2])
redis.call('HDEL', KEYS[2], ARGV[1])
return 1
"""


def _done_py(r: CommandRunner, keys: list[str], args: list[bytes]) -> Any:
    r.call("SET", keys[0], b"1", "PX", args[1])
    r.call("HDEL", keys[1], args[0])
    return 1


CLAIM_SCRIPT = Script("rmad_alert_claim", _CLAIM_LUA, _claim_py)
DONE_SCRIPT = Script("rmad_alert_done", _DONE_LUA, _done_py)
