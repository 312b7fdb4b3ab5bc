"""The one way analyses run: each registered once with its function, dependencies and result type.

    from analyses import pipeline
    results = pipeline.run(store)                        # every default analysis, dependencies first
    results = pipeline.run(store, ["targets"])           # misalignment and error_link too, as targets needs
    results.save(RUN / "report" / "results")             # what the report, the zoo and the app read back
    again = pipeline.Results.load(RUN / "report" / "results", names=["misalignment"])

The report (`cdviz report`), the before/after comparison, the zoo and the dashboard all go
through ``run``; nothing else calls an analysis function in sequence.

Adding an analysis is one module and one line here. The module holds

    def my_measure(store, *, misalignment=None, progress=None, seed=0) -> MyResult

(a dependency arrives as a keyword named after the analysis that computes it; ``progress(n)`` is
called with the items just done) and a frozen result dataclass with ``to_frame()``, ``to_dict()``
and ``from_dict()``. The line is

    register(Analysis("my_measure", my_measure, MyResult, depends=("misalignment",), passes=1))

after which ``pipeline.run(store, ["my_measure"])`` computes it, ``Results.save`` / ``load`` keep
it, and the dashboard can ask for it by name. Options reach a function only if its signature
names them: ``run(store, options={"my_measure": {"seed": 3}})`` for one analysis, ``common=
{"seed": 3}`` for every analysis that takes a ``seed``.

Saved results (``Results.save(DIR)``):

    DIR/results.json    {format: "cdviz-results", version: 1, cdviz_version, meta: {...},
                         results: [{name, type, file, arrays}] in the order they were computed}
                        written last, so a folder without it holds no results
    DIR/NAME.json       the result's to_dict(), with every long numeric list replaced by
                        {"__array__": key}
    DIR/NAME.npz        those lists as arrays (loading them is ~50x faster than parsing JSON numbers)
"""

from __future__ import annotations

import inspect
import json
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from analyses.attribution import AttributionResult, attribution
from analyses.common import usable_items
from analyses.compare import CompareResult, compare
from analyses.error_link import ErrorLinkResult, error_link, joint_family
from analyses.grounding import GroundingResult, grounding
from analyses.layer_correspondence import LayerCorrespondenceResult, layer_correspondence
from analyses.misalignment import MisalignmentResult, misalignment
from analyses.sinks import SinksResult, sinks
from analyses.targets import TargetsResult, targets
from cdviz import __version__
from cdviz.io import atomic_path, write_json_atomic, write_text_atomic
from cdviz.store import RunStore

FORMAT = "cdviz-results"
VERSION = 1
INDEX = "results.json"
MIN_ARRAY = 64  # numeric lists at least this long go to the .npz beside the JSON


@dataclass(frozen=True)
class Analysis:
    """One registered analysis.

    name:         what callers ask for; a dependent receives the result as a keyword of this name
    fn:           fn(store, *, <dependency>=None, progress=None, **options) -> result
    result:       the result class (``from_dict`` loads a saved one)
    depends:      analyses computed first and passed in
    passes:       streaming passes over the usable items (sizes progress bars)
    loads_models: loads the teacher and student from the manifest paths (never run by default)
    steps:        progress increments for ``n`` usable items and the analysis's options, when
                  they do not follow from ``passes``
    """

    name: str
    fn: Callable[..., Any]
    result: type
    depends: tuple[str, ...] = ()
    passes: int = 0
    loads_models: bool = False
    steps: Callable[[int, dict], int] | None = None

    def progress_steps(self, n_usable: int, options: dict) -> int:
        return self.steps(n_usable, options) if self.steps else self.passes * n_usable

    def accepts(self) -> set[str]:
        return set(inspect.signature(self.fn).parameters) - {"store"}


REGISTRY: dict[str, Analysis] = {}
"""name -> Analysis, in the order a full run computes them (dependencies always come first)."""


