"""The GPU path: SpikingJelly's CuPy neurons against its torch backend, the tiny CIFAR-10 preset
with ``device: auto`` and ``backend: cupy`` through Snakemake, ``spkrobust bench --device cuda``
and ``spkrobust selfcheck --gpu``.

Tests marked ``gpu`` need a CUDA GPU and CuPy; elsewhere they are skipped with the reason (and
counted as skipped). On a GPU node: ``python -m pytest -m gpu -ra``. The CUDA code of the studies'
surrogate (what the CuPy kernels compile) is also checked on the CPU, compiled as C++."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
import yaml
from helpers.cifar_run import TINY_CIFAR10, check_tiny_cifar10_results, run_tiny_cifar10
from helpers.wfutil import copy_workflow

from spkrobust.config.expand import eps_label
from spkrobust.nets.neurons import cupy_available, make_surrogate, piecewise_linear_grad
from spkrobust.tools.selfcheck import TOL, backend_agreement


def _no_gpu_reason() -> str | None:
    if not torch.cuda.is_available():
        return f"no CUDA GPU visible to torch {torch.__version__}"
    if not cupy_available():
        return "CuPy is not installed (install the cupy wheel matching torch's CUDA)"
    return None


gpu_here = pytest.mark.skipif(_no_gpu_reason() is not None, reason=str(_no_gpu_reason()))


def _run(*args, timeout=900, **kw) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.run([sys.executable, "-m", "spkrobust", *args], check=False, capture_output=True, text=True,
                          timeout=timeout, env=env, **kw)


# ---- on the CPU: the surrogate's CUDA code computes the surrogate ---------------------------------

@pytest.mark.skipif(shutil.which("g++") is None, reason="no C++ compiler (g++) to compile the CUDA code as C++")
def test_piecewise_linear_cuda_code_computes_the_surrogate(tmp_path):
    """``PiecewiseLinear.cuda_codes`` (float) compiled as C++ gives ``alpha/θ·max(0, 1-|x|/θ)``."""
    xs = torch.linspace(-3, 3, 121).tolist()
    body = []
    thresholds = (1.0, 0.37, 2.5)
    for th in thresholds:
        code = make_surrogate("linear", th).cuda_codes(y="const float g", x="over_th", dtype="float")
        body.append("for (int i = 0; i < n; ++i) { const float over_th = xs[i]; " + code + ' printf("%.9g\\n", g); }')
    src = ("#include <cmath>\n#include <cstdio>\n#include <algorithm>\nusing std::max;\nint main() {\n"
           f"const float xs[] = {{{', '.join(f'{v!r}f' for v in xs)}}}; const int n = {len(xs)};\n"
           + "\n".join(body) + "\nreturn 0; }\n")
    (tmp_path / "sg.cpp").write_text(src)
    subprocess.run(["g++", "-O1", "-o", str(tmp_path / "sg"), str(tmp_path / "sg.cpp")], check=True)
    out = subprocess.run([str(tmp_path / "sg")], capture_output=True, text=True, check=True).stdout.split()
    got = torch.tensor([float(v) for v in out]).view(3, -1)
    x = torch.tensor(xs, dtype=torch.float32)
    for row, th in zip(got, thresholds):
        sg = make_surrogate("linear", th)
        assert torch.allclose(row, sg.derivative(x), atol=1e-6, rtol=1e-6), th
        assert torch.equal(sg.derivative(x), piecewise_linear_grad(x, 0.3, th))  # alpha 0.3, width θ
        assert float(row.max()) == pytest.approx(0.3 / th, rel=1e-6) and float(row.min()) == 0.0


def test_backend_agreement_fused_vs_torch_on_cpu():
    """The comparison the GPU tests use, on the CPU backends: it sees spikes at a useful rate."""
    for neuron, leak in (("if", 1.0), ("lif", 0.99)):
        r = backend_agreement(neuron, leak, "fused", "torch", "cpu")
        assert 0.1 < r["spike_rate"] < 0.9, r
        assert r["spikes_differ"] == 0 and r["grad_x_maxdiff"] < TOL, r
        assert r["ok"], r


def test_selfcheck_runs_and_reports(tmp_path):
    """`spkrobust selfcheck --gpu` on this machine: CPU checks pass; GPU checks pass where there is a
    GPU with CuPy, and are reported as skipped with the reason where there is not."""
    out = tmp_path / "selfcheck.json"
    p = _run("selfcheck", "--gpu", "--json", str(out), timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    res = json.loads(out.read_text())
    by = {c["name"]: c for c in res["checks"]}
    assert {by[n]["status"] for n in ("packages", "neuron-fused", "snn-cpu")} == {"PASS"}
    gpu = {c["name"]: c["status"] for c in res["checks"] if c["gpu"]}
    assert set(gpu) == {"cuda", "cupy", "neuron-cupy", "snn-gpu"}
    if not torch.cuda.is_available():
        assert set(gpu.values()) == {"SKIP"} and all(by[n]["detail"] for n in gpu)
    elif not cupy_available():
        assert gpu == {"cuda": "PASS", "cupy": "SKIP", "neuron-cupy": "SKIP", "snn-gpu": "PASS"}
    else:
        assert set(gpu.values()) == {"PASS"}, res["checks"]
    assert f"{res['pass']} passed, 0 failed, {res['skip']} skipped" in p.stdout
    for name in by:
        assert name in p.stdout


# ---- on a GPU -------------------------------------------------------------------------------------

@pytest.mark.gpu
@gpu_here
@pytest.mark.parametrize("neuron,leak", [("if", 1.0), ("lif", 0.99), ("lif", 0.5)])
@pytest.mark.parametrize("T", [1, 8, 32])
def test_cupy_neurons_match_torch_backend(neuron, leak, T):
    """The studies' surrogate on SpikingJelly's CuPy kernels: spikes identical to the torch backend,
    input and weight gradients within 1e-5."""
    r = backend_agreement(neuron, leak, "cupy", "torch", "cuda", T=T, batch=32, n_in=64, n_out=512, seed=T)
    assert 0.05 < r["spike_rate"] < 0.95, r
    assert r["spikes_differ"] == 0, r
    assert r["ok"], r  # input and weight gradients within 1e-5 (relative to their scale when above 1)


@pytest.mark.gpu
@gpu_here
def test_selfcheck_gpu_passes(tmp_path):
    out = tmp_path / "selfcheck.json"
    p = _run("selfcheck", "--gpu", "--json", str(out), timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    res = json.loads(out.read_text())
    assert res["fail"] == 0 and res["skip"] == 0, p.stdout


@pytest.mark.gpu
@gpu_here
def test_bench_on_cuda_prints_its_ratios(tmp_path, repo):
    out = tmp_path / "bench.json"
    p = _run("bench", "--device", "cuda", "--quick", "--skip", "dryrun", "--json", str(out), cwd=repo, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res["device"] == "cuda" and res["gpu"]
    for k in ("snn_step_ratio_T8", "snn_step_ratio_T32", "snn_grad_ratio_T8", "snn_grad_ratio_T32", "fgsm_sweep_ratio"):
        assert isinstance(res[k], float) and res[k] > 0, (k, res[k])
        assert k in p.stdout
    assert {row["backend"] for row in res["table"][1:]} == {"cupy"}  # auto on CUDA with CuPy


@pytest.mark.gpu
@pytest.mark.slow
@gpu_here
def test_tiny_cifar10_on_gpu_with_cupy(cifar_root, tmp_path):
    """The tiny CIFAR-10 preset with ``device: auto`` (→ CUDA) and the SNNs on ``backend: cupy``:
    training, conversion and crafting run on the GPU (a CuPy neuron cannot run on CPU tensors)."""
    wd = copy_workflow(tmp_path / "wf")
    cfg = yaml.safe_load((wd / TINY_CIFAR10).read_text())
    cfg["device"] = "auto"
    for name in ("snn_conv", "snn_bp"):
        cfg["models"][name]["backend"] = "cupy"
    (wd / TINY_CIFAR10).write_text(yaml.safe_dump(cfg, sort_keys=False))
    run_tiny_cifar10(wd, cifar_root)
    metrics = check_tiny_cifar10_results(wd)
    assert all(m["device"].startswith("cuda") for m in metrics.values()), {k: m["device"] for k, m in metrics.items()}
    assert metrics["snn_bp"]["meta"]["backend"] == "cupy" and metrics["snn_conv"]["meta"]["backend"] == "cupy"
    assert (wd / f"results/cifar10/adv/snn_bp/r1/pgd/{eps_label(cfg['eps'][0])}.pt").exists()
