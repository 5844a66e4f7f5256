"""One job's plan: its micro-batch and time chunk, peak memory, FLOPs and time, from the memory model
(:mod:`spkrobust.nets.memory`), the validated config and a budget. Torch-free: the Snakefile's
resource functions (``workflow/rules/common.smk``) and ``spkrobust plan`` both call :func:`job`.

FLOPs are 2 x MACs; a backward pass costs two forwards (BPTT: 3 forward-equivalents per gradient).
Times: FLOPs / a rate — :data:`CPU_GFLOPS` per job thread (measured here) and :data:`GPU_TFLOPS`
(assumed).
"""
from __future__ import annotations

import math
import os
import shutil
import subprocess
from dataclasses import asdict, dataclass

from spkrobust.config.schema import default, defaults
from spkrobust.config.schema import attack_defaults
from spkrobust.config.vocab import (BATCH_GLOBAL_ESTIMATORS, EOTPGD_MIN_SAMPLES, GRAD_MODE_ESTIMATORS,
                                    TIME_GLOBAL_ESTIMATORS)
from spkrobust.nets import memory as mm

# one 1-thread conv forward (64 x 128 x 16 x 16, 3x3, 128 out) on this project's CPU: 48 GFLOP/s
# (measured once, machine shared); whole SNN forward/backward passes ran at 28-29 GFLOP/s (VGG5
# inference, VGG11 BPTT), so a job is planned at the conv rate x CPU_EFFICIENCY
CPU_CONV_GFLOPS = 48.0
CPU_EFFICIENCY = 0.6
CPU_GFLOPS = CPU_CONV_GFLOPS * CPU_EFFICIENCY
GPU_TFLOPS = 20.0  # assumed: an H100/A100-class GPU at about a third of its fp32 peak
HOST_FRACTION = 0.8  # default host budget: this share of RAM divided by the job slots
GPU_FRACTION = 0.9  # default device budget: this share of the GPU's memory
HEADROOM = 1.15  # a job requests its planned peak x this (the sizing keeps request <= budget)
RETRY_GROWTH = 1.5  # memory and runtime per retry (Snakemake's attempt)


@dataclass(frozen=True)
class Budget:
    device: str  # cpu | cuda: where the activations live
    host_mb: float
    gpu_mb: float | None
    source: str

    def as_dict(self) -> dict:
        return asdict(self)


def host_ram_mb() -> float:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / mm.MIB