def register(analysis: Analysis, overwrite: bool = False) -> None:
    """Add ``analysis`` to the registry (``overwrite`` replaces one of the same name)."""
    if analysis.name in REGISTRY and not overwrite:
        raise ValueError(f"analysis {analysis.name!r} already exists; pass overwrite=True to replace it")
    unknown = [d for d in analysis.depends if d not in REGISTRY and d != analysis.name]
    if unknown:
        raise ValueError(f"analysis {analysis.name!r} depends on {unknown[0]!r}, which is not registered; "
                         f"register it first (registered: {', '.join(REGISTRY)})")
    REGISTRY[analysis.name] = analysis


register(Analysis("misalignment", misalignment, MisalignmentResult, passes=1))
register(Analysis("layer_correspondence", layer_correspondence, LayerCorrespondenceResult, passes=2))
register(Analysis("error_link", error_link, ErrorLinkResult, depends=("misalignment",)))
register(Analysis("grounding", grounding, GroundingResult, passes=1))
register(Analysis("sinks", sinks, SinksResult, passes=2))
register(Analysis("targets", targets, TargetsResult, depends=("misalignment", "error_link")))
register(Analysis("attribution", attribution, AttributionResult, loads_models=True,
                  steps=lambda n, options: 2 * min(n, int(options.get("n_items", 8)))))

PAIRS: dict[str, Analysis] = {
    "compare": Analysis("compare", compare, CompareResult, depends=("misalignment",)),
}
"""Analyses of two runs (before, after): each dependency is computed on both runs and passed as
``<name>_before`` / ``<name>_after``."""

# Tests whose q-values are corrected as one family when both are computed in the same run (the
# report prints them side by side); analyses that read the q-values come after the correction.
JOINT_FAMILY = ("error_link", "grounding")


def default_names() -> list[str]:
    """Every registered analysis that needs no model: what the report runs."""
    return [name for name, a in REGISTRY.items() if not a.loads_models]


def get(name: str) -> Analysis:
    """The registered analysis ``name``; KeyError listing the registered names otherwise."""
    if name not in REGISTRY:
        raise KeyError(f"unknown analysis {name!r}; registered: {', '.join(REGISTRY)}")
    return REGISTRY[name]


def plan(names: Sequence[str] | None = None, have: Sequence[str] = ()) -> list[str]:
    """The analyses to compute, in registry order: ``names`` (default: `default_names`) and
    their dependencies, less those in ``have``.

    Registry order puts grounding before targets, so when both members of JOINT_FAMILY are
    computed, `run` corrects them together before targets reads the error link's q-values.
    """
    wanted: list[str] = []

    def need(name: str) -> None:
        if name in wanted or name in have:
            return
        for dep in get(name).depends:
            need(dep)
        wanted.append(name)

    for name in (default_names() if names is None else names):
        need(name)
    return [n for n in REGISTRY if n in wanted]


def total_steps(store: RunStore, names: Sequence[str] | None = None, *, have: Sequence[str] = (),
                options: Mapping[str, dict] | None = None) -> int:
    """Total of the ``progress(n)`` increments ``run(store, names, ...)`` will make."""
    n = len(usable_items(store))
    return sum(get(a).progress_steps(n, dict((options or {}).get(a, {}))) for a in plan(names, have))


