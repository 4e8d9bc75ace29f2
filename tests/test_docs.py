"""The docs stay true to the tree: links resolve, named files exist, no machine paths, a short README.

The docs are ``README.md``, ``docs/*.md`` and ``bench/README.md``. What counts as a reference:

- a Markdown link or image ``[text](target)`` outside code: ``target`` (without its
  ``#anchor``) is relative to the page that holds it and must exist in the repository; an
  ``#anchor`` must be the GitHub slug of a heading of the page it points into. ``http(s)://``
  and ``mailto:`` targets are not checked.
- a file named in code (inline ``code`` spans and fenced blocks): every whitespace-separated
  token that starts with a top-level folder of the repository (``raydgm/``, ``tests/``,
  ``bench/``, ``configs/``, ``sweeps/``, ``notebooks/``, ``docs/``, ``.ci/``) or is one of its
  top-level files (``Makefile``, ``pyproject.toml``, ...) is a path from the repository root and
  must exist (a ``*`` matches at least one file). Artifact paths (``artifacts/...``,
  ``$RAYDGM_HOME/...``) and placeholders (``<name>``) are not repository files and are skipped.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README_MAX_LINES = 220
TOP_DIRS = ("raydgm", "tests", "bench", "configs", "sweeps", "notebooks", "docs", ".ci")
TOP_FILES = ("Makefile", "pyproject.toml", "cluster.yaml", "README.md", "LICENSE")
# A path another branch renames: the doc names the new path; until the rename is merged the
# old file stands in for it. Drop an entry once the new path exists.
# Absolute paths that are only true on one machine: a checkout, a home, a temp run, an
# absolute sqlite URI (sqlite:/// + /abs/path).
MACHINE_PATH = re.compile(r"(?<![\w$.~])/(?:work|root|tmp|Users)/\S*|(?<![\w$.~])/home/(?!ray/)\S+|sqlite:////\S*")
# The same path on every Linux machine: clean-fid's fixed download location.
ALLOWED_ABSOLUTE = ("/tmp/inception-2015-12-05.pt",)

FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.S | re.M)
INLINE_CODE = re.compile(r"(`+)(.+?)\1", re.S)
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)
TOKEN_EDGE = "\"'`,;:()[]{}!?"


def doc_files(root: Path = ROOT) -> list[Path]:
    """README.md, docs/*.md and bench/README.md under ``root``, those that exist."""
    files = [root / "README.md", *sorted((root / "docs").glob("*.md")), root / "bench" / "README.md"]
    return [f for f in files if f.is_file()]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"`|\*\*|__", "", heading).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Slugs of every heading of ``page`` (headings inside code blocks excluded)."""
    return {slug(h) for h in HEADING.findall(FENCE.sub("", page.read_text()))}


def links(text: str) -> list[str]:
    """Link and image targets outside code, in order."""
    prose = INLINE_CODE.sub("", FENCE.sub("", text))
    return LINK.findall(prose)


def code_tokens(text: str) -> list[str]:
    """Whitespace-separated tokens of every fenced block and inline code span, edges trimmed."""
    blocks = [m.group(0) for m in FENCE.finditer(text)]
    spans = [m.group(2) for m in INLINE_CODE.finditer(FENCE.sub("", text))]
    return [tok.strip(TOKEN_EDGE).rstrip(".") for chunk in blocks + spans for tok in chunk.split()]


def repo_path(token: str) -> str | None:
    """``token`` as a path from the repository root, or None when it does not name a repo file."""
    if any(c in token for c in "<>$="):
        return None
    if token in TOP_FILES:
        return token
    if token.split("/")[0] in TOP_DIRS and "/" in token:
        return token
    return None


def exists(root: Path, path: str) -> bool:
    """``path`` (from ``root``; ``*`` allowed) names at least one file or folder."""
    return any(root.glob(path)) if "*" in path else (root / path).exists()


def broken_references(page: Path, root: Path = ROOT) -> list[str]:
    """Every link, anchor and code-named file of ``page`` that does not resolve, as messages."""
    text, problems = page.read_text(), []
    for target in links(text):
        if re.match(r"[a-z]+:", target):                  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            problems.append(f"link {target!r}: {path} does not exist")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            problems.append(f"link {target!r}: no heading #{anchor} in {dest.name}")
    for token in code_tokens(text):
        path = repo_path(token)
        if path is not None and not exists(root, path):
            problems.append(f"file {path!r} named in code does not exist")
    return problems


def machine_paths(text: str) -> list[str]:
    """Absolute paths in ``text`` that only hold on one machine."""
    return [m for m in MACHINE_PATH.findall(text) if m.rstrip(TOKEN_EDGE + ".") not in ALLOWED_ABSOLUTE]


DOCS = doc_files()


def test_the_docs_are_found():
    names = {str(p.relative_to(ROOT)) for p in DOCS}
    assert {"README.md", "docs/design.md", "bench/README.md"} <= names


@pytest.mark.parametrize("page", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_anchor_and_named_file_resolves(page):
    assert broken_references(page) == []


@pytest.mark.parametrize("page", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_doc_holds_an_absolute_machine_path(page):
    assert machine_paths(page.read_text()) == []


def test_every_docs_page_is_linked_from_the_readme():
    linked = {(ROOT / t.partition("#")[0]).resolve() for t in links((ROOT / "README.md").read_text())}
    pages = [p for p in DOCS if p.name != "README.md" or p.parent.name == "bench"]
    assert [str(p.relative_to(ROOT)) for p in pages if p.resolve() not in linked] == []


def test_readme_is_a_first_screen():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move detail into docs/"


def test_a_broken_link_anchor_or_file_is_reported(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "raydgm").mkdir()
    (tmp_path / "raydgm" / "real.py").write_text("")
    (tmp_path / "docs" / "other.md").write_text("# Other page\n\n## A `code` heading, too\n")
    page = tmp_path / "docs" / "page.md"
    page.write_text(
        "# Page\n\n"
        "[ok](other.md) [ok anchor](other.md#a-code-heading-too) [own](#page) [web](https://example.org)\n"
        "[gone](missing.md) [bad anchor](other.md#nowhere) ![img](pic.png)\n\n"
        "Run `python raydgm/real.py` and `raydgm/missing.py`; artifacts in `artifacts/x/y.parquet`,\n"
        "`$RAYDGM_HOME/tune/<name>/`, `raydgm/*.py`, `tests/*.py`.\n\n"
        "```bash\npython bench/gone.py --flag   # in a fenced block\n```\n"
        "```\n[not a link](nowhere.md)\n```\n")
    assert broken_references(page, root=tmp_path) == [
        "link 'missing.md': missing.md does not exist",
        "link 'other.md#nowhere': no heading #nowhere in other.md",
        "link 'pic.png': pic.png does not exist",
        "file 'bench/gone.py' named in code does not exist",
        "file 'raydgm/missing.py' named in code does not exist",
        "file 'tests/*.py' named in code does not exist",
    ]


def test_machine_paths_are_caught_and_portable_ones_are_not():
    bad = ["sqlite:////work/main/artifacts/mlflow.db", "RAYDGM_HOME=/tmp/vaehome", "see /root/.cache/x",
           "`/home/alice/raydgm`", "/Users/bob/raydgm"]
    good = ["sqlite:///$PWD/artifacts/mlflow.db", "$RAYDGM_HOME/tune/x", "~/.ssh/id_ed25519",
            "/mnt/shared/home", "/home/ray/raydgm/sweeps/semantic_weight.py", "`/tmp/inception-2015-12-05.pt`",
            "artifacts/quality/a61d2eac5351b3f9", "a/tmp/b"]
    assert [t for t in bad if not machine_paths(t)] == []
    assert [t for t in good if machine_paths(t)] == []


def test_slugs_follow_github():
    assert slug("The pipeline alone: `make pipeline-demo`") == "the-pipeline-alone-make-pipeline-demo"
    assert slug("Sample quality: features, FID / KID / IS, and the report") == \
        "sample-quality-features-fid--kid--is-and-the-report"
    assert slug("A VAE's samples, resampled") == "a-vaes-samples-resampled"
