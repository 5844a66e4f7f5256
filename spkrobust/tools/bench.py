"""``spkrobust bench``: how much an SNN costs next to an ANN on this machine (issue #7).

Everything runs on random inputs (no dataset needed): VGG5 on 3×32×32, batch ``--batch``,
``--threads`` torch threads, the SNN backend ``--backend`` (``auto`` = the fused CPU neuron; on
``--device cuda``, SpikingJelly's CuPy neuron where CuPy is installed). On CUDA every timed call
ends with a synchronisation, and the memory section (process RSS) is left out.
Times are the best of ``--repeats`` runs after a warm-up; the ANN and SNN runs of one ratio are
interleaved, so background load hits both alike (the machine's load average is recorded).

Headline numbers (the JSON keys):

* ``snn_step_ratio_T8/T32`` — SNN train step (forward, loss, backward, SGD step; LIF, Poisson
  input) / (T × ANN train step);
* ``snn_grad_ratio_T8/T32`` — input gradient of the loss through the SNN (``eval()`` mode, Poisson
  input with its straight-through gradient, LIF) / (T × ANN input gradient); 1.0 is the
  "T forward/backward passes of the ANN" floor a hand-written time loop reaches;
* ``fgsm_sweep_ratio`` — FGSM at 5 eps from one stored gradient (``attacks.fgsm_gradient`` +
  ``fgsm_from_grad``) / FGSM at one eps (``attacks.craft``), SNN source;
* ``dryrun_jobs``, ``dryrun_seconds`` — ``snakemake -n --forceall`` of a paper-scale grid
  (config.yaml, enlarged until it has ≥ 1000 jobs); null with ``dryrun_error`` when impossible;

plus per-image train/inference times of the ANN and of IF/LIF SNNs at several T (``table``),
PGD-k crafting throughput from ANN and SNN sources (``pgd``), and the peak memory growth of one
SNN train step as T grows (``memory``: ``ru_maxrss`` delta, one subprocess per T). ``--baseline``
adds stock SpikingJelly (backend ``torch``) ratios and memory for comparison.
"""
from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

from spkrobust.config.vocab import BENCH_FORMAT
from spkrobust.tools.bench_memory import memory_growth
from spkrobust.tools.bench_models import _data, _model, infer_fn, input_grad_fn, train_step_fn

REPO = Path(__file__).resolve().parents[2]
FGSM_EPS = [2 / 255, 4 / 255, 6 / 255, 8 / 255, 16 / 255]


def best_time(fns: dict, repeats: int, warmup: int = 1, calls: dict | None = None, cpu: dict | None = None) -> dict:
    """Seconds per call of each function: the functions run interleaved, round by round, each as a
    block of ``calls[name]`` back-to-back calls (default 1); the fastest of ``repeats`` timed rounds
    (after ``warmup`` untimed ones) counts, divided by the block size.

    Timing ``T`` ANN calls as one block against one SNN call exposes both to the same stretch of
    background load (a shared machine's load varies over seconds). ``cpu``, when given, receives
    the same statistic of the process's CPU time (all threads), which other processes disturb less
    than wall time."""
    calls = calls or {}
    best = {k: float("inf") for k in fns}
    best_cpu = {k: float("inf") for k in fns}
    for r in range(warmup + repeats):
        for k, f in fns.items():
            n = max(1, int(calls.get(k, 1)))
            t0, c0 = time.perf_counter(), time.process_time()
            for _ in range(n):
                f()
            dt, dc = (time.perf_counter() - t0) / n, (time.process_time() - c0) / n
            if r >= warmup:
                best[k], best_cpu[k] = min(best[k], dt), min(best_cpu[k], dc)
    if cpu is not None:
        cpu.update(best_cpu)
    return best


# ---- sections ------------------------------------------------------------------------------------

