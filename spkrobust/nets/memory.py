"""Memory and compute model of the networks, torch-free (the Snakefile sizes jobs with it at DAG time).

Everything here follows from the layer table (:mod:`spkrobust.nets.arch`), the dataset's image shape,
T, the batch and the backend — never from the free memory of the machine, so a plan (and the
micro-batch / time chunk it picks) is the same on every run.

Per image and time step (fp32, 4 bytes per element; ``A`` = the elements of every spiking layer's
input current, ``W`` = the widest one):

* **inference** holds the largest live set of one op (``Net.ops``, :func:`infer_bytes`): the op's
  input and its outputs -- a weight layer's result and oneDNN's reordered copy of it
  (:data:`WEIGHT_OUTS`), a spiking layer's spikes (SpikingJelly's nodes also return the membrane
  sequence: :data:`ACT_OUTS`), a pool's output. The layer before it has been freed
  (:meth:`spkrobust.nets.models.SNN.forward_seq` keeps no second name for it: it kept one, which
  made VGG9 and VGG11 hold 4 W instead of 3 W). That is the peak of a pass whose T is cut, which
  releases the heap tuning (:func:`spkrobust.nets.heap.release_allocator`); see below.
* **BPTT** keeps ``BPTT_ELEMS[backend] * A`` elements for the backward pass.

Calibration (measured on this project's 2-core CPU machine; MiB = 2**20 bytes; SNN of CIFAR-10
shape). Inference: an AMD EPYC (AVX2), 1 thread, random weights, the heap released, peak RSS
(``VmHWM`` after ``/proc/self/clear_refs``) of :func:`spkrobust.nets.inference.bounded_forward` over
4 images at T = 512 minus the RSS before it; slope between chunks of 64 and 128 steps (the
intercept is 2-4 MiB). BPTT: peak RSS (``ru_maxrss``) of one forward+backward minus the RSS
before it, slope between two or three sizes T at B = 2, the heap tuned:

=================  =========================  =============================  ===============
                   measured MiB/img.step      model MiB/img.step             issue's figure
=================  =========================  =============================  ===============
inference fused    0.514 VGG5, 0.749 VGG9,    x + 2 W = 0.512 (conv 1),      0.52 (VGG5)
                   0.751 VGG11                3 W = 0.75 (a 64-channel conv
                                              on a 64-channel input)
inference torch    0.757 VGG5                 3 W = 0.75 (spiking layer 1)   0.79 (VGG5)
inference cupy     not measured (no GPU)      as torch = 0.75 VGG5           1.31 (VGG5)
BPTT fused VGG5    1.74                       3.25 A = 1.65 (-5 %)           1.3
BPTT fused VGG9    2.92                       3.25 A = 3.06 (+5 %)           2.5
BPTT fused VGG11   4.25                       3.25 A = 4.29 (+1 %)           3.2
BPTT torch VGG5    3.20                       6.9 A = 3.51 (+10 %)           --
BPTT torch VGG9    7.03                       6.9 A = 6.49 (-8 %)            --
=================  =========================  =============================  ===============

The CuPy factors are not measured here (no GPU): both taken equal to SpikingJelly's torch backend
(its CuPy node returns the same two sequences).

A ``train-snn`` process holds :data:`TRAIN_SNN_MB` beyond :data:`PROCESS_MB`, the weight copies
and the activations (calibrated on peak RSS by ``/usr/bin/time -v`` of one training step, Adam with
AMSGrad, :func:`spkrobust.training.step.train_step`, VGG5 of CIFAR-10 shape, T = 100, batch 8,
fused backend, 1 thread, random pixels; median, range and runs): the optimiser imports
``torch._dynamo`` (+148 MiB), the Adam step's temporaries, the encoder's and kernels' scratch, and
~128 MiB that ``/usr/bin/time`` counts beyond the process's own ``ru_maxrss`` (also for a bare
``import torch``). The BPTT figure per image and step holds: (2420 - 1271) / 7 images = 1.64 MiB, fused VGG5 1.65:

=========================  ======================  ==================
micro-batch x time chunk   measured MiB            model MiB
=========================  ======================  ==================
8 x 100 (no cut)           2420 (2241-2822, 5)     2465 (+2 %)
8 x 10                     1422 (1345-1518, 4)     1358 (-5 %)
4 x 100                    2015 (1948-2036, 4)     1805 (-10 %)
2 x 100                    1520 (1408-1548, 4)     1475 (-3 %)
1 x 100                    1271 (1230-1327, 4)     1309 (+3 %)
1 x 10 (chunks of 16)      1171 (1166-1197, 5)     1171 (0 %)
=========================  ======================  ==================

That table is the tuned heap's, which a step over the whole batch and all T keeps. A step cut in
images or T releases it (:func:`spkrobust.nets.heap.release_allocator`), and then its peak is
reproducible: the ``train_snn`` job of ``config.yaml`` with the counts cut (same network, Poisson,
1 thread, ``/usr/bin/time -v``, 2026-12-03, AMD EPYC) peaked at 1094 / 1357 / 1889 MiB at 2 / 4 / 8
images x 100 steps (1889 in three runs; tuned: 2602-2991 in five), +20 % wall (35 s against 29 s).
That is 1.32 MiB per image and step (:data:`TRAIN_CUT_BPTT` x 1.65) and 125 MiB beyond the process,
the weight copies and the data (:data:`TRAIN_SNN_CUT_MB`).

(The model takes the chunk asked for; :mod:`spkrobust.nets.inference` lengthens a chunk of one
image to 16 steps, ``MIN_ROWS``: 5 MiB more here.)

Time-chunked inference releases the heap tuning because with it the peak is not a function of the
piece. The ``clean`` stage of ``config.yaml`` with the counts cut (CIFAR-10 VGG5 IF SNN, T = 2000,
4 images, two passes, 1 thread; ``/usr/bin/time -v``; before the ``forward_seq`` fix; 2026-12-03,
AMD EPYC) at chunks of 96 / 192 / 384 / 768 steps:

=====================  ================================  ============================
heap                   peak MiB                          wall (user + sys) at 384
=====================  ================================  ============================
tuned                  1159 / 1452 / 2193-2236 / --      47-53 s (46-52 + 1)
glibc's default        886 / 1138 / 1583-1588 / --       58-60 s (45-46 + 13)
released               -- / 1009 / 1441 / 2305           62 s (46 + 16)
=====================  ================================  ============================

Released, the peak is linear in the piece: 577 MiB + 0.5625 MiB per image and step (2.25 W, conv 1's
output still alive under its stale second name); after the fix the stage peaked at 2626 MiB at
4 x 1002 steps, 577 + 0.514 x 4008 = 2637 by the calibration above. Tuned it is not (slopes 0.76 and
1.0 MiB), and it differed between machines: 1954 MiB on another AMD EPYC VM and 3383 on an AVX-512
one for the same 4 x 384 job. The price is the page faults of fresh blocks, about +25 % wall on a
CPU (GPU activations live in CUDA's caching allocator, which the host heap does not touch); a pass
whose T is not cut (every fast preset) keeps the tuned heap.

Attack-time BPTT in checkpointed time chunks (:mod:`spkrobust.nets.bounded`; CIFAR-10 VGG5 IF SNN,
Poisson input, one image, 1 thread, ``ru_maxrss`` of the input-gradient pass minus that of the built
model): chunks of 100 / 600 / 1219 steps of T = 2000 held 355 / 1200 / 2238 MiB, chunks of 200 of
T = 1000 512 MiB: 1.68 MiB per step of one chunk (the model's 1.65) plus ~180 MiB of fixed scratch
that does not grow with T. That holds with the heap released
(:func:`spkrobust.nets.heap.release_allocator`, which a cut does); with the heap tuned for
inference the recomputed pieces fragmented it: 1154 MiB at chunks of 200, 3465 at 1219.
"""
from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass

