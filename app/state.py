"""Where the dashboard gets its data: runs under a runs root, cached loaders of their tables,
maps and images.

    settings()                  runs root and run to open: `-- --runs-root DIR --run NAME`, else
                                $CDVIZ_RUNS_ROOT, else runs/
    discover_runs / list_runs   names (paths relative to the root) of the runs under it
    resolve_run(root, name)     the run's directory; a name that escapes the root is refused
    require_run(key)            the run picked in widget ``key``, or a friendly message and st.stop()
    items / accuracy_table      cached per-run tables (index rows + outcome group, accuracy by group)
    item_map / compare_maps     one item's map for one (model, field, layer, head, query), read as a
                                slice from the store, and the teacher/student comparison
    item_image                  the item's image, read only inside allowed roots
    item_heads                  every head's map of one layer for one item
    item_pieces / piece_map     an item's other image pieces (crops, tiles; `cdviz record --pieces`)
                                per model, and one piece's t2i map

Analysis results (from the report, this server's cache or computed here) are in app/results.py.

Every cache key holds the run's path and a stamp of its files' mtimes, so a re-recorded run is
read again. Tensors are never loaded whole: maps are read one slice at a time.
md_escape makes dataset text inert before it goes into a markdown element; markdown_table draws a
small table as markdown (cheaper for a fresh browser than st.table / st.dataframe).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st
from PIL import Image

from cdviz import schema
from cdviz.store import StoreError, open_run

RUNS_ROOT_ENV = "CDVIZ_RUNS_ROOT"
IMAGE_ROOTS_ENV = "CDVIZ_IMAGE_ROOTS"  # extra folders (os.pathsep-separated) images may be read from
DEFAULT_RUNS_ROOT = "runs"
DEMO_RUN = "demo"
NO_RUNS_HELP = ("No runs yet under `{root}`. Make the demo run with `make demo`, or record one with "
                "`cdviz record --teacher T --student S --probes P --out {root}/NAME`, then reload this page. "
                "Another folder: `streamlit run app/main.py -- --runs-root DIR` or set CDVIZ_RUNS_ROOT.")
PAIR_METRICS = ("vat_cosine", "js", "spearman", "topk_iou", "emd_sliced")  # exact emd is too slow per click
OUTCOMES = ("TR/SR", "TR/SW", "TW/SR", "TW/SW")  # teacher right/wrong x student right/wrong
GROUP_LABELS = {"TR/SR": "both right", "TR/SW": "teacher right, student wrong",
                "TW/SR": "teacher wrong, student right", "TW/SW": "both wrong", "unknown": "outcome unknown"}
ACCURACY_COLUMNS = ["n", "teacher", "student", "delta", "teacher_consistent", "student_consistent", "teacher_strict",
                    "student_strict"]
DISPLAY_SIDE = 480  # images are downscaled to this for the browser; boxes keep original pixels


# ------------------------------------------------------------------------------------ settings

def md_escape(text: object) -> str:
    """Text from a dataset, a file name or an error made inert in Streamlit's markdown elements
    (st.error, st.caption, ...): every ASCII punctuation mark is backslash-escaped, so no link,
    image, emoji code or colour directive can come out of it."""
    return re.sub(r"([!-/:-@\[-`{-~])", r"\\\1", str(text))


def markdown_table(frame: pd.DataFrame, formats: dict[str, str] | None = None, precision: int = 4,
                   index: bool = False) -> str:
    """``frame`` as a markdown table for st.markdown: a static table that needs none of the table
    code st.table and st.dataframe make a fresh browser fetch and parse (their Arrow formatting
    alone is 0.7 MB of script; the item explorer's first load went from 132 files to 124 without it).

    Every cell and header goes through md_escape; floats get ``precision`` decimals unless
    ``formats`` ({column: format string, e.g. "{:.1%}"}) says otherwise; missing values are blank;
    numeric columns are right-aligned.
    """
    if index:
        frame = frame.reset_index()
    formats = formats or {}
    columns = list(frame.columns)
    numeric = [pd.api.types.is_numeric_dtype(frame[c]) and not pd.api.types.is_bool_dtype(frame[c])
               for c in columns]

    def cell(column: Any, value: Any) -> str:
        if value is None or (np.isscalar(value) and pd.isna(value)):
            return ""
        if column in formats:
            text = formats[column].format(value)
        elif isinstance(value, (float, np.floating)):  # a tiny value keeps its digits and sign
            text = f"{value:.{precision}f}" if value == 0 or abs(value) >= 10 ** -precision else f"{value:.2e}"
        else:
            text = str(value)
        return md_escape(text.replace("\n", " "))

    lines = ["| " + " | ".join(md_escape(str(c)) for c in columns) + " |",
             "|" + "|".join("---:" if n else ":---" for n in numeric) + "|"]
    lines += ["| " + " | ".join(cell(c, v) for c, v in zip(columns, row)) + " |"
              for row in frame.itertuples(index=False, name=None)]
    return "\n".join(lines)


@dataclass(frozen=True)
class Settings:
    runs_root: Path
    run: str | None


def settings(argv: list[str] | None = None) -> Settings:
    """Flags after ``--`` win over the environment, which wins over the default ``runs/``."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--runs-root")
    parser.add_argument("--run")
    # parse_known_args: under pytest or other launchers argv holds their own flags too.
    args, _ = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    root = args.runs_root or os.environ.get(RUNS_ROOT_ENV) or DEFAULT_RUNS_ROOT
    return Settings(Path(root).expanduser(), args.run)


