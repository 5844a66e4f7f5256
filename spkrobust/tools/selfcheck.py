"""``spkrobust selfcheck [--gpu]``: does this installation compute what the pipeline needs?

Runs in well under a minute, needs no network and no dataset (random inputs), and prints one line
per check: ``PASS``, ``FAIL`` (with the reason) or ``SKIP`` (with the reason). Exit status 1 when a
check failed, else 0. Run it after installing, and on a GPU node with ``--gpu`` before a cluster run
(``device: auto`` then trains and crafts on CUDA with SpikingJelly's CuPy neurons).

* ``packages``: torch, torchvision, SpikingJelly 0.0.0.0.14, torchattacks and Snakemake import;
* ``neuron-fused``: the fused CPU neuron against SpikingJelly's torch backend (see
  :func:`backend_agreement`);
* ``snn-cpu``: a VGG5 SNN on 3×32×32 (LIF 0.99, Poisson, T=4): a training step and PGD crafting;

with ``--gpu`` (otherwise skipped; skipped with the reason where there is no CUDA GPU or no CuPy):

* ``cuda``: torch sees a GPU; ``device: auto`` picks it;
* ``cupy``: CuPy runs on it; ``backend: auto`` resolves to ``cupy`` there;
* ``neuron-cupy``: SpikingJelly's CuPy neurons against its torch backend on the GPU;
* ``snn-gpu``: the VGG5 SNN step and PGD crafting on the GPU with ``backend: auto`` (CuPy where
  installed, as the pipeline would run).
"""
from __future__ import annotations

import argparse
import importlib
import time

from spkrobust.config.vocab import SELFCHECK_FORMAT

TOL = 1e-5  # gradients: max |difference| <= TOL * max(1, max |reference|)
NEURONS = (("if", 1.0), ("lif", 0.99))  # the studies' IF and LIF (leak 0.99)


class Skip(Exception):
    """A check that cannot run here (the message says why)."""


class Failed(Exception):
    """A check that ran and found a problem (the message says which)."""


def backend_agreement(neuron_type: str, leak: float, backend: str, reference: str = "torch", device="cpu",
                      T: int = 8, batch: int = 16, n_in: int = 64, n_out: int = 256, seed: int = 0) -> dict:
    """One linear layer followed by a multistep IF/LIF layer (threshold 1, the studies'
    piecewise-linear surrogate) run with two neuron backends on the same inputs.

    Inputs and weights are small multiples of powers of two, so the layer's input currents are
    exact whatever the summation order; a random upstream gradient is back-propagated. Returns the
    number of differing spikes, the spike rate and the largest differences of the input and weight
    gradients, and ``ok`` (spikes identical, gradients within :data:`TOL`)."""
    import torch

    from spkrobust.nets.neurons import SpikingLayer

    dev = torch.device(device)
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 9, (T, batch, n_in), generator=g) / 8.0  # in [0, 1], steps of 1/8
    w = torch.randint(-8, 11, (n_out, n_in), generator=g) / 64.0  # mean drive ~0.6 threshold per step
    up = torch.randn(T, batch, n_out, generator=g)
    out = {}
    for be in (reference, backend):
        layer = SpikingLayer(neuron_type, leak, 1.0, "linear", be).to(dev)
        xi, wi = x.to(dev).requires_grad_(), w.to(dev).requires_grad_()
        s = layer(xi @ wi.t())
        gx, gw = torch.autograd.grad(s, (xi, wi), up.to(dev))
        out[be] = (s.detach().cpu(), gx.cpu(), gw.cpu())
    (s0, gx0, gw0), (s1, gx1, gw1) = out[reference], out[backend]

    def diff(a, b):
        return float((a - b).abs().max()), TOL * max(1.0, float(b.abs().max()))

    (dx, tx), (dw, tw) = diff(gx1, gx0), diff(gw1, gw0)
    differ = int((s0 != s1).sum())
    return {"neuron": neuron_type, "leak": leak, "backend": backend, "reference": reference, "device": str(dev),
            "n": s0.numel(), "spike_rate": float(s0.mean()), "spikes_differ": differ, "grad_x_maxdiff": dx,
            "grad_w_maxdiff": dw, "ok": differ == 0 and dx <= tx and dw <= tw}


