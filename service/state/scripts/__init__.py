"""Every atomic state script of the service, in one place: Lua for Redis and its Python twin for the in-process
store. ALL_SCRIPTS is what the contract suite (tests/state/test_scripts_contract.py) runs on both stores side by
side; a script missing from it fails that suite.
"""

from __future__ import annotations

from service.state.base import Script
from service.state.scripts.alert_bookkeeping import APPEND_ALERT, CLAIM_SCRIPT, DONE_SCRIPT
from service.state.scripts.centre_update import CENTRES_SCRIPT
from service.state.scripts.chain_features import READ_SCRIPT, UPDATE_SCRIPT
from service.state.scripts.close_sharing import SHARE_SCRIPT
from service.state.scripts.ratelimit import TOKEN_BUCKET, TOKEN_BUCKETS

ALL_SCRIPTS: tuple[Script, ...] = (
    TOKEN_BUCKET,
    TOKEN_BUCKETS,
    APPEND_ALERT,
    CLAIM_SCRIPT,
    DONE_SCRIPT,
    CENTRES_SCRIPT,
    SHARE_SCRIPT,
    UPDATE_SCRIPT,
    READ_SCRIPT,
)

__all__ = [
    "ALL_SCRIPTS",
    "APPEND_ALERT",
    "CENTRES_SCRIPT",
    "CLAIM_SCRIPT",
    "DONE_SCRIPT",
    "READ_SCRIPT",
    "SHARE_SCRIPT",
    "TOKEN_BUCKET",
    "TOKEN_BUCKETS",
    "UPDATE_SCRIPT",
]
