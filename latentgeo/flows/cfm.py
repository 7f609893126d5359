"""Conditional flow matching from N(0, I) to data (latents), with independent or minibatch-OT coupling.

Path: ``x_t = (1 - t) z0 + t z1`` (``z0 ~ N(0, I)`` source, ``z1`` data), target velocity ``z1 - z0``, ``t ~ U[0, 1]``.
The learned field ``v(x, t)`` is integrated from ``t = 0`` to ``1`` to generate samples.
"""
from __future__ import annotations

import math
import os
from typing import Any, Callable, Dict, Optional, Union

import numpy as np
import torch
from torch import nn

from latentgeo.checkpoint import register_module
from latentgeo.errors import LatentgeoError, check_choice, check_finite

__all__ = ["FlowModel", "ot_pair", "cfm_loss", "flow_sample", "fit_flow", "load_flow", "FLOW_METHODS"]


@register_module
class FlowModel(nn.Module):
    """A velocity field ``v(x, t)``: ``x`` ``[B, ...]``, ``t`` ``[B]`` (or a float) in ``[0, 1]``.

    ``net`` is a name (``"mlp"``, ``"unet"``) built with ``net_kwargs``, or an ``nn.Module`` with
    ``forward(x, t)`` (e.g. ``latentgeo.nets.MLP``, whose noise embedding embeds ``t``).
    """

    def __init__(self, net: Union[str, nn.Module] = "mlp", net_kwargs: Optional[Dict[str, Any]] = None):
        super().__init__()
        from latentgeo.diffusion.edm import build_net

        if isinstance(net, nn.Module):
            self.net = net
            object.__setattr__(self, "_latentgeo_config", {
                "net": getattr(net, "_latentgeo_class", f"{type(net).__module__}.{type(net).__qualname__}"),
                "net_kwargs": dict(getattr(net, "_latentgeo_config", {}) or {})})
        else:
            self.net = build_net(net, net_kwargs)

    def forward(self, x: torch.Tensor, t: Union[float, torch.Tensor]) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
        if t.numel() == 1:
            t = t.reshape(1).expand(x.shape[0])
        p = next(self.net.parameters(), None)
        dt = p.dtype if p is not None else x.dtype
        return self.net(x.to(dt), t.to(dt)).to(x.dtype)


def ot_pair(z0: torch.Tensor, z1: torch.Tensor) -> torch.Tensor:
    """Reorder the source batch ``z0`` to the exact minibatch OT assignment to ``z1`` (squared Euclidean cost).

    Uses POT's ``ot.emd`` with uniform weights; for equal batch sizes the optimal plan is a permutation
    (Birkhoff), which is read off the plan row by row. Returns ``z0[perm]`` so that ``z0[perm][i]`` is paired
    with ``z1[i]``.
    """
    import ot

    b = z1.shape[0]
    if z0.shape[0] != b:
        raise LatentgeoError(f"OT coupling needs equal source and data batch sizes, got {z0.shape[0]} and {b}; "
                             "draw as many source samples as there are data samples in the batch")
    a0 = z0.detach().reshape(b, -1).double().cpu().numpy()
    a1 = z1.detach().reshape(b, -1).double().cpu().numpy()
    cost = ((a1[:, None, :] - a0[None, :, :]) ** 2).sum(-1)  # [data i, source j]
    w = np.full(b, 1.0 / b)
    plan = ot.emd(w, w, cost)
    perm = torch.as_tensor(plan.argmax(axis=1), device=z0.device)
    return z0[perm]


def cfm_loss(model: nn.Module, z1: torch.Tensor, generator: Optional[torch.Generator] = None,
             coupling: str = "independent") -> torch.Tensor:
    """``mean |v(x_t, t) - (z1 - z0)|^2`` over batch and coordinates; ``coupling`` ``independent`` | ``ot``."""
    gdev = generator.device if generator is not None else z1.device
    z0 = torch.randn(z1.shape, generator=generator, device=gdev, dtype=z1.dtype).to(z1.device)
    t = torch.rand(z1.shape[0], generator=generator, device=gdev, dtype=z1.dtype).to(z1.device)
    if coupling == "ot":
        z0 = ot_pair(z0, z1)
    elif coupling != "independent":
        raise LatentgeoError(f"unknown coupling '{coupling}'; choose one of: independent, ot")
    tv = t.view((-1,) + (1,) * (z1.ndim - 1))
    xt = (1 - tv) * z0 + tv * z1
    return ((model(xt, t) - (z1 - z0)) ** 2).mean()


FLOW_METHODS = ("heun", "euler", "dopri5", "rk4")


