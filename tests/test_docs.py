"""The docs run as written, and cite the repository's own docs.

Every ```python block of ``docs/**/*.md`` runs, offline, in a fresh namespace per file (the blocks of one
page run in order, sharing it, as a reader runs them). A block that cannot run here is preceded by a line
``<!-- docs-test: skip (why) -->``. README.md's blocks join once they are written to run (``PAGES``).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = [*sorted(DOCS.rglob("*.md")), ROOT / "README.md"]
BLOCK = re.compile(r"(?P<before>[^\n]*)\n```python\n(?P<code>.*?)```", re.S)
SKIP = "<!-- docs-test: skip"


def python_blocks(page: Path) -> list[tuple[int, str]]:
    """(line number where the code starts, code) of each python block of ``page`` that is not marked to be skipped."""
    text = "\n" + page.read_text()
    out = []
    for match in BLOCK.finditer(text):
        if match.group("before").strip().startswith(SKIP):
            continue
        out.append((text.count("\n", 0, match.start("code")), match.group("code")))
    return out


RUNNABLE = [page for page in PAGES if python_blocks(page)]


@pytest.mark.parametrize("page", RUNNABLE, ids=[str(p.relative_to(ROOT)) for p in RUNNABLE])
def test_python_blocks_of_the_docs_run(page, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)  # whatever a block writes lands here
    namespace = {"__name__": "__docs__"}
    for line, code in python_blocks(page):
        exec(compile(code, f"{page.relative_to(ROOT)}:{line}", "exec"), namespace)


def test_the_block_finder_sees_the_method_page_and_honours_skip(tmp_path):
    assert len(python_blocks(DOCS / "method.md")) >= 3
    page = tmp_path / "page.md"
    page.write_text("text\n```python\nx = 1\n```\n<!-- docs-test: skip (needs a GPU) -->\n```python\nraise\n```\n")
    assert python_blocks(page) == [(3, "x = 1\n")]  # the line the code starts on


# -- citations -----------------------------------------------------------------------------------------------

USER_FACING = [*sorted((ROOT / "src" / "vasink").rglob("*.py")), *PAGES, *sorted(DOCS.rglob("*.html")),
               ROOT / "README.md", *sorted((ROOT / "benchmarks").glob("*.py"))]
# Files of other owners that still cite the internal "SPEC" file (take a name off once its file is fixed).
STILL_CITING_SPEC: set[str] = set()


def test_user_facing_text_cites_docs_method_not_the_internal_spec():
    citing = {str(p.relative_to(ROOT)) for p in USER_FACING if p.exists() and "SPEC" in p.read_text()}
    assert citing - STILL_CITING_SPEC == set(), "cite docs/method.md#<section> instead of SPEC"


def anchor(heading: str) -> str:
    """GitHub's anchor of a markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def test_every_cited_section_of_method_md_exists():
    headings = {anchor(line.lstrip("#")) for line in (DOCS / "method.md").read_text().splitlines()
                if line.startswith("## ")}
    cited = set()
    for path in USER_FACING:
        if path.exists():
            cited |= set(re.findall(r"method\.md#([\w\-]+)", path.read_text()))
    assert cited, "nothing cites docs/method.md"
    assert cited <= headings, f"no such section in docs/method.md: {sorted(cited - headings)}"


def test_every_page_quotes_the_shipped_models_tau_as_measured():
    """The organism's tau is read from checkpoint/vasink.json (its suggested tau, measured.json): a page that
    quotes a 'suggested tau' or the tau of vasink.json quotes that number, rounded as vasink.json holds it."""
    import json

    checkpoint = ROOT / "src" / "vasink" / "organism" / "checkpoint"
    tau = json.loads((checkpoint / "vasink.json").read_text())["tau"]
    suggested = json.loads((checkpoint / "measured.json").read_text())["find_sink_dims"]["suggested_tau"]
    assert tau == round(suggested, 2)
    quoted = []
    for page in PAGES:
        text = page.read_text()
        for pattern in (r"suggested tau (\d+\.\d+)", r"used as tau = (\d+\.\d+)", r"tau (\d+\.\d+) \(`vasink\.json`\)",
                        r"sink dims? \[?507\]?,? (?:and )?tau (\d+\.\d+)"):
            quoted += [(page.name, float(value)) for value in re.findall(pattern, text)]
    assert quoted, "no page quotes the organism's tau any more: update this test"
    assert all(value == tau for _, value in quoted), quoted