from spkrobust.errors import ConfigError
from spkrobust.nets.arch import layer_plan

BYTES = 4  # fp32
MIB = 2 ** 20
# image shape, classes and split sizes of the datasets spkrobust.data.datasets prepares
DATASETS = {
    "fashion_mnist": {"shape": (1, 28, 28), "classes": 10, "train": 60000, "test": 10000},
    "cifar10": {"shape": (3, 32, 32), "classes": 10, "train": 50000, "test": 10000},
    "cifar100": {"shape": (3, 32, 32), "classes": 100, "train": 50000, "test": 10000},
}
# the live set of one inference op per image and step, in elements, with the heap released (a cut pass:
# spkrobust.nets.inference): a weight layer holds its input and two outputs (its result and oneDNN's
# reordered copy), a pool its input and output, a spiking layer its input and ``ACT_OUTS[backend]``
# outputs (SpikingJelly's nodes return the membrane sequence beside the spikes; cupy: assumed, no GPU)
ACT_OUTS = {"fused": 1, "torch": 2, "cupy": 2}
WEIGHT_OUTS = 2
BPTT_ELEMS = {"fused": 3.25, "torch": 6.9, "cupy": 6.9}
# resident memory of a stage process before any tensor of the job: Python + torch + SpikingJelly +
# spkrobust imported, measured 515 MiB (torch alone 509 MiB) on this CPU machine; a CUDA process
# also holds its context (assumed, not measured here: no GPU)
PROCESS_MB = 520
TRAIN_SNN_MB = 440  # a train-snn process's RSS beyond the rest of the model (see the docstring; measured)
# a train-snn step cut in images or T releases the heap (spkrobust.training.step): it holds this share of
# the BPTT figure and TRAIN_SNN_CUT_MB instead of TRAIN_SNN_MB (measured: see the docstring)
TRAIN_CUT_BPTT = 0.8
TRAIN_SNN_CUT_MB = 125
# a train-ann process's RSS beyond the rest of the model: measured 867 MB (Snakemake max_rss) against
# 663 planned without it (CIFAR-10 VGG5, batch 32, SGD, config.yaml with the counts cut)
TRAIN_ANN_MB = 200
# copies of the full dataset a prepare process holds (measured, /usr/bin/time -v, 1 thread: Fashion-MNIST
# 646 MiB, plan 624; CIFAR-10-size files of random pixels 803 MiB, plan 886; it was 3: plan 1400)
PREPARE_COPIES = 1.25
CUDA_HOST_MB = 1500  # host RSS a CUDA context adds (assumed)
CUDA_DEVICE_MB = 800  # device memory of the context, cuDNN workspaces, allocator slack (assumed)
# optimiser copies of the weights: weights + grad (+ SGD momentum | Adam two moments + AMSGrad max)
WEIGHT_COPIES = {"infer": 1, "attack": 2, "sgd": 3, "adam": 5}