def gpu_ram_mb() -> float | None:
    """Total memory of the first GPU here (``nvidia-smi``), None without one."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=20, check=True).stdout.split()
        return float(out[0]) if out else None
    except (OSError, subprocess.SubprocessError, ValueError):
        return None


def budget(cfg: dict, slots: int = 1, mem_mb: float | None = None, gpu_mem_mb: float | None = None) -> Budget:
    """The per-job budget: ``mem_mb`` / ``gpu_mem_mb`` where given (Snakemake resources), else
    :data:`HOST_FRACTION` of RAM / ``slots`` and :data:`GPU_FRACTION` of the GPU. Activations go to
    the GPU with ``device: cuda``, or ``auto`` with a GPU here or a ``gpu_mem_mb`` given."""
    gpu_total = None if cfg["device"] == "cpu" else gpu_ram_mb()
    cuda = cfg["device"] == "cuda" or (cfg["device"] == "auto" and (gpu_total or gpu_mem_mb))
    src = []
    if mem_mb is None:
        mem_mb = HOST_FRACTION * host_ram_mb() / max(1, int(slots))
        src.append(f"host {HOST_FRACTION:g} x RAM / {max(1, int(slots))} slots")
    else:
        src.append("host mem_mb given")
    if cuda and gpu_mem_mb is None:
        total = gpu_total or 81920.0
        gpu_mem_mb = GPU_FRACTION * total
        src.append(f"gpu {GPU_FRACTION:g} x {'this GPU' if gpu_total else 'an assumed 80 GiB GPU'}")
    elif cuda:
        src.append("gpu_mem_mb given")
    return Budget("cuda" if cuda else "cpu", float(mem_mb), float(gpu_mem_mb) if cuda else None, "; ".join(src))


# ---- model facts ---------------------------------------------------------------------------------

def model_facts(cfg: dict, models: dict, name: str, device: str) -> dict:
    """arch, T (1 for an ANN), backend, stochastic, kind of a resolved model; SNN settings follow
    ``spkrobust.training.train.snn_meta_from`` (the spec, else an SNN parent's, else the schema's)."""
    spec = models[name]
    chain = [spec]
    while chain[-1].get("from"):
        chain.append(models[chain[-1]["from"]])
    arch = next((s["arch"] for s in chain if s.get("arch")), default("arch"))
    kind = spec["kind"]
    if kind == "ann":
        return {"kind": kind, "arch": arch, "T": 1, "snn": False, "backend": "fused", "stochastic": False}
    snn_chain = [s for s in chain if s["kind"] != "ann"]

    def get(key):
        return next((s[key] for s in snn_chain if key in s), default(key))

    backend = get("backend")
    if backend == "auto":
        backend = "cupy" if device == "cuda" else "fused"
    return {"kind": kind, "arch": arch, "T": int(get("T")), "snn": True, "backend": backend,
            "stochastic": get("encoder") != "direct"}


def split_sizes(cfg: dict, dataset: str) -> dict:
    d, full = cfg["data"], mm.DATASETS[dataset]
    n_train = full["train"] if d["train_size"] is None else min(full["train"], int(d["train_size"]))
    n_test = full["test"] if d["test_size"] is None else min(full["test"], int(d["test_size"]))
    return {"train": n_train, "test": n_test, "calib": min(n_train, int(d["calib_size"]))}


def _variants(spec: dict) -> int:
    """How many attacks one spec stands for: a list of HART ``gamma`` or ASSG ``a`` values is one
    member per value in an ensemble (and a search over them in a single attack)."""
    grad = spec.get("grad")
    if not isinstance(grad, dict):
        return 1
    return max([len(v) for k, v in grad.items() if k in ("gamma", "a") and isinstance(v, list)] or [1])


def attack_work(cfg: dict, attack: str | dict, uses_grad: bool, stochastic: bool) -> tuple[float, float]:
    """(gradients, plain forwards) per image of one crafting job (upper bounds: no early stop);
    ``attack``: a name in ``cfg["attacks"]`` or an ensemble member's own spec."""
    given = cfg["attacks"][attack] if isinstance(attack, str) else attack
    spec = {**attack_defaults(given["type"]), **given}
    kind = spec["type"]
    eot = int(spec.get("eot_samples") or cfg["eval"]["eot_samples"]) if stochastic else 1
    if kind == "ensemble":  # the members, and the source judging the clean images and each member's candidates
        judge = max(int(spec["judge_draws"]), eot) if stochastic else 1
        g, f = 0.0, float(judge)
        for member in spec["members"]:
            f += judge
            if "set" in member:  # a stored set: only the judging
                continue
            mg, mf = attack_work(cfg, member, False, stochastic)
            n = _variants(member if isinstance(member, dict) else cfg["attacks"][member])
            g, f = g + n * mg, f + n * mf
        return g, f
    if kind == "fgsm":  # from the grad stage's stored gradient: no pass through the model at all
        return (0.0, 0.0) if uses_grad else (eot, 1.0)
    if kind == "rfgsm":
        return eot, 1.0
    if kind in ("pgd", "eotpgd"):
        if kind == "eotpgd":
            eot = max(eot, EOTPGD_MIN_SAMPLES)
        return int(spec["steps"]) * eot, 1.0
    if kind in ("apgd", "apgdt"):
        tc = int(spec["target_classes"]) if kind == "apgdt" else 1
        return int(spec["steps"]) * int(spec["n_restarts"]) * tc * eot, 1.0
    if kind == "sapgd":
        return int(spec["steps"]) * int(spec["n_restarts"]) * eot, 1.0
    if kind == "square":
        return 0.0, int(spec["n_queries"]) * int(spec["n_restarts"])
    return 0.0, 1.0  # noise


# ---- one job -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class JobPlan:
    rule: str
    name: str
    micro_batch: int
    time_chunk: int
    host_mb: float  # peak resident memory of the process
    gpu_mb: float  # peak device memory (0 on the CPU)
    flop: float
    fits: bool

    @property
    def cpu_s(self) -> float:
        return self.flop / (CPU_GFLOPS * 1e9)

    @property
    def gpu_s(self) -> float:
        return self.flop / (GPU_TFLOPS * 1e12)

    def resources(self, b: Budget, attempt: int = 1) -> dict:
        """Snakemake resources: memory at :data:`HEADROOM` x the plan (x :data:`RETRY_GROWTH` per
        retry), runtime in minutes at the rate of the budget's device, doubled, plus 5 minutes."""
        grow = RETRY_GROWTH ** (int(attempt) - 1)
        secs = self.gpu_s if b.device == "cuda" else self.cpu_s
        return {"mem_mb": int(math.ceil(max(self.host_mb * HEADROOM, 1000) * grow)),
                "gpu_mem_mb": int(math.ceil(self.gpu_mb * HEADROOM * grow)),
                "runtime": int(math.ceil((2 * secs / 60 + 5) * grow)),
                "micro_batch": self.micro_batch, "time_chunk": self.time_chunk}

    def as_dict(self) -> dict:
        return {**asdict(self), "cpu_s": self.cpu_s, "gpu_s": self.gpu_s}