def headline_ratios(Ts, batch, repeats, backend, log, baseline=False, device="cpu") -> dict:
    """snn_{step,grad}_ratio_T{T}: LIF, Poisson; ANN timed in the same rounds."""
    out = {}
    x, y = _data(batch, device=device)
    ann = _model("ann", device=device)
    backends = [backend] + (["torch"] if baseline and backend != "torch" else [])
    for T in Ts:
        for be in backends:
            snn = _model("snn", T=T, backend=be, device=device)
            for what, make in (("step", train_step_fn), ("grad", input_grad_fn)):
                # each round: T ANN calls as one block, then one SNN call
                c: dict = {}
                t = best_time({"ann": make(ann, x, y), "snn": make(snn, x, y)}, repeats, calls={"ann": T}, cpu=c)
                ratio = t["snn"] / (T * t["ann"])
                key = f"snn_{what}_ratio_T{T}" + ("" if be == backend else f"_{be}")
                out[key] = ratio
                out[f"{key}_cpu"] = c["snn"] / (T * c["ann"])
                out[f"{key}_detail"] = {"ann_s": t["ann"], "snn_s": t["snn"], "ann_cpu_s": c["ann"],
                                        "snn_cpu_s": c["snn"], "T": T, "batch": batch, "backend": snn.backend}
                log(f"  {key:28s} {ratio:6.2f}   (SNN {t['snn'] * 1e3 / batch:8.2f} ms/img, "
                    f"T x ANN {T * t['ann'] * 1e3 / batch:8.2f} ms/img; CPU-time ratio {out[key + '_cpu']:.2f}; "
                    f"backend {snn.backend})")
            del snn
    return out


def cost_table(Ts, batch, repeats, backend, log, device="cpu") -> list[dict]:
    """Per-image train-step and inference times: ANN, IF and LIF SNNs at each T. Each SNN row's
    ratios are against T ANN calls timed in the same rounds."""
    rows = []
    x, y = _data(batch, device=device)
    ann = _model("ann", device=device)
    a_train = a_inf = float("inf")
    for neuron in ("if", "lif"):
        for T in Ts:
            snn = _model("snn", T=T, neuron=neuron, backend=backend, device=device)
            t = best_time({"ann_train": train_step_fn(ann, x, y), "train": train_step_fn(snn, x, y),
                           "ann_infer": infer_fn(ann, x), "infer": infer_fn(snn, x)}, repeats,
                          calls={"ann_train": T, "ann_infer": T})
            a_train, a_inf = min(a_train, t["ann_train"]), min(a_inf, t["ann_infer"])
            rows.append({"model": f"snn_{neuron}", "T": T, "backend": snn.backend,
                         "train_ms_per_img": t["train"] / batch * 1e3, "infer_ms_per_img": t["infer"] / batch * 1e3,
                         "train_ratio": t["train"] / (T * t["ann_train"]), "infer_ratio": t["infer"] / (T * t["ann_infer"])})
            del snn
    rows.insert(0, {"model": "ann", "T": None, "train_ms_per_img": a_train / batch * 1e3,
                    "infer_ms_per_img": a_inf / batch * 1e3, "train_ratio": None, "infer_ratio": None})
    log(f"  {'model':8s} {'T':>3s} {'train ms/img':>13s} {'/(T·ANN)':>9s} {'infer ms/img':>13s} {'/(T·ANN)':>9s}")
    for r in rows:
        tr = "" if r["train_ratio"] is None else f"{r['train_ratio']:9.2f}"
        ir = "" if r["infer_ratio"] is None else f"{r['infer_ratio']:9.2f}"
        log(f"  {r['model']:8s} {r['T'] or '':>3} {r['train_ms_per_img']:13.2f} {tr:>9s} "
            f"{r['infer_ms_per_img']:13.2f} {ir:>9s}")
    return rows