# ------------------------------------------------------------------------------ run discovery

def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def discover_runs(root: Path) -> list[str]:
    """Run directories (holding a manifest.json) at depth 0..2 under ``root``, demo first."""
    base = Path(root).resolve()
    if not base.is_dir():
        return []
    found = [m.parent for pattern in ("manifest.json", "*/manifest.json", "*/*/manifest.json")
             for m in base.glob(pattern)]
    # A symlinked run pointing elsewhere is outside the root: not listed.
    names = sorted({p.relative_to(base).as_posix() for p in found if _inside(p.resolve(), base)})
    return sorted(names, key=lambda n: (n != DEMO_RUN, n))


@st.cache_data(ttl=5, show_spinner=False)
def _discover_cached(root: str) -> list[str]:
    return discover_runs(Path(root))


def resolve_run(root: Path, name: str) -> Path:
    """``root / name`` resolved; StoreError when it lies outside the root (``..``, absolute, symlink)."""
    base = Path(root).resolve()
    path = (base / name).resolve()
    if not _inside(path, base):
        raise StoreError(f"run {name!r} lies outside the runs root {base}; refusing to read it")
    return path


def default_run(names: list[str], requested: str | None) -> int:
    """Position of the run to open first: --run NAME, else demo, else the first."""
    for want in (requested, DEMO_RUN):
        if want and want in names:
            return names.index(want)
    return 0


def run_stamp(path: Path) -> float:
    """Changes whenever the run is re-recorded, resumed or re-reported."""
    parts = [path / "manifest.json", path / "index.parquet", path / "parts", path / "report"]
    return max((p.stat().st_mtime for p in parts if p.exists()), default=0.0)


@dataclass(frozen=True)
class Run:
    name: str
    path: Path  # resolved, inside root
    root: Path  # resolved runs root
    stamp: float

    @property
    def key(self) -> tuple[str, float]:
        return str(self.path), self.stamp

    @property
    def store(self):
        return _store(*self.key)


@st.cache_resource(max_entries=8, show_spinner=False)
def _store(path: str, stamp: float):
    return open_run(path)


def open_named(root: Path, name: str) -> Run:
    """The run ``name`` under ``root``, opened (StoreError if it cannot be read)."""
    path = resolve_run(root, name)
    run = Run(name, path, Path(root).resolve(), run_stamp(path))
    run.store.index  # noqa: B018  (read now so a corrupt table fails here, not mid-page)
    return run


def list_runs(root: Path) -> list[str]:
    """`discover_runs`, cached for a few seconds so a new run shows up without a restart."""
    return _discover_cached(str(Path(root).resolve()))


def require_run(key: str = "run") -> Run:
    """The run selected in the widget ``key`` (sidebar picker); otherwise say why and stop the page."""
    cfg = settings()
    names = list_runs(cfg.runs_root)
    if not names:
        st.info(NO_RUNS_HELP.format(root=cfg.runs_root))
        st.stop()
    name = st.session_state.get(key) or names[default_run(names, cfg.run)]
    try:
        run = open_named(cfg.runs_root, name)
    except (StoreError, OSError, ValueError) as e:
        st.error(f"Cannot open run {md_escape(name)}: {md_escape(e)}")
        st.stop()
    damaged, message = run_health(run)
    if damaged:
        st.error(f"Run {md_escape(name)} has damaged shards, so its pages cannot be trusted: {md_escape(message)}")
        st.stop()
    if message:
        st.warning(f"Incomplete run: {md_escape(message)}. Every page shows the recorded items only.")
    return run


@st.cache_data(ttl=10, max_entries=16, show_spinner=False)
def _health(path: str, stamp: float) -> tuple[bool, str]:
    health = _store(path, stamp).health()
    return bool(health.damaged), health.message().removeprefix(f"{health.root}: ")


