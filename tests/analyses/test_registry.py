"""The analyses registry: explicit dict, register / list / get with an error listing names."""

from __future__ import annotations

import pytest

import analyses
from analyses import ANALYSES, get_analysis, list_analyses, register_analysis


def test_registry_lists_every_analysis():
    assert analyses.__file__ is not None and analyses.__file__.endswith("analyses/__init__.py")
    assert list_analyses() == sorted(["attribution", "error_link", "grounding", "layer_correspondence",
                                      "misalignment", "sinks", "targets"])


def test_get_unknown_lists_names():
    with pytest.raises(KeyError, match="registered: attribution, error_link"):
        get_analysis("nope")


def test_register_refuses_overwrite_unless_asked():
    fn = ANALYSES["sinks"]
    with pytest.raises(ValueError, match="already exists"):
        register_analysis("sinks", lambda store: None)
    try:
        register_analysis("sinks", len, overwrite=True)
        assert get_analysis("sinks") is len
    finally:
        register_analysis("sinks", fn, overwrite=True)
    register_analysis("custom_test_analysis", len)
    try:
        assert "custom_test_analysis" in list_analyses()
    finally:
        del ANALYSES["custom_test_analysis"]