def _pgd(model, x, y, steps, eps=8 / 255, device="cpu"):
    """PGD-k through :func:`spkrobust.attacks.registry.craft` (torchattacks), or an equivalent loop when the
    attacks module is unavailable."""
    try:
        from spkrobust.attacks.registry import craft
    except ImportError:
        craft = None
    if craft is not None:
        alpha = "2/255" if steps * 2 / 255 >= eps else f"{1.25 / steps:.4g}*eps"  # reach the ball's edge
        craft(model, x, y, {"type": "pgd", "steps": steps, "alpha": alpha, "random_start": True}, eps,
              batch_size=len(x), seed=0, device=device)
        return
    import torch

    x, y = x.to(device), y.to(device)
    xa = (x + torch.empty_like(x).uniform_(-eps, eps)).clamp(0, 1)
    for _ in range(steps):
        g = input_grad_fn(model, xa, y)()
        xa = torch.min(torch.max(xa + 2 / 255 * g.sign(), x - eps), x + eps).clamp(0, 1)


def pgd_throughput(steps, T, batch, repeats, backend, log, device="cpu") -> dict:
    x, y = _data(batch)  # on the CPU, as craft() takes them; it moves each batch to the device
    out = {"steps": steps, "batch": batch}
    for name, model in (("ann", _model("ann", device=device)),
                        (f"snn_lif_T{T}", _model("snn", T=T, backend=backend, device=device))):
        t = best_time({name: lambda m=model: _pgd(m, x, y, steps, device=device)}, repeats)[name]
        out[f"{name}_img_per_s"] = batch / t
        log(f"  PGD-{steps} from {name:12s} {batch / t:9.2f} img/s")
    return out


def fgsm_sweep(T, batch, repeats, backend, log, device="cpu") -> dict:
    """FGSM at 5 eps from one gradient vs FGSM at one eps (SNN source)."""
    from spkrobust.attacks import registry as attacks

    x, y = _data(batch)
    model = _model("snn", T=T, backend=backend, device=device)

    def sweep():
        g = attacks.fgsm_gradient(model, x, y, batch_size=batch, device=device)
        for e in FGSM_EPS:
            attacks.fgsm_from_grad(x, g, e)

    def one():
        attacks.craft(model, x, y, {"type": "fgsm"}, FGSM_EPS[0], batch_size=batch, seed=0, device=device)

    t = best_time({"sweep": sweep, "one": one}, repeats)
    r = t["sweep"] / t["one"]
    log(f"  FGSM over {len(FGSM_EPS)} eps / FGSM at 1 eps: {r:.3f}  ({t['sweep']:.3f} s vs {t['one']:.3f} s, "
        f"SNN LIF T={T} source)")
    return {"fgsm_sweep_ratio": r, "fgsm_sweep_s": t["sweep"], "fgsm_one_s": t["one"], "fgsm_eps": len(FGSM_EPS)}


# ---- CLI -----------------------------------------------------------------------------------------

def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", metavar="PATH", help="write the results as JSON here")
    p.add_argument("--quick", action="store_true", help="a small, fast run (< 1 min; for tests): tiny batch, "
                   "one repeat, fewer T")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.add_argument("--batch", type=int, default=None, help="images per batch (default 64; --quick: 4)")
    p.add_argument("--repeats", type=int, default=None, help="timed runs per measurement, best kept "
                   "(default 3; --quick: 1)")
    p.add_argument("--backend", default="auto", choices=["auto", "torch", "fused", "cupy"],
                   help="SNN neuron backend (default auto = fused on CPU, cupy on CUDA with CuPy)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where models run (default cpu)")
    p.add_argument("--T", dest="Ts", type=int, nargs="+", default=None,
                   help="time steps for the cost table (default 4 8 16; --quick: 4)")
    p.add_argument("--pgd-steps", type=int, default=None, help="PGD-k steps (default 7; --quick: 2)")
    p.add_argument("--skip", nargs="*", default=[], choices=["ratios", "table", "pgd", "fgsm", "memory", "dryrun"],
                   help="sections to leave out (their keys are null)")
    p.add_argument("--baseline", action="store_true",
                   help="also measure stock SpikingJelly (backend torch) ratios and memory (slow)")


