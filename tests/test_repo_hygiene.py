"""The repository speaks of the project alone: no tracked text file names a path on one machine.

Every file git tracks (``git ls-files``) that is text (no NUL byte in its first 8 KiB) is scanned
for absolute paths under the usual machine roots (work, tmp, home, root, Users). A build command
recorded in a manifest names its output relative to where it ran, and a docstring describes the
method rather than pointing at a file a user does not have. Each hit is reported as file:line.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ROOTS = ("work", "tmp", "home", "root", "Users")
# A root directly after the start, whitespace, a quote, "=", "(", "`" or ":" is absolute; after a
# word character or a dot it is part of a relative path (runs/tmp/...).
ABSOLUTE = re.compile(r"(?<![\w.~/-])/(?:" + "|".join(ROOTS) + r")/")


def _tracked_text_files() -> list[Path]:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    files = []
    for name in out.decode().split("\0"):
        path = REPO / name
        if not name or not path.is_file():
            continue
        with path.open("rb") as f:
            if b"\0" in f.read(8192):
                continue
        files.append(path)
    return files


def absolute_path_hits(files: list[Path]) -> list[str]:
    """``file:line: text`` for every line of ``files`` naming an absolute machine path."""
    hits = []
    for path in files:
        for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if ABSOLUTE.search(line):
                hits.append(f"{path.relative_to(REPO)}:{n}: {line.strip()[:160]}")
    return hits


def test_pattern_tells_absolute_from_relative():
    # Each sample is split so that this file's own text names no absolute path.
    for absolute in ("see /" + "work/x", "'/" + "tmp/run'", "--out=/" + "home/a", "(/" + "root/b)"):
        assert ABSOLUTE.search(absolute), absolute
    for relative in ("runs/" + "tmp/x", "a.b/" + "home/c", "~/data", "/data/blip.jsonl", "https://x.org/" + "home/"):
        assert not ABSOLUTE.search(relative), relative


@pytest.mark.skipif(shutil.which("git") is None or not (REPO / ".git").exists(), reason="needs a git checkout")
def test_no_absolute_machine_paths_in_tracked_files():
    hits = absolute_path_hits(_tracked_text_files())
    assert not hits, "absolute machine paths in tracked files (make them relative or describe them):\n" + "\n".join(hits)
