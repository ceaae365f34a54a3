"""The README's examples run against the app: each `curl` block marked `<!-- curl-example: status=N -->` is run by
bash with the real curl against a served app (development settings, so `rmad-dev-key` works, and the shipped models),
and must answer the documented status with every field of the documented response; the Python examples run too.
The README's `rmad score` formats must be ones the CLI accepts."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from service.schemas.scoring import AnomalyType, Severity
from service.scoring.offline import FORMATS
from tests.api.conftest import Harness, api_settings, harness, make_alert, publish_alerts, wait_for

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCUMENTED_URL = "127.0.0.1:8000"
_BLOCK = re.compile(r"<!-- (curl-example|python-example)(?::([^>]*))? -->\n```\w*\n(.*?)```\n", re.DOTALL)
_RESPONSE = re.compile(r"\n*```json\n(.*?)```", re.DOTALL)


@dataclass(frozen=True)
class Example:
    kind: str
    options: dict[str, str]
    code: str
    response: str | None
    line: int

    @property
    def name(self) -> str:
        return f"README.md:{self.line}"


def examples(text: str) -> list[Example]:
    out = []
    for m in _BLOCK.finditer(text):
        options = dict(part.split("=", 1) if "=" in part else (part, "") for part in (m.group(2) or "").split())
        after = _RESPONSE.match(text, m.end())
        out.append(
            Example(
                kind=m.group(1),
                options=options,
                code=m.group(3),
                response=after.group(1) if after else None,
                line=text.count("\n", 0, m.start()) + 1,
            )
        )
    return out


def missing_fields(documented: Any, actual: Any, path: str = "") -> list[str]:
    """Fields the documented response shows that the actual one lacks (objects by key, lists by first element)."""
    if isinstance(documented, dict):
        if not isinstance(actual, dict):
            return [path or "."]
        out = []
        for key, value in documented.items():
            if key == "...":
                continue
            if key not in actual:
                out.append(f"{path}.{key}")
            else:
                out.extend(missing_fields(value, actual[key], f"{path}.{key}"))
        return out
    if isinstance(documented, list) and documented and isinstance(actual, list) and actual:
        return missing_fields(documented[0], actual[0], f"{path}[0]")
    return []


README_EXAMPLES = examples(README.read_text(encoding="utf-8"))
CURL = [e for e in README_EXAMPLES if e.kind == "curl-example"]


def test_the_readme_has_marked_examples() -> None:
    assert len(CURL) >= 5 and all(e.response and "status" in e.options for e in CURL), CURL
    assert any(e.kind == "python-example" for e in README_EXAMPLES)
    assert all(DOCUMENTED_URL in e.code for e in README_EXAMPLES)


def test_missing_fields_finds_drift() -> None:
    documented = {"a": 1, "items": [{"b": 2, "c": {"d": 3}}], "...": "..."}
    assert missing_fields(documented, {"a": 0, "items": [{"b": 0, "c": {"d": 0}}]}) == []
    assert missing_fields(documented, {"a": 0, "items": [{"b": 0, "c": {}}]}) == [".items[0].c.d"]
    assert missing_fields(documented, {"items": []}) == [".a"]


def test_readme_lists_only_score_formats_the_cli_accepts() -> None:
    text = README.read_text(encoding="utf-8")
    start = text.index("<!-- rmad-score-formats -->")
    section = text[start : text.index("\n\n", text.index("`--format` takes", start))]
    named = set(re.findall(r"`([a-z0-9]+(?:-[a-z0-9]+)+|feather)`", section.split("`--format` takes", 1)[1]))
    assert named and named <= set(FORMATS), sorted(named - set(FORMATS))


async def _run(argv: list[str], env: dict[str, str], limit_s: float = 60) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env
    )
    out, err = await asyncio.wait_for(proc.communicate(), limit_s)
    return proc.returncode or 0, out.decode(), err.decode()


def _local(code: str, h: Harness) -> str:
    return code.replace(DOCUMENTED_URL, h.base_url.removeprefix("http://"))


@pytest.mark.integration
async def test_readme_examples_run_against_the_app(redis_url: str, unique: str, tmp_path: Path) -> None:
    if shutil.which("curl") is None or shutil.which("bash") is None:
        pytest.skip("curl and bash are needed to run the README's examples")
    settings = api_settings(
        redis_url, unique, env="development", model_dir=str(ROOT / "models" / "artifacts"), model_reload_interval_s=0
    )
    async with harness(settings, serve=True) as h:
        # one alert in the log, of a kind the example webhook does not take (nothing is sent to example.com)
        alert = make_alert(1, venue="sim-binance", symbol="ETHUSDT", severity=Severity.MEDIUM,
                           anomaly=AnomalyType.VOLUME_SURGE)  # fmt: skip
        await publish_alerts(h.runtime, [alert])

        async def logged() -> bool:
            r = await h.client.get("/v1/alerts", headers=h.h("subscribe"))
            return bool(r.json()["items"])

        await wait_for(logged)
        env = {**os.environ, "BODY": str(tmp_path / "body"), "STATUS": str(tmp_path / "status")}
        # the examples' own curl, with its body and status code captured instead of printed
        wrapper = (
            'curl() { command curl --silent --show-error --output "$BODY" --write-out "%{http_code}" "$@" '
            '> "$STATUS"; }\n'
        )
        failures = []
        for ex in CURL:
            rc, _, err = await _run(["bash", "-euo", "pipefail", "-c", wrapper + _local(ex.code, h)], env)
            status = (tmp_path / "status").read_text() if rc == 0 else f"curl failed ({rc}): {err}"
            body = (tmp_path / "body").read_text() if rc == 0 else ""
            if status != ex.options["status"]:
                failures.append(f"{ex.name}: status {status}, documented {ex.options['status']}; {body[:300]}")
                continue
            assert ex.response is not None
            documented = json.loads(ex.response)
            if ex.options.get("check") == "top":
                documented = {k: None for k in documented}
            if missing := missing_fields(documented, json.loads(body)):
                failures.append(f"{ex.name}: response lacks {missing}: {body[:300]}")
        assert not failures, "\n".join(failures)

        python = [e for e in README_EXAMPLES if e.kind == "python-example"]
        for ex in (e for e in python if "stream" not in e.options):
            rc, out, err = await _run([sys.executable, "-c", _local(ex.code, h)], env)
            assert rc == 0, f"{ex.name}: {err}"
            assert f"confirmed {alert.id}" in out, (ex.name, out)
        for ex in (e for e in python if "stream" in e.options):
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-c", _local(ex.code, h), stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, env=env,
            )  # fmt: skip
            try:
                assert proc.stdout is not None
                live = make_alert(2, venue="sim-binance", symbol="ALT1BTC", severity=Severity.HIGH,
                                  anomaly=AnomalyType.VOLUME_SURGE)  # fmt: skip
                await wait_for(lambda: bool(h.ctx.hub.subscribers), timeout=30)
                await publish_alerts(h.runtime, [live])
                line = await asyncio.wait_for(proc.stdout.readline(), 30)
                assert live.key in line.decode() and "volume_surge" in line.decode(), line
            finally:
                proc.kill()
                await proc.wait()