def run(store: RunStore, names: Sequence[str] | None = None, *, options: Mapping[str, dict] | None = None,
        common: Mapping[str, Any] | None = None, progress: Callable[[int], None] | None = None,
        results: Mapping[str, Any] | None = None, timings: dict | None = None) -> Results:
    """Compute ``names`` (default: every analysis that needs no model) over ``store``.

    Args:
        store: an open run.
        names: analyses to compute; their dependencies are computed first (or taken from ``results``).
        options: per analysis, keyword options for its function ({"misalignment": {"t2i_metrics": ...}}).
        common: options for every analysis whose function takes them ({"n_boot": 200, "seed": 1}).
        progress: called with the number of items just done (see `total_steps`).
        results: results already at hand (e.g. loaded), reused instead of computed.
        timings: if given, filled with seconds per analysis.

    Returns Results holding every computed and reused result.
    """
    out = Results(dict(results or {}), dict(getattr(results, "meta", {}) or {}))
    timings = timings if timings is not None else {}
    todo = plan(names, have=list(out))
    joint = all(n in todo for n in JOINT_FAMILY)
    for name in todo:
        analysis = get(name)
        accepts = analysis.accepts()
        kwargs = {k: v for k, v in (common or {}).items() if k in accepts}
        kwargs.update((options or {}).get(name, {}))
        kwargs.update({dep: out[dep] for dep in analysis.depends})
        if "progress" in accepts:
            kwargs["progress"] = progress
        t0 = time.perf_counter()
        out.add(name, analysis.fn(store, **kwargs))
        timings[name] = time.perf_counter() - t0
        if joint and not out.meta.get("joint_family") and all(n in out for n in JOINT_FAMILY):
            link, gr = joint_family(out["error_link"], out["grounding"])
            out.add("error_link", link)
            out.add("grounding", gr)
            out.meta["joint_family"] = list(JOINT_FAMILY)
    return out


def run_pair(before: RunStore, after: RunStore, name: str = "compare", *, before_results: Mapping | None = None,
             after_results: Mapping | None = None, options: Mapping[str, Any] | None = None,
             dependency_options: Mapping[str, dict] | None = None,
             progress: Callable[[int], None] | None = None) -> Results:
    """Compute the two-run analysis ``name`` (default the before/after comparison); its
    dependencies come from ``before_results`` / ``after_results`` or are computed with `run`
    (with ``dependency_options``, as `run`'s ``options``); ``options`` go to the analysis itself.

    Returns Results holding ``name`` only.
    """
    if name not in PAIRS:
        raise KeyError(f"unknown two-run analysis {name!r}; registered: {', '.join(PAIRS)}")
    analysis = PAIRS[name]
    have = {side: run(store, analysis.depends, results=given, options=dependency_options, progress=progress)
            for side, store, given in (("before", before, before_results), ("after", after, after_results))}
    kwargs = {f"{dep}_{side}": have[side][dep] for dep in analysis.depends for side in have}
    kwargs.update(options or {})
    return Results({name: analysis.fn(before, after, **kwargs)})


