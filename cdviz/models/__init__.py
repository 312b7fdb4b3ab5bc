"""Model adapters: one per HF architecture, in the explicit ``ADAPTERS`` dict.

    load_model(DIR or "org/name[@rev]") -> Adapter(model, processor)   spans, grids, pieces, layers, head counts
    resolve_model(DIR or "org/name[@rev]") -> ModelRef(path, id, commit, weights_sha256)
    load_pair(TEACHER, STUDENT)                      + the checks distillation needs
"""

from cdviz.models.base import LETTERS, Adapter, AdapterError, Batch, Piece, format_choice_prompt, primary_piece
from cdviz.models.hub import ModelRef, resolve_model
from cdviz.models.loading import (
    ADAPTERS,
    PairReport,
    check_pair,
    list_adapters,
    load_model,
    load_pair,
    register_adapter,
)

__all__ = [
    "ADAPTERS", "LETTERS", "Adapter", "AdapterError", "Batch", "ModelRef", "PairReport", "Piece", "check_pair",
    "format_choice_prompt", "list_adapters", "load_model", "load_pair", "primary_piece", "register_adapter",
    "resolve_model",
]
