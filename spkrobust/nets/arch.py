"""The VGG layer lists, torch-free: the one table both the networks (:mod:`spkrobust.nets.models`)
and the memory/compute model (:mod:`spkrobust.nets.memory`, used by the Snakefile at DAG time)
are built from."""
from __future__ import annotations

from spkrobust.errors import UserError

# conv widths ('A' = 2x2 average pooling) and classifier hidden widths (see docs/fidelity.md):
# vgg5  — Sharmin et al.'s VGG5 (nn_models.py): 64-A-128-128-A, 1024, 1024;
# vgg9  — the 2019-era VGG9 of Lee et al. (cifar10_VGG9.py): 7 convolutions + 4096->1024->classes,
#         9 weight layers;
# vgg11 — Rathi et al.'s CIFAR-100 VGG11 (vgg_spiking.py): 9 convolutions + 8192->1024->1024->classes;
# vgg11_tv — the torchvision-like VGG11 layout this project used before (5 pools, 4096-wide).
ARCHS: dict[str, tuple[list, list[int]]] = {
    "vgg5": ([64, "A", 128, 128, "A"], [1024, 1024]),
    "vgg9": ([64, 64, "A", 128, 128, "A", 256, 256, 256, "A"], [1024]),
    "vgg11": ([64, "A", 128, 256, 256, "A", 512, 512, 512, "A", 512, 512], [1024, 1024]),
    "vgg11_tv": ([64, "A", 128, "A", 256, 256, "A", 512, 512, "A", 512, 512, "A"], [4096, 4096]),
}


def layer_plan(arch: str, in_channels: int, image_size: int, num_classes: int):
    """[(kind, args)] with kind in conv|pool|flatten|linear|act|dropout|conv_dropout; pools that would
    shrink the map below 1x1 are skipped (e.g. vgg11_tv on 28x28). A convolution not followed by a
    pool in the layer list gets a ``conv_dropout`` after its activation (Rathi et al.'s placement)."""
    if arch not in ARCHS:
        raise UserError(f"unknown architecture {arch!r}; allowed: {', '.join(ARCHS)}")
    convs, fcs = ARCHS[arch]
    plan, c, s = [], in_channels, image_size
    for i, v in enumerate(convs):
        if v == "A":
            if s >= 2:
                plan.append(("pool", None))
                s //= 2
        else:
            plan.append(("conv", (c, v)))
            plan.append(("act", None))
            if i + 1 == len(convs) or convs[i + 1] != "A":
                plan.append(("conv_dropout", None))
            c = v
    plan.append(("flatten", None))
    f = c * s * s
    for h in fcs:
        plan.append(("linear", (f, h)))
        plan.append(("act", None))
        plan.append(("dropout", None))
        f = h
    plan.append(("linear", (f, num_classes)))
    return plan
