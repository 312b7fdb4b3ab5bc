"""Model adapters: one per HF architecture, in the explicit ``ADAPTERS`` dict.

    load_model(DIR) -> Adapter(model, processor)   spans, grids, layers, head counts
    load_pair(TEACHER, STUDENT)                      + the checks distillation needs
"""

from cdviz.models.base import LETTERS, Adapter, AdapterError, Batch, format_choice_prompt
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
    "ADAPTERS", "LETTERS", "Adapter", "AdapterError", "Batch", "PairReport", "check_pair",
    "format_choice_prompt", "list_adapters", "load_model", "load_pair", "register_adapter",
]
