"""``cdviz probes make | import | show``: probe sets from the shapes world or local benchmark copies."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from cdviz.cli.common import console, progress_bar, user_errors
from cdviz.types import ProbeError


def probes_make(
    world: str = typer.Argument("shapes", help="Synthetic world to generate (only 'shapes' for now)."),
    n: int = typer.Option(2000, "--n", help="Number of items."),
    seed: int = typer.Option(0, help="Random seed; the same seed gives byte-identical output."),
    image_size: int = typer.Option(64, "--image-size", help="Image side in pixels."),
    split: Optional[str] = typer.Option(None, help="Only scenes of this split (train / validation / test)."),
    out: Path = typer.Option(..., help="Output directory."),
) -> None:
    """Generate a synthetic probe set with exact object boxes."""
    with user_errors():
        if world != "shapes":
            raise KeyError(f"unknown world {world!r}; available: shapes")
        from cdviz.probes.shapes import SPLITS, make_shapes

        if split is not None and split not in SPLITS:
            raise KeyError(f"unknown split {split!r}; choose from {', '.join(SPLITS)}")
        with progress_bar(f"shapes world -> {out}", n) as advance:
            ps = make_shapes(out, n=n, seed=seed, image_size=image_size, splits=(split,) if split else SPLITS,
                             progress=advance)
        console.print(f"wrote {len(ps)} items to {out}")


def probes_import(
    source: str = typer.Argument(..., help="Native format: sugarcrepe, winoground, aro_vg_relation, ..."),
    path: Path = typer.Argument(..., help="Local copy of the benchmark (file or directory)."),
    out: Path = typer.Option(..., help="Output probe set directory."),
    images_dir: Optional[Path] = typer.Option(None, "--images-dir", help="Folder with the benchmark's images."),
    coco_annotations: Optional[Path] = typer.Option(None, "--coco-annotations", help="COCO instances_val2017.json for boxes."),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Record bad items as skips instead of stopping."),
) -> None:
    """Convert a local benchmark copy into a cdviz probe set (images are referenced, not copied)."""
    from cdviz.probes.probeset import Skip, save_probeset
    from cdviz.probes.registry import get_source

    with user_errors():
        loader = get_source(source)
        options = {k: v for k, v in {"images_dir": images_dir, "coco_annotations": coco_annotations}.items() if v is not None}
        accepted = inspect.signature(loader).parameters
        for name in options:
            if name not in accepted:
                raise ProbeError(f"--{name.replace('_', '-')} does not apply to {source!r}; leave it out")
        items, skipped = [], []
        with progress_bar(f"import {source}", None) as advance:
            for item in _guarded(loader(path, **options), skip_bad, skipped):
                items.append(item)
                advance(1)
        save_probeset(items, out, name=f"{source}:{path}", params={"source": source, "path": str(path),
                      **{k: str(v) for k, v in options.items()}}, skipped=[Skip(**s) for s in skipped])
        console.print(f"wrote {len(items)} items to {out}" + (f" ({len(skipped)} skipped)" if skipped else ""))


def _guarded(iterator, skip_bad: bool, skipped: list[dict]):
    """Yield from a loader; with skip_bad, a bad item is recorded and the loader resumes."""
    it = iter(iterator)
    while True:
        try:
            yield next(it)
        except StopIteration:
            return
        except ProbeError as e:
            if not skip_bad:
                raise
            skipped.append({"where": str(e).split(": ")[0], "reason": str(e)})


def probes_show(root: Path = typer.Argument(..., help="Probe set directory.")) -> None:
    """Counts per category, skill and split; box coverage; a few examples."""
    from cdviz.probes.probeset import load_probeset

    with user_errors():
        ps = load_probeset(root)
    out = Console()
    out.print(f"[bold]{ps.meta.get('name', root)}[/bold]: {len(ps)} items ({len(ps.skipped)} skipped)")
    counts = ps.counts()
    table = Table("category", "skill", "items", "with boxes")
    for (cat, skill), group in _group(ps.items).items():
        table.add_row(cat, skill, str(len(group)), str(sum(bool(i.boxes) for i in group)))
    out.print(table)
    for key in ("skill", "split", "source"):
        out.print(f"{key}: " + ", ".join(f"{k}={v}" for k, v in sorted(counts[key].items())))
    for item in ps.items[:3]:
        out.print(f"  {item.uid}: {item.question} {list(item.options)} -> {item.options[item.correct]!r}",
                  markup=False)


def _group(items):
    groups: dict[tuple[str, str], list] = {}
    for i in items:
        groups.setdefault((i.category, i.skill), []).append(i)
    return dict(sorted(groups.items()))
