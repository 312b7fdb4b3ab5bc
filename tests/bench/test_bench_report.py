"""bench_report returns the documented timings (values are not asserted: no timed tests)."""

from __future__ import annotations

from cdviz.bench.report import bench_report


def test_bench_report_keys(tmp_path):
    r = bench_report(n_items=40, n_boot=10, n_perm=10, shard_size=20, workdir=tmp_path)
    assert set(r) == {"n_items", "make_store_s", "phases", "report_s", "rss_before_mb", "peak_rss_mb"}
    assert {"misalignment", "layer_correspondence", "error_link", "grounding", "sinks", "html"} <= set(r["phases"])
    assert r["peak_rss_mb"] >= r["rss_before_mb"] > 0
    assert (tmp_path / "report" / "summary.json").is_file()
