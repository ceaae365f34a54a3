"""The role table: every builder it names resolves, and a name that does not resolve fails loudly."""

from __future__ import annotations

import pytest

from service import roles
from service.roles import ROLE_ORDER, ROLES, RoleTableError, builders, resolve


def test_every_role_builder_resolves_to_a_function() -> None:
    assert set(ROLES) == set(ROLE_ORDER)
    for role in ROLE_ORDER:
        found = builders(role)
        assert len(found) == len(ROLES[role]) and all(callable(b) for b in found)


def test_a_missing_module_is_an_error_naming_it() -> None:
    with pytest.raises(RoleTableError, match=r"service\.ingest\.nowhere"):
        resolve("service.ingest.nowhere:build")


def test_a_missing_function_is_an_error_naming_it() -> None:
    with pytest.raises(RoleTableError, match="build_nothing"):
        resolve("service.scoring.components:build_nothing")


def test_building_a_role_with_a_broken_entry_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(roles.ROLES, "worker", ("service.scoring.gone:build_worker",))
    with pytest.raises(RoleTableError, match=r"service\.scoring\.gone"):
        builders("worker")
