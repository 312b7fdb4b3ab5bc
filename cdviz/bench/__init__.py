"""Benchmarks: what cdviz costs and how reliably it finds what it looks for, measured side by side.

    record.py     cdviz bench record    recording vs a plain SDPA forward vs eager attention
    train.py      cdviz bench train     a training step with VAT, the cdviz way and the eager way
    report.py     cdviz bench report    `cdviz report` phase by phase on a synthetic store
    app.py        cdviz bench app       the dashboard's time to first render on a large run
    targets.py    cdviz bench targets   detection power of the fine-tune target rule on planted stores
    gpu_check.py  cdviz bench gpu       the one-shot GPU check (make gpu-check)
    stats.py                            analyses.stats' hand-written AUC statistic vs scipy's

report, targets, train and gpu_check also run as ``python -m cdviz.bench.<module>``; stats runs only
that way. Nothing in the flow imports them.
"""
