"""Shared fixtures: tiny random checkpoints of every supported architecture and a small shapes
probe set, built once per test session from configs (nothing is downloaded)."""

from __future__ import annotations

import pytest
import torch

from cdviz.models.tiny import TINY_ARCHS, build_tiny

# Qwen2-VL's patch is 14 px with a 2x2 merge, so its images need to be larger for a 2x2 grid.
TINY_IMAGE_SIZE = {"llava": 32, "qwen2vl": 56, "paligemma": 32}


@pytest.fixture
def one_thread():
    """Tiny models run faster on one thread, and a busy 2-core machine stalls multi-threaded ops."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """``tiny_model_dir(arch)`` -> a saved tiny checkpoint directory (built once per arch)."""
    built = {}

    def get(arch: str):
        if arch not in built:
            built[arch] = build_tiny(arch, tmp_path_factory.mktemp(f"tiny-{arch}"), image_size=TINY_IMAGE_SIZE[arch])
        return built[arch]

    return get


@pytest.fixture(scope="session")
def shapes_probes(tmp_path_factory):
    from cdviz.probes.shapes import make_shapes

    return make_shapes(tmp_path_factory.mktemp("shapes"), n=60, seed=3, image_size=64)


@pytest.fixture(params=TINY_ARCHS)
def arch(request):
    return request.param
