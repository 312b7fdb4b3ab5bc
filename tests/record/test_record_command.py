"""The resume command a run's manifest gives back carries every non-default recording option."""

from __future__ import annotations

import re
from dataclasses import asdict
from pathlib import Path

from typer.testing import CliRunner

from cdviz.cli import app
from cdviz.record.recorder import RecordOptions
from cdviz.store import record_command


def _manifest(**options) -> dict:
    opts = {**asdict(RecordOptions()), "layers": None, **options}
    return {"models": {"teacher": {"path": "t"}, "student": {"path": "s"}}, "probes": {"path": "p"}, "options": opts}


def test_defaults_give_the_bare_command():
    assert record_command(_manifest(), Path("runs/x")) == "cdviz record --teacher t --student s --probes p --out runs/x"


def test_pieces_match_record_and_store_block_are_carried():
    cmd = record_command(_manifest(protocol="match", match_record="all", pieces=True, store_block=True), Path("r"))
    assert "--protocol match" in cmd and "--match-record all" in cmd
    assert " --pieces" in cmd and " --store-block" in cmd


def test_every_flag_of_the_resume_command_is_a_record_option():
    cmd = record_command(_manifest(protocol="match", match_record="all", pieces=True, store_block=True,
                                   layers=[0, 2], queries="all", dtype="bfloat16"), Path("r"))
    help_text = CliRunner().invoke(app, ["record", "--help"], terminal_width=200).output
    flags = set(re.findall(r"--[a-z-]+", cmd))
    assert flags and all(flag in help_text for flag in flags), flags