class Results(Mapping):
    """Analysis results by name (a mapping; ``add`` puts one in), with ``save`` / ``load``.

    ``meta`` holds how they were made (e.g. ``joint_family``: the analyses whose q-values were
    corrected together).
    """

    def __init__(self, results: dict[str, Any] | None = None, meta: dict | None = None):
        self._results: dict[str, Any] = dict(results or {})
        self.meta: dict = dict(meta or {})

    def __getitem__(self, name: str) -> Any:
        if name not in self._results:
            raise KeyError(f"no {name!r} result here; have: {', '.join(self._results) or 'none'}")
        return self._results[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._results)

    def __len__(self) -> int:
        return len(self._results)

    def add(self, name: str, result: Any) -> None:
        self._results[name] = result

    def save(self, directory: str | Path) -> Path:
        """Write every result to DIRECTORY (see the module docstring); returns it.

        Each file is written atomically and the index last, so an interrupted save leaves either
        the old index or the new one, never an index naming a missing file.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        entries = []
        for name, result in self._results.items():
            arrays: dict[str, np.ndarray] = {}
            body = _pack(result.to_dict(), arrays)
            if arrays:
                with atomic_path(directory / f"{name}.npz") as tmp:
                    with open(tmp, "wb") as f:
                        np.savez(f, **arrays)
            # Unsorted keys: a frame saved as {column: values} keeps its column order.
            write_text_atomic(directory / f"{name}.json", json.dumps(body, ensure_ascii=False))
            entries.append({"name": name, "type": f"{type(result).__module__}.{type(result).__qualname__}",
                            "file": f"{name}.json", "arrays": f"{name}.npz" if arrays else None})
        write_json_atomic(directory / INDEX, {"format": FORMAT, "version": VERSION, "cdviz_version": __version__,
                                              "results": entries, "meta": self.meta})
        return directory

    @classmethod
    def load(cls, directory: str | Path, names: Sequence[str] | None = None) -> Results:
        """Results saved in DIRECTORY (only ``names`` when given; a name not saved there is left out).

        Raises ValueError naming the folder when its index is missing or of another format.
        """
        directory = Path(directory)
        index_file = directory / INDEX
        try:
            index = json.loads(index_file.read_text())
        except (OSError, ValueError) as e:
            raise ValueError(f"{index_file}: no saved analysis results here ({e}); `cdviz report RUN` writes them")
        if index.get("format") != FORMAT or index.get("version") != VERSION:
            raise ValueError(f"{index_file}: format {index.get('format')!r} version {index.get('version')!r}, "
                             f"expected {FORMAT!r} version {VERSION}; rerun `cdviz report RUN`")
        out = cls(meta=index.get("meta") or {})
        for entry in index.get("results", []):
            name = entry["name"]
            if names is not None and name not in names:
                continue
            known = REGISTRY.get(name) or PAIRS.get(name)
            result_type = known.result if known else None
            if result_type is None:
                continue  # saved by an analysis this installation does not register
            body = json.loads((directory / entry["file"]).read_text())
            arrays = {}
            if entry.get("arrays"):
                with np.load(directory / entry["arrays"], allow_pickle=False) as npz:
                    arrays = {k: npz[k] for k in npz.files}
            out.add(name, result_type.from_dict(_unpack(body, arrays)))
        return out


def saved_names(directory: str | Path) -> list[str]:
    """Names of the results saved in DIRECTORY ([] when there are none)."""
    try:
        index = json.loads((Path(directory) / INDEX).read_text())
    except (OSError, ValueError):
        return []
    return [e["name"] for e in index.get("results", [])] if index.get("format") == FORMAT else []


def saved_result(directory: str | Path, name: str, newer_than: float = 0.0) -> Any | None:
    """The ``name`` result saved in DIRECTORY, or None when there is none, it is unreadable, or it
    was saved before ``newer_than`` (a modification time: it describes older data)."""
    try:
        if (Path(directory) / INDEX).stat().st_mtime < newer_than:
            return None
        return Results.load(directory, names=[name]).get(name)
    except (ValueError, OSError, KeyError):
        return None


def run_results_dir(root: str | Path) -> Path:
    """Where `cdviz report` saves a run's analysis results: RUN/report/results."""
    return Path(root) / "report" / "results"


def saved_run_result(root: str | Path, name: str) -> Any | None:
    """The run's ``name`` result from its report, when saved after the run's index was written."""
    index = Path(root) / "index.parquet"
    return saved_result(run_results_dir(root), name, index.stat().st_mtime if index.is_file() else 0.0)


def _pack(obj: Any, arrays: dict[str, np.ndarray]) -> Any:
    """``obj`` with each long list of plain numbers moved into ``arrays`` under a new key."""
    if isinstance(obj, dict):
        return {k: _pack(v, arrays) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        if len(obj) >= MIN_ARRAY and isinstance(obj[0], (int, float)) and not isinstance(obj[0], bool):
            arr = np.asarray(obj)
            if arr.dtype.kind in "if" and arr.ndim == 1:
                key = f"a{len(arrays)}"
                arrays[key] = arr
                return {"__array__": key}
        return [_pack(v, arrays) for v in obj]
    return obj


def _unpack(obj: Any, arrays: dict[str, np.ndarray]) -> Any:
    if isinstance(obj, dict):
        if set(obj) == {"__array__"}:
            return arrays[obj["__array__"]]
        return {k: _unpack(v, arrays) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_unpack(v, arrays) for v in obj]
    return obj


__all__ = ["Analysis", "JOINT_FAMILY", "PAIRS", "REGISTRY", "Results", "default_names", "get", "plan", "register", "run",
           "run_pair", "saved_names", "total_steps"]