def _neurons(backend: str, device: str) -> str:
    parts, bad = [], []
    for neuron_type, leak in NEURONS:
        r = backend_agreement(neuron_type, leak, backend, "torch", device)
        label = "IF" if neuron_type == "if" else f"LIF {leak}"
        text = (f"{label}: {r['spikes_differ']} of {r['n']} spikes differ (rate {r['spike_rate']:.2f}), "
                f"max |d grad x| {r['grad_x_maxdiff']:.1e}, |d grad W| {r['grad_w_maxdiff']:.1e}")
        (parts if r["ok"] else bad).append(text)
    if bad:
        raise Failed(f"{backend} vs torch on {device}: " + "; ".join(bad))
    return f"{backend} = torch on {device} (tolerance {TOL:g}): " + "; ".join(parts)


def snn_step(device: str, backend: str = "auto") -> str:
    """VGG5 SNN (LIF 0.99, Poisson, T=4, balanced thresholds) on 3×32×32: one training step, then PGD-2 crafting through
    :func:`spkrobust.attacks.registry.craft`; gradients must be finite and reach the input."""
    import torch
    import torch.nn.functional as F

    from spkrobust.attacks.registry import craft
    from spkrobust.training.convert import threshold_balance
    from spkrobust.nets.models import build_model, default_meta

    torch.manual_seed(0)
    meta = default_meta("snn", "vgg5", 3, 32, 10, [0.49, 0.48, 0.45], [0.25, 0.24, 0.26], neuron="lif", leak=0.99,
                        T=4, backend=backend, encoder="poisson")
    model = build_model(meta, device=device).to(device)
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(8, 3, 32, 32, generator=g), torch.randint(0, 10, (8,), generator=g)
    threshold_balance(model, x.to(device), scale=0.7)  # as conversion does; thresholds 1 leave it silent
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    model.train()
    t0 = time.perf_counter()
    loss = F.cross_entropy(model(x.to(device)), y.to(device))
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    if not torch.isfinite(loss) or any(gr is None or not torch.isfinite(gr).all() for gr in grads):
        raise Failed(f"training step on {device}: non-finite loss or weight gradient")
    opt.step()
    model.eval()
    eps = 8 / 255
    x_adv, info = craft(model, x, y, {"type": "pgd", "steps": 2, "alpha": "0.5*eps", "random_start": False}, eps,
                        batch_size=8, seed=0, device=device)
    if not float((x_adv - x).abs().max()) > eps / 2:
        raise Failed(f"PGD on {device} left the input unchanged (zero input gradient: {info['zero_grad_frac']:.2f})")
    return (f"VGG5 SNN on {device}, neuron backend {model.backend}: train step loss {loss.item():.3f}, "
            f"PGD-2 max |delta| {float((x_adv - x).abs().max()) * 255:.1f}/255, {time.perf_counter() - t0:.1f} s")


def check_packages() -> str:
    from importlib.metadata import version

    found = []
    for name in ("torch", "torchvision", "spikingjelly", "torchattacks", "snakemake"):
        try:
            importlib.import_module(name)
        except Exception as e:  # noqa: BLE001
            raise Failed(f"{name} does not import: {type(e).__name__}: {e}") from None
        found.append(f"{name} {version(name)}")
    sj = version("spikingjelly")
    if sj != "0.0.0.0.14":
        raise Failed(f"spikingjelly {sj} installed; the pipeline is written for 0.0.0.0.14")
    return ", ".join(found)


def check_cuda() -> str:
    import torch

    from spkrobust.config.options import resolve_device

    if not torch.cuda.is_available():
        raise Skip(f"no CUDA GPU visible to torch {torch.__version__} (built for CUDA {torch.version.cuda or 'none'})")
    dev = resolve_device("auto")
    if dev.type != "cuda":
        raise Failed(f"device auto picked {dev}, not the GPU")
    return f"{torch.cuda.get_device_name(0)}, torch CUDA {torch.version.cuda}; device auto -> {dev}"


