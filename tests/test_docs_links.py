"""The docs are self-contained: every `background §x.y` resolves, no note outside the repo is cited, links work."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BACKGROUND = ROOT / "docs" / "background.md"
SKIP_DIRS = {"build", "dist", "node_modules", "__pycache__"}

#: ``background §1.3-1.5, 1.8, 3.3-3.4``: the section list after the sign (numbers, ranges, commas).
REFERENCE = re.compile(r"background §(\d+(?:\.\d+)?(?:\s*(?:-|–|,)\s*\d+(?:\.\d+)?(?![\d.]*\d))*)")
NAMED_REFERENCE = re.compile(r"background\s" + r'"([^"]+)"')
#: Citations of the design notes that are not part of the repository (spelt so this file does not match).
STALE = re.compile("|".join([r"\bSPEC" + r"\s*§?\d", r"\bSPEC" + r"\.md\b", r"\bDESIGN" + r"\.md\b"]))
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def _repo_files(*suffixes: str) -> list[Path]:
    """The repository's files with these suffixes, outside hidden, build and cache folders."""
    found = []
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if not (d.startswith(".") or d in SKIP_DIRS or d.endswith(".egg-info"))]
        found += [Path(folder) / f for f in files if Path(f).suffix in suffixes]
    return sorted(found)


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _headings(path: Path) -> list[str]:
    text = re.sub(r"^```.*?^```", "", path.read_text(encoding="utf-8"), flags=re.DOTALL | re.MULTILINE)
    return [m.group(1).strip() for m in re.finditer(r"^#{1,6}\s+(.+)$", text, flags=re.MULTILINE)]


def _anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    anchors = set()
    for heading in _headings(path):
        slug = _slug(heading)
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        anchors.add(slug if n == 0 else f"{slug}-{n}")
    return anchors


def _sections() -> set[str]:
    """Section numbers with a heading in docs/background.md (``## §1.6 ...``)."""
    return {m.group(1) for h in _headings(BACKGROUND) if (m := re.match(r"§(\d+(?:\.\d+)?)\s", h))}


def _numbers(spec: str) -> list[str]:
    """``1.3-1.5, 1.8`` -> ``1.3 1.4 1.5 1.8``: every section a list or a range names."""
    out = []
    for part in re.split(r"\s*,\s*", spec):
        ends = re.split(r"\s*[-–]\s*", part)
        if len(ends) == 2 and "." in ends[0] and ends[0].split(".")[0] == ends[1].split(".")[0]:
            major, lo, hi = ends[0].split(".")[0], int(ends[0].split(".")[1]), int(ends[1].split(".")[1])
            out += [f"{major}.{minor}" for minor in range(lo, hi + 1)]
        else:
            out += ends
    return out


def _references() -> list[tuple[str, int, str, str]]:
    refs = []
    for path in _repo_files(".py", ".md"):
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for m in REFERENCE.finditer(line):
                refs += [(str(path.relative_to(ROOT)), lineno, m.group(0), n) for n in _numbers(m.group(1))]
    return refs


def test_background_has_the_cited_sections():
    sections = _sections()
    assert {"0", "0.1", "0.4", "1.6", "2.2", "3.5", "4.1"} <= sections
    assert "About the sources" in _headings(BACKGROUND)
    assert "References" in _headings(BACKGROUND)


def test_the_reference_parser_reads_lists_and_ranges():
    spec = REFERENCE.search("see background §1.3-1.5, 1.8, 3.3-3.4 and more").group(1)
    assert _numbers(spec) == ["1.3", "1.4", "1.5", "1.8", "3.3", "3.4"]
    assert REFERENCE.search("(background §2.2).").group(1) == "2.2"
    assert REFERENCE.search("background §2: how").group(1) == "2"


def test_every_background_reference_resolves():
    refs = _references()
    assert len(refs) > 50  # the code and docs cite it throughout; an empty scan would prove nothing
    sections = _sections()
    missing = [f"{file}:{line}: {text!r} -> §{n}" for file, line, text, n in refs if n not in sections]
    assert not missing, "no heading in docs/background.md for:\n" + "\n".join(missing)


def test_named_background_references_resolve():
    headings = set(_headings(BACKGROUND))
    for path in _repo_files(".py", ".md"):
        for m in NAMED_REFERENCE.finditer(path.read_text(encoding="utf-8")):
            assert m.group(1) in headings, f"{path.relative_to(ROOT)}: background {m.group(0)!r}"


def test_no_citation_of_notes_outside_the_repository():
    me = Path(__file__).resolve()
    stale = []
    for path in _repo_files(".py", ".md", ".toml"):
        if path.resolve() == me:
            continue
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if STALE.search(line):
                stale.append(f"{path.relative_to(ROOT)}:{lineno}: {line.strip()}")
    assert not stale, "cite docs/background.md instead:\n" + "\n".join(stale)


def _markdown_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


@pytest.mark.parametrize("doc", _markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_point_at_existing_files_and_headings(doc):
    text = re.sub(r"^\s*```.*?^\s*```", "", doc.read_text(encoding="utf-8"), flags=re.DOTALL | re.MULTILINE)
    text = re.sub(r"`[^`\n]*`", "", text)
    broken = []
    for m in LINK.finditer(text):
        target = m.group(1)
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        file, _, anchor = target.partition("#")
        path = (doc.parent / file).resolve() if file else doc
        if not path.exists():
            broken.append(f"{target}: no such file")
        elif anchor and path.suffix == ".md" and anchor not in _anchors(path):
            broken.append(f"{target}: no heading with anchor #{anchor}")
    assert not broken, f"{doc.relative_to(ROOT)}:\n" + "\n".join(broken)
