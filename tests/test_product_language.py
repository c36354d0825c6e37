"""The repository speaks of the product only.

Code, docs, benchmark results and tools never say in what sittings the work was done or on which machine it
ran (the examples below, in BAD, are the kinds of lines caught). A trial's history lives in docs/experiments.md
under a neutral id and a date. This test reads every tracked text file (`git ls-files`)
and fails on such words, naming file and line.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SELF = Path(__file__).resolve().relative_to(ROOT).as_posix()  # it spells the words out to test the patterns

FORBIDDEN = re.compile("|".join([
    r"\bsessions? \d+",                                  # a numbered sitting
    r"(?<![a-z])sessions?[_-]\d+",                       # a sitting's number in a name
    r"_session\d+\b",                                    # a results key named after a sitting
    r"\blent (machine|gpu|h200|device|box|node)s?\b",    # a machine named as on loan
    r"\ba lent\b",
    r"\b(was|were|been|is|are) lent\b",                  # a machine said to be on loan
    r"\bborrowed (machine|gpu|device|box|node)s?\b",
    r"\bh200\b",                                         # a preset or a figure named after the machine it ran on
    r"\bthis (2-core )?cpu\b",                           # the developers' machine as "this CPU"
    r"\bthis project's (reference )?machine\b",
]), re.IGNORECASE)

# Not text: checked by suffix first, then by a NUL byte in the first 8 KiB.
BINARY_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".gif", ".ico", ".pdf", ".safetensors", ".ckpt", ".pt", ".pth",
                   ".bin", ".pkl", ".npz", ".npy", ".parquet", ".sqlite", ".db", ".gz", ".zip", ".tar", ".whl"}
# A BPE vocabulary is a list of words ("lent", "borrowed"), not prose about the project.
VOCABULARY = ("rlft/assets/toy/pipeline/tokenizer/",)

BAD = [
    "rows of different sessions share the pool; session 16 reran cool",
    "no GPU machine lent in sessions 9-21",
    '"session_12": "all seven oracles"',
    "rwr at the session-14 defaults",
    '"rwr_guided_without_baseline_session14": {',
    "the first weights, made on a lent H200 under a wall-clock deadline",
    "--preset h200",
    "about 9.3 hours on this CPU",
    "on a borrowed GPU",
]
GOOD = [
    "the rating session keeps the next pair ready",
    "a database session per request (SQLAlchemy Session)",
    "sessionmaker(bind=engine); session.commit()",
    "the toy CLIP's excellent colour accuracy; relentless; silently",
    "2026-11-30 rwr-shared-noise: 83.3% on dark",
    "about 2.6 hours on a 2-core CPU",
    "experiment dpo-b80k-mt0.5 on a GPU",
]


def tracked_text_files(root: Path = ROOT) -> list[Path]:
    """Tracked files that are text, minus this test and the tokenizer's vocabulary."""
    names = subprocess.run(["git", "ls-files", "-z"], cwd=root, capture_output=True, check=True).stdout.decode().split("\0")
    out = []
    for name in names:
        if not name or name == SELF or name.startswith(VOCABULARY) or Path(name).suffix.lower() in BINARY_SUFFIXES:
            continue
        path = root / name
        if path.is_file():  # a tracked file another change has just removed is skipped
            out.append(path)
    return out


def offending_lines(paths: list[Path], root: Path = ROOT) -> list[str]:
    """`path:line: text` for every line of `paths` with a forbidden word."""
    hits = []
    for path in paths:
        data = path.read_bytes()
        if b"\0" in data[:8192]:
            continue
        text = data.decode("utf-8", errors="replace")
        for m in FORBIDDEN.finditer(text):
            start = text.rfind("\n", 0, m.start()) + 1
            end = text.find("\n", m.end())
            line = text[start:end if end >= 0 else len(text)].strip()
            hits.append(f"{path.relative_to(root).as_posix()}:{text.count(chr(10), 0, m.start()) + 1}: {line[:160]}")
    return hits


@pytest.mark.parametrize("line", BAD)
def test_the_patterns_catch_sitting_and_machine_words(line):
    assert FORBIDDEN.search(line), line


@pytest.mark.parametrize("line", GOOD)
def test_the_patterns_leave_product_words_alone(line):
    assert not FORBIDDEN.search(line), FORBIDDEN.search(line)


def test_the_scan_reports_a_planted_line(tmp_path):
    bad = tmp_path / "notes.md"
    bad.write_text("# notes\n\nThe defaults were measured in session 12 on a lent H200.\n")
    hits = offending_lines([bad], root=tmp_path)
    assert hits and hits[0].startswith("notes.md:3: "), hits


def test_no_tracked_file_speaks_of_sittings_or_lent_machines():
    paths = tracked_text_files()
    assert any(p.name == "README.md" for p in paths) and any(p.suffix == ".py" for p in paths)
    hits = offending_lines(paths)
    assert not hits, ("the repository speaks of the product only; log trials in docs/experiments.md under a neutral "
                      "id and a date:\n" + "\n".join(hits))