def run_health(run: Run) -> tuple[bool, str]:
    """(any shard damaged, what is missing or damaged and the command that repairs it; "" when whole)."""
    return _health(*run.key)


# -------------------------------------------------------------------------------------- tables

@st.cache_data(max_entries=8, show_spinner=False)
def _items(path: str, stamp: float) -> pd.DataFrame:
    from cdviz.store import outcome_group

    out = _store(path, stamp).index.copy()
    known = out["teacher_correct"].notna() & out["student_correct"].notna()
    out["group"] = [outcome_group(bool(t), bool(s)) if k else "unknown"
                    for t, s, k in zip(out["teacher_correct"], out["student_correct"], known)]
    return out


def items(run: Run) -> pd.DataFrame:
    """The run's index with an outcome ``group`` column (TR/SW = teacher right, student wrong)."""
    return _items(*run.key)


def filter_items(frame: pd.DataFrame, category: str = "all", skill: str = "all", group: str = "all") -> pd.DataFrame:
    """Rows matching the selections ("all" keeps everything); only items recorded OK."""
    keep = frame["status"].astype(str).eq("ok")
    for col, want in (("category", category), ("skill", skill), ("group", group)):
        if want != "all":
            keep &= frame[col].astype(str).eq(want)
    return frame[keep]


@st.cache_data(max_entries=32, show_spinner=False)
def _accuracy(path: str, stamp: float, by: str) -> pd.DataFrame:
    from cdviz.store import usable_items
    from cdviz.report.summary import accuracy_tables

    usable = usable_items(_store(path, stamp))
    if usable.empty:  # nothing scored: one "all" row with n = 0 (accuracy_tables needs rows)
        return pd.DataFrame([{by: "all", **{c: 0 if c == "n" else np.nan for c in ACCURACY_COLUMNS[:6]}}])
    tables = accuracy_tables(usable)  # the report's definitions, so both agree
    overall = tables["overall"].rename(columns={"scope": by})
    table = pd.concat([tables[by], overall], ignore_index=True)
    return table[[by, *(c for c in ACCURACY_COLUMNS if c in table)]]  # strict only in match-protocol runs


def chance_level(items: pd.DataFrame) -> float:
    """Mean over items of 1 / number of options: the accuracy of guessing (two options: 1/2)."""
    from cdviz.report.summary import chance_level as level

    return level(items)


def chance_warning(overall: pd.Series, chance: float = 0.5) -> str | None:
    """A sentence when the teacher's overall accuracy is indistinguishable from chance, else None
    (the report's rule, `cdviz.report.findings.chance_note`); ``overall`` is the "all" row of
    ``accuracy_table``."""
    from cdviz.report.findings import chance_note

    return chance_note("teacher", float(overall["teacher"]), int(overall["n"]), chance)


def accuracy_table(run: Run, by: str) -> pd.DataFrame:
    """Per value of ``by`` ("category" or "skill") plus an "all" row: n, teacher and student accuracy
    (mean over query orders, as the paper reports), *_consistent (right in every order) and delta
    (student - teacher), over items recorded with an outcome for both models."""
    return _accuracy(*run.key, by)


# ----------------------------------------------------------------------------------- item maps

@st.cache_data(max_entries=1024, show_spinner=False)
def _item_map(path: str, stamp: float, uid: str, model: str, field: str, layer: int, head: int | None,
              query: int) -> np.ndarray:
    store = _store(path, stamp)
    if field == "i2i_paper":
        return store.get(uid, model, field, layer)  # [N], already a head mean
    x = store.get(uid, model, field, layer, head)  # head given: [Q, N] or [N]; else [H, Q, N] or [H, N]
    if head is None:
        x = x.mean(0)
    return x[query] if field == "t2i" else x


def item_map(run: Run, uid: str, model: str, field: str, layer: int, head: int | None, query: int = -1) -> np.ndarray:
    """[N] one item's map over image tokens: ``head`` None means the mean over heads; ``query`` picks
    the text query row of ``t2i`` (-1 = the last row, the answer position)."""
    return _item_map(*run.key, uid, model, field, int(layer), None if head is None else int(head), int(query))


@st.cache_data(max_entries=64, show_spinner=False)
def _item_heads(path: str, stamp: float, uid: str, model: str, field: str, layer: int, query: int) -> np.ndarray:
    x = _store(path, stamp).get(uid, model, field, layer)  # [H, Q, N] for t2i, else [H, N]
    return x[:, query] if field == "t2i" else x


