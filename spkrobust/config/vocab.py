"""The allowed names of the config and the library, and the format tags of its files.

One home for every enumeration: the config schema (``workflow/schemas/config.schema.yaml``) lists
the same values (``tests/unit/config/test_vocab.py`` asserts it), and every module that needs one of these
names imports it from here.  Pure Python (no torch): the Snakefile imports it through the validator.
"""
from __future__ import annotations

DEVICES = ("auto", "cpu", "cuda")
DATASETS = ("fashion_mnist", "cifar10", "cifar100")
ARCHS = ("vgg5", "vgg9", "vgg11", "vgg11_tv")
MODEL_KINDS = ("ann", "convert", "snn")  # config kinds
SNN_KINDS = ("convert", "snn")
META_KINDS = ("ann", "snn")  # a saved model's meta.kind
NEURONS = ("if", "lif")
ENCODERS = ("poisson", "poisson_unsigned", "direct")
SURROGATES = ("linear", "sigmoid", "atan")
BACKENDS = ("auto", "torch", "cupy", "fused")
METHODS = ("threshold", "max", "99.9%")
INPUT_NORMS = ("half", "dataset")  # x̂ = 2x - 1 (the studies') | the training set's mean/std
LR_SCHEDULES = ("step", "cosine")
TRAIN_LOSSES_T = ("sum", "mean")  # spike-based training loss on the output summed / averaged over T  # conversion: threshold balancing, SpikingJelly Max / 99.9%
# eval.grad_mode -> the gradient estimator (an attack's `grad:`) it is short for: one mechanism,
# applied by spkrobust.attacks.base.set_grad_mode to every attack without its own `grad:`
GRAD_MODE_ESTIMATORS = {"bptt": None, "rate": "bptr"}  # None: bptt with the training surrogate
GRAD_MODES = tuple(GRAD_MODE_ESTIMATORS)
GRAD_ESTIMATORS = ("bptt", "ste", "bptr", "rga", "act", "hart", "assg", "pdsg", "mix")  # an attack's grad.mode (spkrobust.nets.estimators)
# estimators whose backward needs every step of T at once (no time chunks) / the whole attack batch
# (PDSG's σ over the images: no micro-batches): spkrobust.nets.bounded, the plan (spkrobust.tools.jobs)
TIME_GLOBAL_ESTIMATORS = ("hart", "bptr", "rga")
BATCH_GLOBAL_ESTIMATORS = ("pdsg",)
ASSG_SHAPES = ("atan", "linear", "rectangular", "sigmoid", "gaussian")  # grad.shape of mode assg (spkrobust.nets.assg)
GRAD_COMBINE = ("mean", "maxloss")  # grad.combine of mode mix (spkrobust.nets.mix)
ATTACK_SURROGATES = ("linear", "rectangular", "sigmoid", "atan", "exp")  # an attack's grad.surrogate
SETTINGS = ("white-box", "black-box", "transfer")
# grid.pairing: which target replicas a source replica's sets are evaluated on (spkrobust.config.expand.grid)
PAIRINGS = ("all", "cycle")
# the neuron settings an SNN's meta carries (defaults: the schema's, else inherited from `from:`)
SNN_KEYS = ("neuron", "leak", "T", "encoder", "surrogate", "backend", "detach_reset")
# model keys a sweep may vary (per kind: those the kind has)
SWEEPABLE = ("T", "leak", "neuron", "encoder", "method", "scale", "surrogate")
# a model kind -> the kinds its `from:` may name
PARENT_KINDS = {"convert": ("ann",), "snn": ("ann", "convert", "snn")}

# attack types; their parameters and defaults live in the config schema (spkrobust.config.schema.attack_defaults)
ATTACK_TYPES = ("fgsm", "rfgsm", "pgd", "eotpgd", "apgd", "apgdt", "sapgd", "square", "noise", "ensemble")
GRADIENT_TYPES = ("fgsm", "rfgsm", "pgd", "eotpgd", "apgd", "apgdt", "sapgd")
SINGLE_STEP_TYPES = ("fgsm", "rfgsm")  # one gradient step; the other gradient attacks iterate
ITERATIVE_TYPES = tuple(t for t in GRADIENT_TYPES if t not in SINGLE_STEP_TYPES)
NON_ATTACK_TYPES = ("noise",)  # random perturbations: a baseline, left out of the claims
STUDY_ATTACK_TYPES = ("fgsm", "pgd")  # the seed studies' attacks (the headline's "studies' attack")
ATTACK_LOSSES = {"apgd": ("ce", "dlr"), "sapgd": ("ce", "dlr"), "square": ("margin", "ce")}
EOTPGD_MIN_SAMPLES = 4

# format tags of the JSON files the report reads (each file says what it is; nothing is guessed)
METRICS_FORMAT = "spkrobust-metrics-1"  # models/<model>/r<k>/metrics.json (train-ann, convert, train-snn)
CLEAN_FORMAT = "spkrobust-clean-1"  # clean/<model>/r<k>.json (clean)
RECORD_FORMAT = "spkrobust-record-1"  # eval/.../r<k>.json (evaluate)
RECORDS_FORMAT = "spkrobust-records-1"  # report/records.json (aggregate)
GRAD_FORMAT = "spkrobust-grad-1"  # the shared FGSM gradient sign (grad)
ADV_FORMAT = "spkrobust-adv-1"  # an adversarial set (craft)
OUTCOMES_FORMAT = "spkrobust-outcomes-1"  # the per-image outcomes field of clean and eval records
ENSEMBLE_FORMAT = "spkrobust-ensemble-1"  # the per-member record of an ensemble set (its meta, eval records)
MODEL_FORMAT = "spkrobust-model-1"  # a saved model, models/<model>/r<k>/model.pt (train-ann, convert, train-snn)
DATA_FORMAT = "spkrobust-data-1"  # a prepared dataset, <dataset>/data.pt (prepare)
SELFCHECK_FORMAT = "spkrobust-selfcheck-1"  # spkrobust selfcheck --out
BENCH_FORMAT = "spkrobust-bench-1"  # spkrobust bench --out
