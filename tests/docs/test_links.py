"""Relative links in README.md and docs/ reach a file that exists and, with a #fragment, a heading in it
(GitHub's anchor rules); the templates' references to docs/ pages name pages that exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.support import ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK_RE = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
HEADING_RE = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$", re.M)
CODE_RE = re.compile(r"^```.*?^```", re.M | re.S)


def anchors(page: Path) -> set[str]:
    """GitHub's heading ids: lower-case, punctuation dropped (but '-' and '_'), spaces to '-', repeats -1, -2."""
    out: set[str] = set()
    for title in HEADING_RE.findall(CODE_RE.sub("", page.read_text())):
        slug = re.sub(r"[^\w\- ]", "", title.replace("`", "").lower()).replace(" ", "-")
        n, candidate = 0, slug
        while candidate in out:
            n += 1
            candidate = f"{slug}-{n}"
        out.add(candidate)
    return out


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page: Path) -> None:
    text = CODE_RE.sub("", page.read_text())
    broken = []
    for target in LINK_RE.findall(text):
        if re.match(r"^[a-z]+:", target):  # http:, https:, mailto:
            continue
        path, _, fragment = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif fragment and dest.suffix == ".md" and fragment not in anchors(dest):
            broken.append(f"{target}: no heading #{fragment} in {dest.relative_to(ROOT)}")
    assert not broken, f"{page.relative_to(ROOT)}: " + "; ".join(broken)


def test_templates_name_pages_that_exist() -> None:
    named = set()
    for f in (ROOT / "hive" / "templates").rglob("*"):
        if f.is_file():
            named |= set(re.findall(r"docs/[\w.-]+\.md", f.read_text()))
    assert "docs/sdk-c.md" in named
    missing = sorted(n for n in named if not (ROOT / n).is_file())
    assert not missing, f"the templates name pages that do not exist: {missing}"
