"""The registry of native-format probe importers: ``{name: loader}``.

A loader is ``fn(path: Path, **options) -> Iterable[ProbeItem]`` that reads a local copy of a
benchmark in its native format and never downloads anything.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable

from cdviz.types import ProbeItem

Loader = Callable[..., Iterable[ProbeItem]]
SOURCES: dict[str, Loader] = {}


def register_source(name: str, fn: Loader, overwrite: bool = False) -> None:
    _ensure_builtin()
    if name in SOURCES and not overwrite:
        raise KeyError(f"probe source {name!r} is already registered; pass overwrite=True to replace it")
    SOURCES[name] = fn


def list_sources() -> list[str]:
    _ensure_builtin()
    return sorted(SOURCES)


def get_source(name: str) -> Loader:
    _ensure_builtin()
    if name not in SOURCES:
        raise KeyError(f"unknown probe source {name!r}; available: {', '.join(sorted(SOURCES))}")
    return SOURCES[name]


def load_source(name: str, path: str | Path, **options) -> Iterable[ProbeItem]:
    return get_source(name)(Path(path), **options)


def _ensure_builtin() -> None:
    # The built-in loaders live in cdviz.probes.native; importing it here (not at package import)
    # keeps `import cdviz.probes` light. setdefault: a built-in replaced with overwrite=True stays replaced.
    from cdviz.probes.native import BUILTIN

    for name, fn in BUILTIN.items():
        SOURCES.setdefault(name, fn)