def check_cupy() -> str:
    import torch

    from spkrobust.nets.neurons import resolve_backend

    check_cuda()
    try:
        import cupy
    except Exception as e:  # noqa: BLE001
        raise Skip(f"CuPy does not import ({type(e).__name__}: {e}); install the wheel matching torch's "
                   f"CUDA {torch.version.cuda}, e.g. pip install cupy-cuda12x") from None
    a = cupy.arange(10, dtype=cupy.float32)
    if float((a * 2).sum()) != 90.0:
        raise Failed("CuPy computed a wrong sum on the GPU")
    be = resolve_backend("auto", "cuda")
    if be != "cupy":
        raise Failed(f"neuron backend auto resolves to {be!r} on CUDA, not 'cupy'")
    return f"CuPy {cupy.__version__}; neuron backend auto on cuda -> cupy"


def _after(prerequisite, fn):
    """``fn`` once ``prerequisite`` passed (its Skip or Failed is this check's skip reason)."""
    def wrapped():
        try:
            prerequisite()
        except (Skip, Failed) as e:
            raise Skip(str(e)) from None
        return fn()
    return wrapped


CHECKS = [
    ("packages", False, check_packages),
    ("neuron-fused", False, lambda: _neurons("fused", "cpu")),
    ("snn-cpu", False, lambda: snn_step("cpu", "auto")),
    ("cuda", True, check_cuda),
    ("cupy", True, check_cupy),
    ("neuron-cupy", True, _after(check_cupy, lambda: _neurons("cupy", "cuda"))),
    # what device auto / backend auto run on this node: CuPy neurons, or the torch loops without CuPy
    ("snn-gpu", True, _after(check_cuda, lambda: snn_step("cuda", "auto"))),
]


def run_checks(gpu: bool, log=print) -> list[dict]:
    """Run every check (GPU ones only when ``gpu``); one dict per check: name, status, detail."""
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)  # torch.jit.script deprecation in SpikingJelly
    results = []
    for name, needs_gpu, fn in CHECKS:
        t0 = time.perf_counter()
        if needs_gpu and not gpu:
            status, detail = "SKIP", "GPU checks not requested (add --gpu)"
        else:
            try:
                status, detail = "PASS", fn()
            except Skip as e:
                status, detail = "SKIP", str(e)
            except Failed as e:
                status, detail = "FAIL", str(e)
            except Exception as e:  # noqa: BLE001  (an unexpected error is a failed check, not a crash)
                status, detail = "FAIL", f"{type(e).__name__}: {e}"
        results.append({"name": name, "status": status, "detail": detail, "gpu": needs_gpu,
                        "seconds": round(time.perf_counter() - t0, 2)})
        log(f"  {status}  {name:13s} {detail}")
    return results


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--gpu", action="store_true", help="also check CUDA, CuPy and the CuPy neurons "
                   "(reported as skipped, with the reason, where there is no GPU)")
    p.add_argument("--json", metavar="PATH", help="write the results as JSON here")


def run(args) -> int:
    """Check the installation: packages, neuron backends, an SNN step and crafting (--gpu: on CUDA)."""
    print("spkrobust selfcheck" + (" --gpu" if args.gpu else ""))
    results = run_checks(bool(args.gpu))
    counts = {s: sum(r["status"] == s for r in results) for s in ("PASS", "FAIL", "SKIP")}
    print(f"{counts['PASS']} passed, {counts['FAIL']} failed, {counts['SKIP']} skipped")
    if args.json:
        from spkrobust.io import atomic_write_json

        atomic_write_json({"format": SELFCHECK_FORMAT, "gpu_requested": bool(args.gpu), "checks": results,
                           **{k.lower(): v for k, v in counts.items()}}, args.json)
    return 1 if counts["FAIL"] else 0


CLI = {"selfcheck": (configure, run)}