def grad_modes(cfg: dict, attack: str | dict | None) -> set:
    """The estimators (``grad.mode``) of an attack's gradient passes on an SNN source (``attack``
    None: the ``grad`` stage): its own ``grad`` (a mix: its members), else ``eval.grad_mode``'s; an
    ensemble: its members'."""
    from spkrobust.nets.gradspec import parse_grad  # torch-free

    if attack is None:
        return {GRAD_MODE_ESTIMATORS.get(cfg["eval"]["grad_mode"]) or "bptt"}
    spec = cfg["attacks"][attack] if isinstance(attack, str) else attack
    if spec["type"] == "ensemble":
        return set().union(*(grad_modes(cfg, m) for m in spec["members"] if "set" not in m))
    if spec.get("grad") is None:
        return grad_modes(cfg, None)
    g = parse_grad(spec["grad"])
    return {m.mode for m in g.members} if g.mode == "mix" else {g.mode}


def _size_attack(modes: set, per_step: float, state: float, batch: int, T: int, avail: float) -> mm.Sizing:
    """The cut of a crafting job (one micro-batch and time chunk for the command line) and its largest
    piece: an estimator over the whole batch (pdsg) runs the batch at the job's time chunk, one over
    all T (hart, bptr, rga) the job's micro-batch over all T (:func:`spkrobust.nets.bounded.effective_cut`)."""
    kinds = {"batch" if m in BATCH_GLOBAL_ESTIMATORS else "time" if m in TIME_GLOBAL_ESTIMATORS else "step"
             for m in modes}
    sizes = [mm.size_bptt(per_step, state, batch, T, avail, keep_batch=k == "batch", keep_T=k == "time")
             for k in sorted(kinds)]
    mb, k = min(s.micro_batch for s in sizes), min(s.time_chunk for s in sizes)
    cut = {"step": (mb, k), "batch": (batch, k), "time": (mb, T)}
    need = max(mm.bptt_piece(per_step, state, *cut[c], T) for c in kinds)
    return mm.Sizing(mb, k, need / mm.MIB, need <= avail and all(s.fits for s in sizes))


def _place(b: Budget, fixed_host: float, weights_mb: float, data_mb: float):
    """(budget left for activations in bytes, host MB and device MB outside the activations)."""
    if b.device == "cuda":
        host = fixed_host + mm.CUDA_HOST_MB + data_mb
        dev = mm.CUDA_DEVICE_MB + weights_mb
        return (b.gpu_mb / HEADROOM - dev) * mm.MIB, host, dev
    host = fixed_host + data_mb + weights_mb
    return (b.host_mb / HEADROOM - host) * mm.MIB, host, 0.0


def _finish(rule, name, b, sizing, host, dev, flop) -> JobPlan:
    if b.device == "cuda":
        dev += sizing.work_mb
    else:
        host += sizing.work_mb
    return JobPlan(rule, name, sizing.micro_batch, sizing.time_chunk, round(host, 1), round(dev, 1), flop, sizing.fits)


