"""docs/configuration.md is generated from Settings: it must match the code, and cover every variable once."""

from __future__ import annotations

import re
from pathlib import Path

from service.config import reference
from service.settings import Settings


def test_checked_in_reference_matches_the_code() -> None:
    checked_in = reference.DEFAULT_PATH.read_text(encoding="utf-8")
    assert checked_in == reference.render(), (
        "docs/configuration.md is stale; run: python -m service.config.reference --write docs/configuration.md"
    )


def test_every_setting_is_listed_once_with_its_default() -> None:
    text = reference.render()
    listed = re.findall(r"^\| `(RMAD_[A-Z0-9_]+)` \| ([^|]*) \|", text, flags=re.MULTILINE)
    names = [name for name, _ in listed]
    assert sorted(names) == sorted(f"RMAD_{n.upper()}" for n in Settings.model_fields)
    defaults = dict(listed)
    assert defaults["RMAD_PORT"].strip() == "`8000`"
    assert defaults["RMAD_TOPIC_RETENTION_MS"].strip() == "`604800000` (7 days)"
    assert defaults["RMAD_INGEST_SYMBOLS"].strip() == "`BTCUSDT,ETHUSDT,SOLUSDT`"
    assert defaults["RMAD_REDIS_URL"].strip() == "unset"


def test_check_mode_reports_a_stale_file(tmp_path: Path) -> None:
    stale = tmp_path / "configuration.md"
    stale.write_text(reference.render().replace("`8000`", "`8080`"), encoding="utf-8")
    assert reference.main(["--check", str(stale)]) == 1
    assert reference.main(["--write", str(stale)]) == 0
    assert reference.main(["--check", str(stale)]) == 0
