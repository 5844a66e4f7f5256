"""``spkrobust bench``: the quick run writes every key; ratios are positive numbers.

No timing thresholds: the machine may be shared, so only the shape of the output is checked."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

from spkrobust.tools import bench

from spkrobust.tools import bench_dryrun

RATIO_KEYS = ("snn_step_ratio_T8", "snn_step_ratio_T32", "snn_grad_ratio_T8", "snn_grad_ratio_T32",
              "fgsm_sweep_ratio")


def _positive(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0


@pytest.mark.slow
def test_quick_bench_writes_all_keys(tmp_path, repo):
    out = tmp_path / "bench.json"
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    r = subprocess.run([sys.executable, "-m", "spkrobust", "bench", "--quick", "--json", str(out)],
                       cwd=repo, capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(out.read_text())
    for k in RATIO_KEYS:
        assert _positive(res[k]), (k, res[k])
    assert "snn_grad_ratio_T8" in r.stdout  # the table is printed too
    # dry-run: a job count and its duration, or null with the reason
    if res["dryrun_jobs"] is None:
        assert res["dryrun_seconds"] is None and res.get("dryrun_error")
    else:
        assert isinstance(res["dryrun_jobs"], int) and res["dryrun_jobs"] > 0
        assert _positive(res["dryrun_seconds"])
    # cost table: ANN row, then IF and LIF rows with positive ratios
    rows = res["table"]
    assert rows[0]["model"] == "ann" and _positive(rows[0]["train_ms_per_img"])
    assert {r["model"] for r in rows[1:]} == {"snn_if", "snn_lif"}
    for row in rows[1:]:
        for k in ("train_ms_per_img", "infer_ms_per_img", "train_ratio", "infer_ratio"):
            assert _positive(row[k]), (row, k)
    assert all(_positive(v) for k, v in res["pgd"].items() if k.endswith("img_per_s"))
    assert len([k for k in res["pgd"] if k.endswith("img_per_s")]) == 2
    mem = res["memory"]
    assert len(mem) >= 2 and all(m["peak_delta_mib"] is not None and m["peak_delta_mib"] >= 0 for m in mem)
    assert res["threads"] >= 1 and res["batch"] > 0 and res["fused_impl"]


def test_best_time_interleaves_and_keeps_minimum():
    calls = []
    t = bench.best_time({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, repeats=2, warmup=1,
                        calls={"a": 2})
    assert calls == ["a", "a", "b"] * 3  # rounds of (2 x a, 1 x b): 1 warm-up + 2 timed
    assert set(t) == {"a", "b"} and all(v >= 0 for v in t.values())


def test_big_config_grows_the_grid():
    base = {"datasets": ["cifar10"], "models": {"ann": {"kind": "ann"}, "snn": {"kind": "snn", "T": 8}}}
    big = bench_dryrun._big_config(base)
    assert bench_dryrun._big_config(base, 1)["replicas"] == 3
    assert len(big["datasets"]) == 3 and big["models"]["snn"]["sweep"] == {"T": [25, 50, 100]}
    assert base["datasets"] == ["cifar10"]  # the input is not modified


def test_dryrun_without_snakefile_is_null_with_reason(tmp_path, monkeypatch):
    monkeypatch.setattr(bench_dryrun, "REPO", tmp_path)
    res = bench_dryrun.snakemake_dryrun(lambda s: None)
    assert res["dryrun_jobs"] is None and res["dryrun_seconds"] is None
    assert "Snakefile" in res["dryrun_error"]
