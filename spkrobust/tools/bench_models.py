"""The models, random inputs and timed steps ``spkrobust bench`` measures (VGG on random 3×32×32 images)."""
from __future__ import annotations

MEAN, STD = [0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616]


def _model(kind: str, T: int = 8, neuron: str = "lif", leak: float = 0.99, backend: str = "auto",
           encoder: str = "poisson", arch: str = "vgg5", image: int = 32, channels: int = 3, device="cpu"):
    import torch

    from spkrobust.nets.models import build_model, default_meta

    torch.manual_seed(0)
    if kind == "ann":
        meta = default_meta("ann", arch, channels, image, 10, MEAN[:channels], STD[:channels])
    else:
        meta = default_meta("snn", arch, channels, image, 10, MEAN[:channels], STD[:channels], neuron=neuron,
                            leak=(1.0 if neuron == "if" else leak), T=T, backend=backend, encoder=encoder)
    return build_model(meta, device=device).to(device)


def _data(batch: int, image: int = 32, channels: int = 3, seed: int = 0, device="cpu"):
    import torch

    g = torch.Generator().manual_seed(seed)
    x, y = torch.rand(batch, channels, image, image, generator=g), torch.randint(0, 10, (batch,), generator=g)
    return x.to(device), y.to(device)


def _sync(x) -> None:
    """Wait for the GPU (CUDA runs asynchronously: a call's time is only known once it finished)."""
    if x.is_cuda:
        import torch

        torch.cuda.synchronize(x.device)


def train_step_fn(model, x, y):
    """One SGD step (forward, cross-entropy, backward, update) in ``train()`` mode."""
    import torch
    import torch.nn.functional as F

    opt = torch.optim.SGD(model.parameters(), lr=1e-6, momentum=0.9)

    def step():
        model.train()
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()
        _sync(x)
    return step


def input_grad_fn(model, x, y):
    """The input gradient of the loss in ``eval()`` mode (what every gradient attack step does)."""
    import torch
    import torch.nn.functional as F

    def grad():
        model.eval()
        xg = x.detach().clone().requires_grad_(True)
        (g,) = torch.autograd.grad(F.cross_entropy(model(xg), y, reduction="sum"), xg)
        _sync(g)
        return g
    return grad


def infer_fn(model, x):
    import torch

    def infer():
        model.eval()
        with torch.no_grad():
            out = model(x)
        _sync(out)
        return out
    return infer