def flow_sample(model: Callable, z0: torch.Tensor, steps: int = 50, method: str = "heun", t0: float = 0.0,
                t1: float = 1.0, rtol: float = 1e-5, atol: float = 1e-5, grad: bool = False) -> torch.Tensor:
    """Integrate ``dx/dt = v(x, t)`` from ``t0`` to ``t1`` starting at ``z0`` (noise ``[B, ...]``).

    ``method``: ``heun`` / ``euler`` (``steps`` uniform steps, ``2 steps`` / ``steps`` evaluations), or any
    torchdiffeq method (``dopri5`` adaptive with ``rtol``/``atol``, ``rk4`` fixed with ``steps``). Swap ``t0``,
    ``t1`` to run backwards (data -> noise).
    """
    check_choice(method, list(FLOW_METHODS), "ODE method")
    if steps < 1:
        raise LatentgeoError(f"steps must be >= 1, got {steps}; pass steps=1 or more")
    ctx = torch.enable_grad() if grad else torch.no_grad()
    with ctx:
        if method in ("heun", "euler"):
            ts = torch.linspace(t0, t1, steps + 1, dtype=torch.float64)
            x = z0
            for i in range(steps):
                a, b = float(ts[i]), float(ts[i + 1])
                d = model(x, a)
                x_next = x + (b - a) * d
                if method == "heun":  # trapezoidal corrector (the field is defined at both ends of [0, 1])
                    x_next = x + (b - a) * 0.5 * (d + model(x_next, b))
                x = x_next
            return x
        from torchdiffeq import odeint

        def f(t, x):
            return model(x, t.to(x.dtype))

        opts = {"step_size": abs(t1 - t0) / steps} if method == "rk4" else {}
        tt = torch.tensor([t0, t1], dtype=z0.dtype, device=z0.device)
        return odeint(f, z0, tt, method=method, rtol=rtol, atol=atol, options=opts or None)[-1]


def fit_flow(z: Any, steps: int = 2000, batch_size: int = 256, lr: float = 2e-3, seed: int = 0,
             coupling: str = "independent", net: Union[str, nn.Module] = "mlp",
             net_kwargs: Optional[Dict[str, Any]] = None, ema: Optional[float] = 0.999,
             device: str = "cpu", progress: bool = False, out: Union[str, os.PathLike, None] = None,
             warmup_steps: int = 100, **loop_kwargs) -> FlowModel:
    """Train a flow-matching velocity field on data ``z`` ``[N, ...]`` (e.g. normalised latents).

    Returns a :class:`FlowModel` in eval mode (EMA weights). Sample with
    ``flow_sample(model, torch.randn(n, *z.shape[1:]))``. ``net="mlp"`` is sized from ``z`` (flattened);
    ``coupling="ot"`` uses exact minibatch OT pairs (POT), which straightens paths (fewer ODE steps needed).
    """
    from latentgeo.train import train_loop

    check_choice(coupling, ["independent", "ot"], "coupling")
    zt = torch.as_tensor(np.asarray(z) if not isinstance(z, torch.Tensor) else z)
    if not zt.is_floating_point():
        zt = zt.float()
    if zt.ndim < 2 or zt.shape[0] < 2:
        raise LatentgeoError(f"flow data must be [N, ...] with N >= 2, got shape {tuple(zt.shape)}; "
                             "pass a batch of at least 2 samples along the first dimension")
    check_finite(zt, "flow data")
    torch.manual_seed(seed)
    kw = dict(net_kwargs or {})
    if net == "mlp":
        kw.setdefault("in_dim", int(math.prod(zt.shape[1:])))
        kw.setdefault("max_freq", 100.0)  # t in [0, 1]
    elif net == "unet":
        kw.setdefault("channels", int(zt.shape[1]))
    model = FlowModel(net, kw if not isinstance(net, nn.Module) else None)
    res = train_loop(model, lambda m, b, g: cfm_loss(m, b, g, coupling), zt, steps=steps, batch_size=batch_size,
                     lr=lr, seed=seed, ema_decay=ema, device=device, progress=progress, out=out,
                     warmup_steps=warmup_steps, description="flow", **loop_kwargs)
    return res.best_model.eval()


def load_flow(path: Union[str, os.PathLike], ema: bool = True, device: str = "cpu") -> FlowModel:
    """The trained velocity field from a training folder (``ema.safetensors`` by default, as written by
    :func:`fit_flow` with ``out=`` or ``latentgeo train flow``) or a checkpoint file; eval mode, no gradients."""
    from latentgeo.train import load_trained

    model = load_trained(path, ema=ema, device=device, command="latentgeo train flow")
    if not isinstance(model, FlowModel):
        raise LatentgeoError(f"'{path}' holds a {type(model).__name__}, not a flow; pass a folder written by "
                             "`latentgeo train flow`")
    return model