def run(args) -> int:
    """Benchmark SNN vs ANN cost (train step, input gradient, attacks) and the workflow's dry-run."""
    import warnings

    import torch

    from spkrobust.nets import fused, heap
    from spkrobust.errors import UserError

    if args.device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA GPU is visible to torch here; use --device cpu")
    device = torch.device(args.device)
    warnings.filterwarnings("ignore", category=FutureWarning)  # torch.jit.script deprecation in SpikingJelly
    quick = bool(args.quick)
    batch = args.batch or (4 if quick else 64)
    repeats = args.repeats or (1 if quick else 3)
    Ts = args.Ts or ([4] if quick else [4, 8, 16])
    pgd_steps = args.pgd_steps or (2 if quick else 7)
    mem_Ts = [2, 4] if quick else [4, 8, 16, 32]
    torch.set_num_threads(max(1, int(args.threads)))
    lines: list[str] = []

    def log(s=""):
        print(s, flush=True)
        lines.append(s)

    res: dict = {
        "format": BENCH_FORMAT, "quick": quick, "threads": torch.get_num_threads(), "batch": batch,
        "repeats": repeats, "arch": "vgg5", "input": [3, 32, 32], "backend": args.backend, "device": args.device,
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "fused_impl": fused.native_status(), "torch": torch.__version__, "python": platform.python_version(),
        "machine": platform.machine(), "cpu_count": os.cpu_count(), "loadavg_start": _loadavg(),
        "malloc_tuned": heap.tune_allocator(),
    }
    t_all = time.perf_counter()
    log(f"spkrobust bench: VGG5 3x32x32 on {res['gpu'] or 'cpu'}, batch {batch}, {res['threads']} threads, best of {repeats}, "
        f"SNN backend {args.backend} (fused neuron: {res['fused_impl']}), load {res['loadavg_start']}")
    for k in ("snn_step_ratio_T8", "snn_step_ratio_T32", "snn_grad_ratio_T8", "snn_grad_ratio_T32",
              "fgsm_sweep_ratio", "dryrun_jobs", "dryrun_seconds"):
        res[k] = None
    if "ratios" not in args.skip:
        log("\nSNN (LIF 0.99, Poisson) vs T x ANN:")
        res.update(headline_ratios([8, 32], batch, repeats, args.backend, log, baseline=args.baseline, device=device))
    if "table" not in args.skip:
        log(f"\nTrain step and inference per image (T = {Ts}):")
        res["table"] = cost_table(Ts, batch, max(1, repeats - 1), args.backend, log, device=device)
    if "pgd" not in args.skip:
        log("\nPGD crafting throughput:")
        res["pgd"] = pgd_throughput(pgd_steps, 8 if not quick else 4, batch, max(1, repeats - 1), args.backend, log,
                                    device=device)
    if "fgsm" not in args.skip:
        log("\nFGSM sweep:")
        try:
            res.update(fgsm_sweep(8 if not quick else 4, batch, repeats, args.backend, log, device=device))
        except (ImportError, AttributeError) as e:
            res["fgsm_error"] = f"spkrobust.attacks.registry unavailable: {e}"
            log(f"  skipped: {res['fgsm_error']}")
    if "memory" not in args.skip and device.type == "cuda":
        log("\nPeak memory: measured as process RSS, i.e. on the CPU only; skipped on cuda")
    elif "memory" not in args.skip:
        log("\nPeak memory of one SNN train step (RSS growth, one process per T):")
        res["memory"] = memory_growth(mem_Ts, batch, res["threads"], args.backend, log, baseline=args.baseline)
    if "dryrun" not in args.skip:
        log("\nSnakemake dry-run:")
        from spkrobust.tools.bench_dryrun import snakemake_dryrun

        res.update(snakemake_dryrun(log))
    res["total_seconds"] = time.perf_counter() - t_all
    res["loadavg_end"] = _loadavg()
    log(f"\ndone in {res['total_seconds']:.1f} s (load {res['loadavg_end']})")
    res["text"] = "\n".join(lines)
    if args.json:
        from spkrobust.io import atomic_write_json

        atomic_write_json(res, args.json)
    return 0


def _loadavg():
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


CLI = {"bench": (configure, run)}