def item_heads(run: Run, uid: str, model: str, field: str, layer: int, query: int = -1) -> np.ndarray:
    """[H, N] every head's map of one layer for one item (one store read); ``query`` as in item_map."""
    return _item_heads(*run.key, uid, model, field, int(layer), int(query))


def item_scalars(run: Run, uid: str, model: str, layer: int, head: int | None, query: int) -> dict[str, float]:
    """Share of the query row's attention on image tokens, and its entropy (nats)."""
    out = {}
    for field in ("mass", "entropy"):
        x = run.store.get(uid, model, field, int(layer))  # [H, Q]
        out[field] = float((x.mean(0) if head is None else x[head])[query])
    return out


# ---------------------------------------------------------------------------------- image pieces

PRIMARY_VIEW = "base/global view"  # the piece every map above is drawn on


def piece_label(role: str, number: int, place: list[int] | None) -> str:
    """"crop 1", "tile 2 (row 1, col 2)": how the explorer names a piece (numbers from 1)."""
    return f"{role} {number}" + (f" (row {place[0] + 1}, col {place[1] + 1})" if place else "")


def item_pieces(row: pd.Series, model: str) -> dict[str, dict]:
    """{label: piece} of ``model``'s other pieces of the item's image, in token order ({} when the
    image is one piece or the run was recorded without --pieces). A piece: role, grid [rows, cols],
    offset into the item's t2i_pieces columns, place [row, col, n_rows, n_cols] for a tile."""
    out, counts = {}, {}
    for piece in schema.row_pieces(row, model):
        counts[piece["role"]] = counts.get(piece["role"], 0) + 1
        out[piece_label(piece["role"], counts[piece["role"]], piece.get("place"))] = piece
    return out


@st.cache_data(max_entries=256, show_spinner=False)
def _piece_map(path: str, stamp: float, uid: str, model: str, layer: int, head: int | None, query: int,
               offset: int, n: int) -> np.ndarray:
    x = _store(path, stamp).get(uid, model, "t2i_pieces", layer, head)  # head given: [Q, M]; else [H, Q, M]
    if head is None:
        x = x.mean(0)
    return x[query, offset:offset + n]


def piece_map(run: Run, uid: str, model: str, piece: dict, layer: int, head: int | None, query: int = -1) -> np.ndarray:
    """[rows * cols] the text query row's attention on one piece's patches (not renormalised), row-major
    on ``piece["grid"]``; ``head`` and ``query`` as in item_map."""
    rows, cols = piece["grid"]
    return _piece_map(*run.key, uid, model, int(layer), None if head is None else int(head), int(query),
                      int(piece["offset"]), int(rows) * int(cols))


def piece_image(image: Image.Image | None, size: tuple[int, int] | None,
                piece: dict) -> tuple[Image.Image | None, tuple[int, int] | None]:
    """The part of the item's image a piece shows: a tile's cell of its layout (tiles split the
    resized image evenly), the whole image for a crop (stitched crops cover it, padding removed)."""
    place = piece.get("place")
    if image is None or not place:
        return image, size
    row, col, n_rows, n_cols = place
    w, h = image.size
    box = (round(col * w / n_cols), round(row * h / n_rows),
           round((col + 1) * w / n_cols), round((row + 1) * h / n_rows))  # (left, top, right, bottom)
    return image.crop(box), (round(size[0] / n_cols), round(size[1] / n_rows)) if size else None


@dataclass(frozen=True)
class Comparison:
    teacher: np.ndarray  # [Nt] share of the map per token x Nt (1 = uniform), teacher grid
    student: np.ndarray  # [Ns] same on the student grid
    diff: np.ndarray     # [N] student - teacher on the common grid, both x N
    grid: tuple[int, int]
    metrics: dict[str, float]  # PAIR_METRICS on the common grid


def compare_maps(t_map: np.ndarray, t_grid: tuple[int, int], s_map: np.ndarray, s_grid: tuple[int, int]) -> Comparison:
    """Both maps as distributions relative to uniform, their difference and the pair metrics.

    Relative to uniform (share x number of tokens) so maps on grids of different size share one
    colour scale: 2 means twice the attention of a uniform map, whatever the grid.
    """
    import torch  # here, not at the top: pages that only read saved results never load torch

    from cdviz.metrics import METRICS, align_pair

    t, s = torch.from_numpy(np.asarray(t_map, np.float32)), torch.from_numpy(np.asarray(s_map, np.float32))
    ta, sa, grid = align_pair(t, tuple(t_grid), s, tuple(s_grid))  # [N] each, normalised
    metrics = {}
    for name in PAIR_METRICS:
        fn = METRICS[name]
        metrics[name] = float(fn(sa, ta, grid))
    n = grid[0] * grid[1]
    rel = lambda x: (x / x.sum().clamp_min(1e-12) * x.numel()).numpy()  # noqa: E731
    return Comparison(rel(t), rel(s), ((sa - ta) * n).numpy(), grid, metrics)


