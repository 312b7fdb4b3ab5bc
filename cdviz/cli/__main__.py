"""``python -m cdviz.cli`` (what torchrun / accelerate launch run): the ``cdviz`` command."""

from cdviz.cli import app

app()
