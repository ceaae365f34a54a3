"""The README and docs/ describe the software, not the work on it, and the README stays a front door."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# phrases of a development log: who worked on it when, what was asked, machine figures without a date
DEV_LOG = re.compile(
    r"this round|this session|earlier session|other sessions|the issue asks|issue asks|\(issue \d+\)|\bissue \d+\b"
    r"|this task|this machine|this work\b|\bTODO\b",
    re.IGNORECASE,
)


def test_no_development_log_wording() -> None:
    found = [
        f"{page.relative_to(ROOT)}:{n}: {line.strip()[:120]}"
        for page in PAGES
        for n, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1)
        if DEV_LOG.search(line)
    ]
    assert not found, "\n".join(found)


def test_readme_is_a_front_door() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.encode()) < 25 * 1024
    for link in re.findall(r"\]\((docs/[^)#]+)", text):
        assert (ROOT / link).exists(), link