def metric_direction(name: str) -> str:
    from cdviz.metrics import HIGHER_IS_ALIGNED

    return "higher = more alike" if HIGHER_IS_ALIGNED[name] else "lower = more alike"


def as_misalignment(name: str, value: float) -> float:
    """A metric's value as the report shows it: a misalignment, larger = further apart (1 - a
    similarity, a distance as it is)."""
    from cdviz.metrics import HIGHER_IS_ALIGNED

    return 1.0 - value if HIGHER_IS_ALIGNED[name] else value


# -------------------------------------------------------------------------------------- images

def _image_roots(run: Run) -> list[Path]:
    """Folders images may be read from: the runs root, the probe set the run was recorded from,
    and any listed in $CDVIZ_IMAGE_ROOTS. Nothing else on the machine is opened."""
    roots = [run.root]
    probes = run.store.manifest.get("probes", {}).get("path")
    if probes and _trusted_probe_dir(Path(probes), run.root):
        roots.append(Path(probes).resolve())
    roots += [Path(p).resolve() for p in os.environ.get(IMAGE_ROOTS_ENV, "").split(os.pathsep) if p]
    return roots


def _trusted_probe_dir(path: Path, runs_root: Path) -> bool:
    """The run file names its probe set; a folder is only read if it is one (items.jsonl) or lies in the
    runs root, and is never a filesystem root, the home folder or a folder holding the runs root."""
    try:
        path = path.resolve()
    except (OSError, RuntimeError):
        return False
    if not path.is_dir() or path == Path(path.anchor) or path == Path.home().resolve():
        return False
    if _inside(path, runs_root):
        return True
    return not _inside(runs_root, path) and (path / "items.jsonl").is_file()


@st.cache_data(max_entries=256, show_spinner=False)
def _load_image(path: str) -> tuple[Image.Image, tuple[int, int]]:
    with Image.open(path) as img:
        size = img.size
        img = img.convert("RGB")
    img.thumbnail((DISPLAY_SIDE, DISPLAY_SIDE))
    return img, size


def item_image(run: Run, raw: str) -> tuple[Image.Image | None, tuple[int, int] | None, str | None]:
    """(display image, original (width, height), None) or (None, None, why it is not shown).

    A path outside the allowed roots is refused before anything there is touched."""
    raw_path = Path(str(raw))
    roots = _image_roots(run)
    candidates = [raw_path] if raw_path.is_absolute() else [run.path / raw_path, *(r / raw_path for r in roots[1:])]
    allowed = [p for p in (c.resolve() for c in candidates) if any(_inside(p, r) for r in roots)]
    if not allowed:
        return None, None, (f"image {raw} is outside the folders the dashboard reads (runs root, the run's probe "
                            f"set); add its folder to {IMAGE_ROOTS_ENV} to show it")
    for path in allowed:
        if path.is_file():
            try:
                img, size = _load_image(str(path))
            except OSError as e:
                return None, None, f"image {raw} could not be read ({e})"
            return img, size, None
    return None, None, f"image {raw} not found"


def item_boxes(row: pd.Series) -> list[dict]:
    """Boxes on the item's first image (the one recorded)."""
    try:
        boxes = json.loads(row.get("boxes") or "[]")
    except (TypeError, json.JSONDecodeError):
        return []
    return [b for b in boxes if int(b.get("image", 0)) == 0]


def json_list(raw: Any) -> list:
    try:
        value = json.loads(raw) if isinstance(raw, str) else list(raw)
    except (TypeError, json.JSONDecodeError):
        return []
    return value if isinstance(value, list) else []


# ------------------------------------------------------------------------------- item helpers

def layer_groups(run: Run) -> dict[int, list[int]] | None:
    """{student layer: teacher layers} as the analyses pair them (group matching), or None."""
    try:
        from analyses.common import resolve_layer_map

        return resolve_layer_map(run.store)
    except (ImportError, ValueError):
        return None


@st.cache_data(max_entries=8, show_spinner=False)
def _outcomes(path: str, stamp: float) -> pd.DataFrame:
    return _store(path, stamp).outcomes.set_index("uid").sort_index()


def item_outcomes(run: Run, uid: str) -> pd.DataFrame:
    """The per-query outcome rows of one item (both models, both option orders)."""
    table = _outcomes(*run.key)
    return table.loc[[uid]].reset_index() if uid in table.index else table.iloc[:0].reset_index()
