"""MkDocs hook: the Demo models page is generated from checkpoints/manifest.json at build time.

The page's markdown holds the marker ``<!-- demo-models -->``; it is replaced by the same text
``cdviz zoo`` writes to checkpoints/README.md (`cdviz.zoo.render_readme` of the manifest and,
when present, checkpoints/variations.json and rebuild-manifest.json), so the numbers on the page
are always the ones the bundled models were measured at. Relative links in that text point into
checkpoints/, which is outside the documentation, so they are shown as repository paths instead.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

MARKER = "<!-- demo-models -->"
PAGE = "demo-models.md"
LINK = re.compile(r"\[([^\]]+)\]\((?!https?://|#)([^)\s]+)\)")


def render(checkpoints: Path) -> str:
    """checkpoints/README.md's text rendered from ``checkpoints``' manifest, headings one level down."""
    from cdviz.zoo.readme import read_rebuild, read_variations, render_readme

    manifest = json.loads((checkpoints / "manifest.json").read_text())
    text = render_readme(manifest, read_variations(checkpoints), read_rebuild(checkpoints))
    text = re.sub(r"^# .*\n", "", text, count=1)  # the page has its own title
    text = re.sub(r"^(#+) ", r"#\1 ", text, flags=re.M)
    return LINK.sub(lambda m: f"{m.group(1)} (`checkpoints/{m.group(2)}`)", text)


def on_page_markdown(markdown: str, page, config, files) -> str:
    if page.file.src_uri != PAGE:
        return markdown
    if MARKER not in markdown:
        raise ValueError(f"docs/{PAGE} lost its marker {MARKER}; the generated tables have nowhere to go")
    root = Path(config["config_file_path"]).parent
    return markdown.replace(MARKER, render(root / "checkpoints"))
