"""Where the dashboard gets its data: runs under a runs root, cached loaders, and the one place that
calls the analyses (so wiring changes stay here).

    settings()                  runs root and run to open: `-- --runs-root DIR --run NAME`, else
                                $CDVIZ_RUNS_ROOT, else runs/
    discover_runs / list_runs   names (paths relative to the root) of the runs under it
    resolve_run(root, name)     the run's directory; a name that escapes the root is refused
    require_run(key)            the run picked in widget ``key``, or a friendly message and st.stop()
    items / accuracy_table      cached per-run tables (index rows + outcome group, accuracy by group)
    item_map / compare_maps     one item's map for one (model, field, layer, head, query), read as a
                                slice from the store, and the teacher/student comparison
    item_image                  the item's image, read only inside allowed roots
    analysis / cached_analysis  an analyses/ result: this server's copy, else rebuilt from the run's
                                report (RUN/report), else computed once per server (never
                                attribution, which loads models), or an Unavailable saying why
    findings_summary            what the findings sentences are made from (report or this server)
    layer_head_frame, item_misalignment   views of those results for the pages

Every cache key holds the run's path and a stamp of its files' mtimes, so a re-recorded run is
read again. Tensors are never loaded whole: maps are read one slice at a time.
md_escape makes dataset text inert before it goes into a markdown element.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import streamlit as st
import torch
from PIL import Image

from cdviz.metrics import HIGHER_IS_ALIGNED, METRICS, align_pair
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
    from analyses.common import outcome_group

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
    from analyses.common import usable_items
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
    return "higher = more alike" if HIGHER_IS_ALIGNED[name] else "lower = more alike"


def as_misalignment(name: str, value: float) -> float:
    """A metric's value as the report shows it: a misalignment, larger = further apart (1 - a
    similarity, a distance as it is)."""
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


# ------------------------------------------------------------------------------------ analyses

@dataclass(frozen=True)
class Unavailable:
    """Why a result cannot be shown, in words for the page."""

    reason: str


# The app computes these on request; attribution loads both models, so it only comes from a report.
COMPUTABLE = ("misalignment", "layer_correspondence", "error_link", "targets")
PASSES = {"misalignment": 1, "layer_correspondence": 2}  # times each streams over the items
DEPENDS = {"error_link": ("misalignment",), "targets": ("misalignment", "error_link")}
REPORT_HINT = "`cdviz report {path}` computes every analysis once and saves it with the run"
ATTRIBUTION_HINT = ("build the report with attribution: `cdviz report {path} --attribution-items 8` (or "
                    "`cdviz.report.build_report(RUN, attribution_items=8)`); it loads both models from the "
                    "paths in the run's manifest")


@st.cache_resource(max_entries=16, show_spinner=False)
def _slot(path: str, stamp: float, name: str) -> dict:
    """Where one run's ``name`` result lives on this server, shared by every session; the 16 most
    recently used results are kept (a misalignment result of a large run is tens of MB)."""
    return {"lock": threading.Lock(), "result": None}


@st.cache_data(max_entries=8, show_spinner=False)
def _summary(path: str, stamp: float) -> dict | None:
    """RUN/report/summary.json when it is newer than the run's index (else it describes old data)."""
    file, index = Path(path) / "report" / "summary.json", Path(path) / "index.parquet"
    if not file.is_file() or (index.is_file() and file.stat().st_mtime < index.stat().st_mtime):
        return None
    try:
        summary = json.loads(file.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return summary if summary.get("format") == "cdviz-report" and summary.get("version") == 1 else None


def compare_summary(before: Run, after: Run) -> dict | None:
    """AFTER/compare/summary.json written by `cdviz compare BEFORE AFTER` for exactly these runs, if
    it is newer than both runs' data; it holds paired bootstrap intervals of the differences."""
    file = after.path / "compare" / "summary.json"
    if not file.is_file() or file.stat().st_mtime < max(before.stamp, after.stamp):
        return None
    try:
        summary = json.loads(file.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    same = summary.get("before") == str(before.path) and summary.get("after") == str(after.path)
    return summary if same and summary.get("format") == "cdviz-compare" and summary.get("version") == 1 else None


def report_summary(run: Run) -> dict | None:
    """The batch report's summary.json for this run, if there is a current one."""
    return _summary(*run.key)


@st.cache_data(max_entries=64, show_spinner=False)
def _report_table(path: str, stamp: float, name: str) -> pd.DataFrame | None:
    summary = _summary(path, stamp)
    rel = (summary or {}).get("files", {}).get("tables", {}).get(name)
    if rel is None:
        return None
    file = (Path(path) / "report" / rel).resolve()
    return pd.read_parquet(file) if _inside(file, Path(path)) and file.is_file() else None


def _from_report(run: Run, name: str) -> Any | None:
    """Rebuild a result from the report's tables where they hold all of it (misalignment per head
    and per item is not saved, so it is always computed)."""
    summary = report_summary(run)
    if summary is None or name == "misalignment":
        return None
    table = lambda t: _report_table(*run.key, t)  # noqa: E731
    try:
        if name == "targets":
            from analyses.targets import TargetsResult
            return TargetsResult.from_dict(summary["recommended_targets"])
        if name == "error_link":
            from analyses.error_link import ErrorLinkResult
            parts = [table(t) for t in ("outcome_groups", "error_link_auroc", "error_link_logistic",
                                        "misalignment_by_outcome")]
            if any(p is None for p in parts):
                return None
            return ErrorLinkResult(*parts, summary["error_link"]["correction"])
        if name == "layer_correspondence":
            from analyses.layer_correspondence import LayerCorrespondenceResult
            sim, heads, lm = table("layer_similarity"), table("head_matches"), summary["layer_map"]
            if sim is None or heads is None:
                return None
            grid = sim.pivot(index="teacher_layer", columns="student_layer", values="value")  # [Lt, Ls]
            return LayerCorrespondenceResult(lm["field"], lm["metric"], HIGHER_IS_ALIGNED[lm["metric"]],
                                             [int(t) for t in grid.index], [int(s) for s in grid.columns],
                                             grid.to_numpy(np.float64),
                                             {int(k): int(v) for k, v in lm["monotone"].items()},
                                             heads, int(summary["n_analysed"]))
        if name == "attribution":
            from analyses.attribution import AttributionResult
            frame, maps = table("attribution"), table("attribution_maps")
            # The report keeps no per-item targets table; the pages use frame and maps only.
            items_cols = ["uid", "model", "target_token", "logit", "delta", "grid_rows", "grid_cols"]
            if frame is None or maps is None:
                return None
            return AttributionResult(frame, maps, pd.DataFrame(columns=items_cols))
    except (ImportError, KeyError, ValueError):
        return None
    return None


def cached_analysis(run: Run, name: str) -> Any | None:
    """The result if this server already has it or the run's report holds it; never computes."""
    slot = _slot(*run.key, name)
    if slot["result"] is None:
        slot["result"] = _from_report(run, name)
    return slot["result"]


def analysis(run: Run, name: str, progress: Callable[[int], None] | None = None) -> Any | Unavailable:
    """The ``name`` result for ``run``: cached, from the report, else computed now (COMPUTABLE only).

    Dependencies (DEPENDS) are computed first and passed in, so each is computed once; a second
    session asking meanwhile waits for the first one's result instead of computing it again.
    """
    slot = _slot(*run.key, name)
    with slot["lock"]:
        if cached_analysis(run, name) is not None:
            return slot["result"]
        if name not in COMPUTABLE:
            return Unavailable(f"no {name} result for this run. " + REPORT_HINT.format(path=run.path))
        try:
            from analyses import get_analysis
        except ImportError as e:
            return Unavailable(f"the analyses package cannot be imported ({md_escape(e)})")
        extra = {dep: analysis(run, dep, progress) for dep in DEPENDS.get(name, ())}  # keyword = analysis name
        for dep in extra.values():
            if isinstance(dep, Unavailable):
                return dep
        try:
            slot["result"] = get_analysis(name)(run.store, progress=progress, **extra)
        except (StoreError, ValueError, KeyError) as e:
            return Unavailable(f"{name} failed on this run: {md_escape(e)}")
        return slot["result"]


def n_usable(run: Run) -> int:
    """Items the analyses use: recorded OK, with an outcome for both models."""
    frame = items(run)
    return int((frame["status"].astype(str).eq("ok") & frame["group"].ne("unknown")).sum())


def require_usable(run: Run) -> None:
    """Stop the page with a message when no item can be analysed."""
    if n_usable(run) == 0:
        st.info(f"Run {md_escape(run.name)} has no item recorded with an outcome for both models, so there is "
                "nothing to analyse; the Overview lists why items were skipped.")
        st.stop()


def compute_with_progress(run: Run, names: tuple[str, ...]) -> dict[str, Any]:
    """Fetch or compute several analyses, with a progress bar over the items they stream."""
    missing = [n for n in names if cached_analysis(run, n) is None]
    needed = set(missing) | {d for n in missing for d in DEPENDS.get(n, ())}
    total = n_usable(run) * sum(PASSES.get(n, 0) for n in needed if cached_analysis(run, n) is None)
    bar = st.progress(0.0, text=f"computing {', '.join(sorted(needed))} on {n_usable(run):,} items "
                                f"(once per server; {REPORT_HINT.format(path=run.path)})") if missing else None
    done = 0

    def advance(n: int) -> None:
        nonlocal done
        done += n
        bar.progress(min(1.0, done / max(1, total)))

    out = {name: analysis(run, name, advance if bar else None) for name in names}
    if bar:
        bar.empty()
    return out


def findings_summary(run: Run) -> tuple[dict, str]:
    """(summary, where it came from) for `cdviz.report.findings.report_findings`: the report's
    summary.json, else the parts this server has: accuracy, outcome groups and order dependence
    always, misalignment / error link / targets once computed (missing parts are left out)."""
    summary = report_summary(run)
    if summary is not None:
        return summary, "the run's report"
    from cdviz.report.summary import order_dependence, records

    frame = items(run)
    usable = frame[frame["status"].astype(str).eq("ok") & frame["group"].ne("unknown")]
    overall = accuracy_table(run, "category").iloc[-1]
    protocol = run.store.manifest.get("options", {}).get("protocol", "letters")
    out: dict[str, Any] = {
        "protocol": protocol, "models": run.store.manifest.get("models", {}),
        "n_items": int(len(frame)), "n_analysed": int(len(usable)), "n_skipped": int(len(frame) - len(usable)),
        "accuracy": {"overall": {k: (v.item() if hasattr(v, "item") else v) for k, v in overall.drop(
            labels=["category"]).items()}, "chance": chance_level(usable)} if len(usable) else {},
        "outcome_groups": {g: int((usable["group"] == g).sum()) for g in OUTCOMES},
        "order_dependence": records(order_dependence(usable)) if protocol == "letters" else [],
    }
    mis, link, targets = (cached_analysis(run, n) for n in ("misalignment", "error_link", "targets"))
    if mis is not None:
        out["misalignment"] = {"measures": list(mis.measures), "by_layer": records(mis.by_layer())}
    if link is not None:
        out["error_link"] = {"auroc": records(link.overall()), "n_tests": link.n_tests, "family": link.family}
    if targets is not None:
        out["recommended_targets"] = targets.to_dict()
    return out, "this server's computation"


def layer_head_frame(mis: Any, measure: str, category: str = "all", skill: str = "all",
                     group: str = "all") -> pd.DataFrame:
    """Mean misalignment per (student layer, head) over the items matching the filters.

    Reads the misalignment result's [I, L, H+1, M] array, so filtering costs no store access.
    Columns: measure, student_layer, head (-1 = head mean), mean, n; empty when no item matches.
    """
    keep = np.ones(len(mis.items), dtype=bool)
    for col, want in (("category", category), ("skill", skill), ("group", group)):
        if want != "all":
            keep &= mis.items[col].astype(str).to_numpy() == want
    if not keep.any():
        return pd.DataFrame(columns=["measure", "student_layer", "head", "mean", "n"])
    values = mis.values[keep][..., mis.measure_index(measure)]  # [I', L, H+1]
    with np.errstate(all="ignore"):
        mean = np.nanmean(values, axis=0)  # [L, H+1]
    layers, heads = np.meshgrid(mis.student_layers, mis.head_labels(), indexing="ij")
    return pd.DataFrame({"measure": measure, "student_layer": layers.ravel(), "head": heads.ravel(),
                         "mean": mean.ravel().astype(np.float64), "n": int(keep.sum())})


def misalignment_measures(run: Run) -> list[str]:
    """Measures whose per-item misalignment is at hand (this server's result, else the report's)."""
    mis = _slot(*run.key, "misalignment")["result"]
    if mis is not None:
        return list(mis.measures)
    table = _report_table(*run.key, "misalignment_items")
    return [] if table is None else list(dict.fromkeys(table["measure"]))


def item_misalignment(run: Run, measure: str, layer: int) -> pd.DataFrame | None:
    """uid, group, misalignment (head mean) per item at one student layer, from this server's
    misalignment result or the report's per-item table; None when neither exists."""
    mis = _slot(*run.key, "misalignment")["result"]
    if mis is not None and measure in mis.measures:
        return pd.DataFrame({"uid": mis.items["uid"], "group": mis.items["group"],
                             "misalignment": mis.item_layer(measure)[layer].to_numpy()})
    table = _report_table(*run.key, "misalignment_items")
    if table is None:
        return None
    rows = table[(table["measure"] == measure) & (table["student_layer"] == layer)]
    return rows[["uid", "group", "misalignment"]]