def job(cfg: dict, models: dict, b: Budget, rule: str, dataset: str, model: str | None = None,
        attack: str | None = None, uses_grad: bool = False, targets: list | None = None) -> JobPlan:
    """The plan of one job of ``rule`` (``model``: the trained model, source or clean target;
    ``targets``: an evaluate job's target names)."""
    n = split_sizes(cfg, dataset)
    data_mb = mm.dataset_mb(dataset, n["train"], n["test"])
    if rule == "prepare":
        full = mm.DATASETS[dataset]
        raw = mm.dataset_mb(dataset, full["train"], full["test"])
        return JobPlan(rule, dataset, 0, 0, round(mm.PROCESS_MB + mm.PREPARE_COPIES * raw, 1), 0.0, 0.0, True)
    if rule == "evaluate":
        plans = [job(cfg, models, b, "clean", dataset, t) for t in targets]
        flops = 0.0
        for t in targets:
            f = model_facts(cfg, models, t, b.device)
            passes = cfg["eval"]["repeats"] if f["stochastic"] else 1
            flops += passes * n["test"] * f["T"] * 2 * mm.net(f["arch"], dataset).macs
        big = max(plans, key=lambda p: p.host_mb + p.gpu_mb)
        # one cut serves every target: the smallest micro-batch and the smallest time chunk that
        # cuts a target's T (a plan whose chunk is its whole T does not constrain it: a longer chunk
        # is no cut for it), so each target stays within its own plan (the results do not change)
        Ts = [model_facts(cfg, models, t, b.device)["T"] for t in targets]
        cuts = [p.time_chunk for p, T in zip(plans, Ts) if p.time_chunk < T]
        return JobPlan(rule, model, min(p.micro_batch for p in plans), min(cuts) if cuts else max(Ts),
                       big.host_mb, big.gpu_mb, flops, all(p.fits for p in plans))
    f = model_facts(cfg, models, model, b.device)
    net = mm.net(f["arch"], dataset)
    T, snn, macs = f["T"], f["snn"], net.macs
    w_mb = net.params * mm.BYTES / mm.MIB
    if rule in ("train_ann", "train_snn"):
        spec = models[model]
        hp = {**defaults("snn_train" if snn else "ann_train"), **(spec.get("train") or {})}
        n_img = n["train"] if hp.get("train_images") is None else min(n["train"], int(hp["train_images"]))
        copies = mm.WEIGHT_COPIES["adam" if snn else "sgd"]
        fixed = mm.PROCESS_MB + (mm.TRAIN_SNN_MB if snn else mm.TRAIN_ANN_MB)
        avail, host, dev = _place(b, fixed, copies * w_mb, data_mb)
        per, state, batch = mm.bptt_bytes(net, f["backend"], snn), mm.state_bytes(net), min(int(hp["batch_size"]), n_img)
        s = mm.size_bptt(per, state, batch, T, avail)
        if snn and b.device != "cuda" and (s.micro_batch < batch or s.time_chunk < T):
            # a cut step releases the heap (spkrobust.training.step): its own, smaller figures; sized
            # with them while it stays cut (uncut, the tuned heap's figures hold)
            avail, host, dev = _place(b, mm.PROCESS_MB + mm.TRAIN_SNN_CUT_MB, copies * w_mb, data_mb)
            per *= mm.TRAIN_CUT_BPTT
            r = mm.size_bptt(per, state, batch, T, avail)
            cut = r if r.micro_batch < batch or r.time_chunk < T else s
            s = mm.Sizing(cut.micro_batch, cut.time_chunk,
                          mm.bptt_piece(per, state, cut.micro_batch, cut.time_chunk, T) / mm.MIB, cut.fits)
        flop = float(hp["epochs"]) * n_img * T * 6 * macs + n["test"] * T * 2 * macs
        return _finish(rule, model, b, s, host, dev, flop)
    if rule in ("convert", "clean"):
        avail, host, dev = _place(b, mm.PROCESS_MB, w_mb, data_mb)
        # convert: train.accuracy's batch; no batch is larger than the test split it runs over
        batch = min(256 if rule == "convert" else int(cfg["eval"]["batch_size"]), n["test"])
        s = mm.size_inference(mm.infer_bytes(net, f["backend"], snn), batch, T, avail)
        passes = max(cfg["eval"]["repeats"] if f["stochastic"] else 1, 2) if rule == "clean" else 1
        flop = passes * n["test"] * T * 2 * macs
        if rule == "convert":
            spec = models[model]
            t_cal = max(int(spec.get("calib_T", default("calib_T"))), T) if spec.get(
                "method", default("method")) == "threshold" else 1
            flop += n["calib"] * t_cal * 2 * sum(net.prefix_macs)
        return _finish(rule, model, b, s, host, dev, flop)
    if rule in ("grad", "craft"):
        avail, host, dev = _place(b, mm.PROCESS_MB, mm.WEIGHT_COPIES["attack"] * w_mb, data_mb)
        if rule == "grad":
            grads, fwd = (int(cfg["eval"]["eot_samples"]) if f["stochastic"] else 1), 0.0
        else:
            grads, fwd = attack_work(cfg, attack, uses_grad, f["stochastic"])
        batch = min(int(cfg["eval"]["attack_batch_size"]), n["test"])
        if not grads and not fwd:  # FGSM from a stored gradient: pixels only
            s = mm.Sizing(batch, T, 0.0, True)
        elif grads:
            s = _size_attack(grad_modes(cfg, attack) if snn else {"bptt"}, mm.bptt_bytes(net, f["backend"], snn),
                             mm.state_bytes(net), batch, T, avail)
        else:
            s = mm.size_inference(mm.infer_bytes(net, f["backend"], snn), batch, T, avail)
        flop = n["test"] * T * (6 * grads + 2 * fwd) * macs
        return _finish(rule, f"{model}/{attack}" if attack else model, b, s, host, dev, flop)
    raise ValueError(f"no plan for rule {rule!r}")
