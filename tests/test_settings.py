"""Settings refuse bad values at start-up and name the variable to fix."""

from __future__ import annotations

import subprocess
import sys

import pytest

from service.settings import DEV_SECRET, SettingsError, load_settings


def test_defaults_use_the_embedded_bus_and_state(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RMAD_KAFKA_BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.delenv("RMAD_REDIS_URL", raising=False)
    s = load_settings()
    assert s.embedded_bus and s.embedded_state


@pytest.mark.parametrize("value", ["::::", "localhost", "host:0", "host:99999", "a:1,,b:2", "host:port"])
def test_bad_bootstrap_servers_name_the_variable(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("RMAD_KAFKA_BOOTSTRAP_SERVERS", value)
    with pytest.raises(SettingsError, match=r"RMAD_KAFKA_BOOTSTRAP_SERVERS.*host:port"):
        load_settings()


def test_good_bootstrap_servers_are_normalised(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RMAD_KAFKA_BOOTSTRAP_SERVERS", " k1:9092, [::1]:9093 ")
    assert load_settings().kafka_bootstrap_servers == "k1:9092,[::1]:9093"


def test_bad_redis_url_and_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RMAD_REDIS_URL", "http://x")
    monkeypatch.setenv("RMAD_PORT", "70000")
    with pytest.raises(SettingsError) as err:
        load_settings()
    assert "RMAD_REDIS_URL" in str(err.value) and "RMAD_PORT" in str(err.value)


def test_production_refuses_the_development_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RMAD_ENV", "production")
    monkeypatch.delenv("RMAD_SECRET_KEY", raising=False)
    with pytest.raises(SettingsError, match="RMAD_SECRET_KEY"):
        load_settings()
    monkeypatch.setenv("RMAD_SECRET_KEY", "a-real-random-secret-value-0123456789")
    assert load_settings().secret_key.get_secret_value() != DEV_SECRET


def test_rmad_run_exits_at_once_on_a_bad_variable() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "service.cli", "run"],
        env={"RMAD_KAFKA_BOOTSTRAP_SERVERS": "::::", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode != 0
    assert "RMAD_KAFKA_BOOTSTRAP_SERVERS" in proc.stderr
