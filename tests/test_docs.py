"""The documentation site builds strictly, and the Method page keeps up with the metric registry.

``mkdocs build --strict`` (mkdocs.yml) fails on a broken link or anchor, a page left out of the
navigation, and an API reference (``::: module``) that cannot be collected; the Demo models page
is generated from checkpoints/manifest.json during the build (docs/_hooks/demo_models.py).
Needs the dev extra (mkdocs, mkdocs-material, mkdocstrings[python]); skipped without it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from cdviz.metrics import METRICS

REPO = Path(__file__).resolve().parents[1]
METHOD = REPO / "docs" / "method.md"


def _section(text: str, heading: str) -> str:
    """The text under the markdown heading ``heading`` up to the next heading of its level or above."""
    level = len(heading) - len(heading.lstrip("#"))
    start = text.index(heading + "\n")
    rest = text[start + len(heading) + 1:]
    end = re.search(rf"^#{{1,{level}}} ", rest, flags=re.M)
    return rest[: end.start()] if end else rest


def test_every_registered_metric_has_its_formula_on_the_method_page():
    text = _section(METHOD.read_text(), "## Misalignment metrics")
    for name in METRICS:
        # each metric has its own subsection, and the subsection holds a display formula
        heading = f"### `{name}`"
        assert heading in text, f"docs/method.md has no subsection {heading!r} for metric {name!r}"
        assert "\\[" in _section(text, heading), f"docs/method.md: metric {name!r} has no display formula"


def test_mkdocs_build_strict(tmp_path):
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings_handlers.python")
    pytest.importorskip("material")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=REPO, capture_output=True, text=True, timeout=600,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1", "PYTHONPATH": str(REPO)},
    )
    assert proc.returncode == 0, proc.stderr[-6000:]
    site = tmp_path / "site"
    for page in ("method", "how-to", "dashboard", "demo-models", "reference/metrics"):
        assert (site / page / "index.html").is_file(), page
    demo = (site / "demo-models" / "index.html").read_text()
    assert "<!-- demo-models -->" not in demo and "<table>" in demo  # the manifest's tables were generated
    for shot in re.findall(r'src="(?:\.\./)?(img/dashboard/[\w-]+\.png)"', (site / "dashboard" / "index.html").read_text()):
        assert (site / shot).is_file(), shot
