"""cdviz: where does a distilled student look, compared with its teacher, and can we fix it?

    probe set (shapes world | SugarCrepe | Winoground | ARO | What'sUp | JSONL)   cdviz/probes
      -> model pair (teacher, student) through an adapter per HF architecture    cdviz/models
      -> evaluate: two-choice letter logits, both orders                          cdviz/evaluate.py
      -> record: answer logits + the needed attention blocks in one forward       cdviz/record
      -> run store (manifest + fp16 safetensors shards + parquet index)           cdviz/store.py
      -> analyses (misalignment, layer map, error link, ...)                      analyses/
      -> report (HTML, parquet, summary.json) and dashboard                       cdviz/report, app/
      -> finetune (DPT / DFT / SFT with KD + VAT + TAF) on the flagged layers     cdviz/train
      -> record again -> compare before / after

Around the flow, and never imported by it: the ``cdviz`` command (cdviz/cli), the demo-model
builder (cdviz/zoo), benchmarks (cdviz/bench), diagnostics (cdviz/diagnostics) and synthetic run
stores with a planted answer (cdviz/synthetic). Imports point down the flow: tests/test_layering.py.
"""

__version__ = "0.1.0"
