"""Two CPU processes (gloo DDP, launched the way the README launches GPUs) train like one process
with twice the micro-batch.

``accelerate launch --multi_gpu`` is accelerate's torchrun launcher; without GPUs (and with
``device = "cpu"`` in the recipe) each process trains on the CPU and DDP all-reduces over gloo.
(``accelerate launch --cpu --num_processes 2`` would start a single process: accelerate runs
multi-CPU jobs through mpirun.)
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from transformers import AutoProcessor, LlavaForConditionalGeneration

from cdviz.train import finetune, finetune_cli_args_to_config
from cdviz.train.tracking import read_metrics

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")  # peft calls a deprecated transformers alias
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220), "yellow": (230, 220, 20)}
STEPS = 3


def _data(root):
    """8 LLaVA-format records with one-word answers: every sample scores the same number of answer
    tokens, so the mean over one process's 2 samples equals the mean of two processes' means."""
    lines = []
    for i, (name, rgb) in enumerate(list(COLOURS.items()) * 2):
        img = Image.new("RGB", (32, 32), (128, 128, 128))
        img.paste(rgb, (2 + 2 * i, 6, 18 + 2 * i, 22))
        img.save(root / f"img{i}.png")
        lines.append({"id": f"q{i}", "image": f"img{i}.png", "conversations": [
            {"from": "human", "value": "<image>\nWhat colour is the square ?"}, {"from": "gpt", "value": name}]})
    path = root / "data.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


def _recipe(path, pair_dirs, data, out, batch_size):
    teacher, student = pair_dirs
    path.write_text(f"""
teacher = "{teacher}"
student = "{student}"
out = "{out}"
data = "{data}"
stages = ["dft"]
batch_size = {batch_size}
device = "cpu"
max_grad_norm = 0.0            # no clipping: AdamW's first moment after step 1 is exactly 0.1 x gradient
checkpoint_every = 1
keep_checkpoints = 0
progress = false

[stage.dft]
steps = {STEPS}
lr = 3e-3
warmup_ratio = 0.0
lora_dropout = 0.0             # dropout masks would differ between one process and two
""")
    return path


def _first_moments(run, rank):
    state = torch.load(run / "dft" / "checkpoints" / "step-000001" / f"optimizer.rank{rank}.pt", weights_only=True)
    return [s["exp_avg"] for _, s in sorted(state["state"].items())]


def test_two_processes_train_like_one_with_twice_the_batch(pair_dirs, tmp_path):
    data = _data(tmp_path)
    two = tmp_path / "two"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0",
           "-m", "cdviz.train", str(_recipe(tmp_path / "two.toml", pair_dirs, data, two, batch_size=1))]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""})
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count(str(two / "model")) == 2  # both ranks finished the run

    one = tmp_path / "one"
    finetune(finetune_cli_args_to_config(recipe=_recipe(tmp_path / "one.toml", pair_dirs, data, one, batch_size=2)))

    # It trains: every step logged, finite losses, the merged student differs from the input and reloads.
    rows_two, rows_one = read_metrics(two / "dft" / "metrics.jsonl"), read_metrics(one / "dft" / "metrics.jsonl")
    assert [r["step"] for r in rows_two] == list(range(1, STEPS + 1))
    assert rows_two[0]["epoch"] == pytest.approx(2 / 8)  # one micro-batch of 1 on each of 2 ranks
    assert all(math.isfinite(r["loss"]) and r["loss/vat"] > 0 for r in rows_two)
    final = two / "model"
    LlavaForConditionalGeneration.from_pretrained(final)
    AutoProcessor.from_pretrained(final)
    before = load_file(str(pair_dirs[1] / "model.safetensors"))
    after = load_file(str(final / "model.safetensors"))
    assert any(not torch.equal(before[k], after[k]) for k in before if "language_model" in k)

    # Step 1 is the same step: losses averaged over the ranks, and DDP's averaged gradient.
    for key in ("loss/ce", "loss/kd", "loss/vat"):
        assert rows_two[0][key] == pytest.approx(rows_one[0][key], rel=1e-5, abs=1e-7), key
    rank0, rank1, single = _first_moments(two, 0), _first_moments(two, 1), _first_moments(one, 0)
    assert len(rank0) == len(single) > 0
    for a, b, c in zip(rank0, rank1, single):
        assert torch.equal(a, b)  # the all-reduce leaves every rank with the same gradient
        torch.testing.assert_close(a, c, atol=1e-7, rtol=1e-4)
    assert any(m.abs().max() > 1e-5 for m in single)  # real gradients, not zeros

    # And the runs stay together: the merged models after all steps agree.
    single_model = load_file(str(one / "model" / "model.safetensors"))
    for k in after:
        torch.testing.assert_close(after[k], single_model[k], atol=2e-5, rtol=1e-4, msg=k)