@dataclass(frozen=True)
class Net:
    """The shape facts of one network on one dataset, per image (and per time step for an SNN)."""
    arch: str
    macs: int  # multiply-accumulates of one forward pass
    params: int
    currents: tuple  # elements of each spiking layer's input current (= each weight layer's output but the last)
    prefix_macs: tuple  # MACs up to and including the weight layer feeding spiking layer k
    ops: tuple  # (kind, input elements, output elements) of each op in order: weight, act, pool

    @property
    def widest(self) -> int:
        return max(self.currents)

    @property
    def acts(self) -> int:
        return sum(self.currents)


@functools.lru_cache(maxsize=None)
def net(arch: str, dataset: str) -> Net:
    if dataset not in DATASETS:
        raise ConfigError(f"datasets: unknown dataset {dataset!r}; allowed: {', '.join(DATASETS)}")
    d = DATASETS[dataset]
    c, s, _ = d["shape"]
    plan = layer_plan(arch, c, s, d["classes"])
    macs = params = 0
    outs, prefix, ops = [], [], []
    e = c * s * s  # the elements flowing into the next op
    for kind, a in plan:
        if kind == "pool":
            s //= 2
            ops.append(("pool", e, e // 4))
            e //= 4
        elif kind == "act":
            ops.append(("act", e, e))
        elif kind in ("conv", "linear"):
            k, out = (9, a[1] * s * s) if kind == "conv" else (1, a[1])  # kernel taps, output elements
            macs += out * a[0] * k
            params += a[0] * a[1] * k
            outs.append(out)
            prefix.append(macs)
            ops.append(("weight", e, out))
            e = out
    return Net(arch, macs, params, tuple(outs[:-1]), tuple(prefix[:-1]), tuple(ops))


def infer_bytes(n: Net, backend: str, snn: bool = True) -> float:
    """Peak bytes of inference per image (and time step for an SNN): the largest live set of one op
    (its input and outputs; the layer before it has been freed)."""
    outs = {"weight": WEIGHT_OUTS, "pool": 1, "act": ACT_OUTS[backend] if snn else 1}
    return max(i + outs[k] * o for k, i, o in n.ops) * BYTES


def bptt_bytes(n: Net, backend: str, snn: bool = True) -> float:
    """Bytes the backward pass keeps per image (and time step for an SNN)."""
    return (BPTT_ELEMS[backend] if snn else 2.0) * n.acts * BYTES


def state_bytes(n: Net) -> float:
    """One image's neuron state (membrane potentials of all layers, and their gradient in BPTT)."""
    return 2 * n.acts * BYTES


@dataclass(frozen=True)
class Sizing:
    micro_batch: int  # images per forward/backward
    time_chunk: int  # time steps per piece (T: no chunking)
    work_mb: float  # activation memory of one piece (plus checkpoints)
    fits: bool  # False: even 1 image x 1 step exceeds the budget (the job is planned at that size)

    def as_dict(self) -> dict:
        return asdict(self)


def size_inference(per_step: float, batch: int, T: int, avail: float) -> Sizing:
    """Inference keeps the batch and cuts T (the membrane is carried across chunks); only when one
    step of the whole batch does not fit does it cut the batch too."""
    batch, T = max(1, int(batch)), max(1, int(T))
    k = min(T, int(avail // (batch * per_step))) if avail > 0 else 0
    if k >= 1:
        return Sizing(batch, k, batch * k * per_step / MIB, True)
    b = max(1, min(batch, int(avail // per_step)) if avail > 0 else 1)
    return Sizing(b, 1, b * per_step / MIB, b * per_step <= avail)


def bptt_piece(per_step: float, state: float, images: int, k: int, T: int) -> float:
    """Bytes of one checkpointed piece of BPTT: ``images`` x ``k`` steps of graph, plus one state
    per chunk boundary when T is cut."""
    return images * (k * per_step + (math.ceil(T / k) * state if k < T else 0.0))


def size_bptt(per_step: float, state: float, batch: int, T: int, avail: float, keep_batch: bool = False,
              keep_T: bool = False) -> Sizing:
    """BPTT cuts the batch first (exact for input gradients, gradient accumulation in training); when
    one image over all T still does not fit, it cuts T (checkpointed chunks: one state per chunk
    boundary is kept, the chunk's graph is recomputed). ``keep_batch``: only T may be cut (an
    estimator over the whole batch: PDSG); ``keep_T``: only the batch (one needing all T at once:
    hart, bptr, rga; :mod:`spkrobust.nets.bounded`)."""
    batch, T = max(1, int(batch)), max(1, int(T))
    if keep_batch and keep_T:
        need = bptt_piece(per_step, state, batch, T, T)
        return Sizing(batch, T, need / MIB, need <= avail)
    if not keep_batch:
        b = min(batch, int(avail // (T * per_step))) if avail > 0 else 0
        if b >= 1:
            return Sizing(b, T, b * T * per_step / MIB, True)
        if keep_T:
            return Sizing(1, T, T * per_step / MIB, False)
    n = batch if keep_batch else 1
    for k in range(T if keep_batch else T - 1, 0, -1):
        need = bptt_piece(per_step, state, n, k, T)
        if need <= avail:
            return Sizing(n, k, need / MIB, True)
    return Sizing(n, 1, bptt_piece(per_step, state, n, 1, T) / MIB, False)


def dataset_mb(dataset: str, train: int, test: int) -> float:
    """The prepared data file in memory (uint8 images, int64 labels) plus the test split as floats."""
    d = DATASETS[dataset]
    px = d["shape"][0] * d["shape"][1] * d["shape"][2]
    return ((train + test) * (px + 8) + test * px * BYTES) / MIB
