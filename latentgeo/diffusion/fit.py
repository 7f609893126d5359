"""Training helpers for EDM denoisers: in-memory ``fit_denoiser`` and folder-based ``train_denoiser`` /
``load_denoiser``."""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Dict, Optional, Union

import numpy as np
import torch
from torch import nn

from latentgeo.diffusion.edm import EDMDenoiser, edm_loss, estimate_sigma_data
from latentgeo.errors import LatentgeoError, check_finite

__all__ = ["fit_denoiser", "build_denoiser", "train_denoiser", "load_denoiser"]


def _as_tensor(x0: Any) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x0) if not isinstance(x0, torch.Tensor) else x0)
    if not t.is_floating_point():
        t = t.float()
    if t.ndim < 2:
        raise LatentgeoError(f"training data must be [N, ...] with a sample axis first, got shape {tuple(t.shape)}; "
                             "reshape 1-D data to [N, 1]")
    if t.shape[0] < 2:
        raise LatentgeoError("training data needs at least 2 samples; pass more data")
    check_finite(t, "training data")
    return t


def build_denoiser(x0: torch.Tensor, net: Union[str, nn.Module] = "mlp", net_kwargs: Optional[Dict[str, Any]] = None,
                   sigma_data: Optional[float] = None) -> EDMDenoiser:
    """An untrained EDMDenoiser sized for data ``x0`` ``[N, ...]`` (sigma_data estimated from it).

    ``net="mlp"`` gets ``in_dim = prod(x0.shape[1:])``; ``net="unet"`` needs images ``[N, C, H, W]`` and gets
    ``channels = C``. ``net_kwargs`` override the defaults.
    """
    sd = float(sigma_data) if sigma_data is not None else estimate_sigma_data(x0)
    if isinstance(net, nn.Module):
        return EDMDenoiser(net, sigma_data=sd)
    kw = dict(net_kwargs or {})
    if net == "mlp":
        kw.setdefault("in_dim", int(math.prod(x0.shape[1:])))
    elif net == "unet":
        if x0.ndim != 4:
            raise LatentgeoError(f"net 'unet' needs images [N, C, H, W], got data of shape {tuple(x0.shape)}; "
                                 "use --net mlp for vectors")
        kw.setdefault("channels", int(x0.shape[1]))
    return EDMDenoiser(net, sigma_data=sd, net_kwargs=kw)


def fit_denoiser(x0: Any, net: Union[str, nn.Module] = "mlp", steps: int = 2000, batch_size: int = 256,
                 lr: float = 2e-3, seed: int = 0, ema: Optional[float] = 0.999, net_kwargs: Optional[Dict] = None,
                 sigma_data: Optional[float] = None, grad_clip: Optional[float] = 1.0, warmup_steps: int = 100,
                 device: str = "cpu", progress: bool = False, out: Union[str, os.PathLike, None] = None,
                 p_mean: float = -1.2, p_std: float = 1.2, **loop_kwargs) -> EDMDenoiser:
    """Train an EDM denoiser on ``x0`` ``[N, ...]`` in memory; returns it in eval mode with EMA weights.

    ``net``: ``"mlp"`` | ``"unet"`` | an ``nn.Module`` with ``forward(x_in, c_noise)``. The model is built with
    the seed fixed (``torch.manual_seed(seed)``), so the whole fit is reproducible. Other keyword arguments go to
    :func:`latentgeo.train.train_loop` (e.g. ``log_every``, ``ckpt_every``, ``resume``).
    """
    from latentgeo.train import train_loop

    x = _as_tensor(x0)
    torch.manual_seed(seed)
    den = build_denoiser(x, net, net_kwargs, sigma_data)
    if isinstance(net, nn.Module):
        den = den.to(next(net.parameters()).dtype)
    res = train_loop(den, lambda m, b, g: edm_loss(m, b, g, p_mean, p_std), x, steps=steps, batch_size=batch_size,
                     lr=lr, seed=seed, ema_decay=ema, grad_clip=grad_clip, warmup_steps=warmup_steps, device=device,
                     progress=progress, out=out, description="denoiser", **loop_kwargs)
    return res.best_model.eval()


def train_denoiser(x0: Any, out: Union[str, os.PathLike], net: str = "mlp", steps: int = 10000,
                   batch_size: int = 256, lr: float = 2e-3, seed: int = 0, ema: float = 0.999,
                   net_kwargs: Optional[Dict] = None, resume: bool = False, device: str = "auto",
                   progress: bool = True, data_info: Optional[Dict[str, Any]] = None, **loop_kwargs):
    """Train an EDM denoiser with checkpoints in folder ``out`` (what ``latentgeo train diffusion`` runs).

    On resume the net is built from the arguments, exactly as at the start; :func:`latentgeo.train.train_loop`
    refuses the resume when anything that defines the run (net, its settings, sigma_data, data, lr, seed, ...)
    differs from ``out/config.json``. Nothing in that file is used to build the model. Returns the TrainResult.
    """
    from latentgeo.train import train_loop

    x = _as_tensor(x0)
    out = Path(out)
    torch.manual_seed(seed)
    den = build_denoiser(x, net, net_kwargs, None)
    info = {"net": net, "net_kwargs": den._latentgeo_config["net_kwargs"], "sigma_data": den.sigma_data,
            "data_shape": list(x.shape[1:]), "n_train": int(x.shape[0]), "kind": "denoiser",
            **(data_info or {})}
    return train_loop(den, edm_loss, x, steps=steps, batch_size=batch_size, lr=lr, seed=seed, ema_decay=ema,
                      out=out, resume=resume, device=device, progress=progress, config=info,
                      save_extra={"sigma_data": den.sigma_data, "data_shape": list(x.shape[1:])},
                      description="diffusion", **loop_kwargs)


def load_denoiser(path: Union[str, os.PathLike], ema: bool = True, device: str = "cpu") -> EDMDenoiser:
    """The trained denoiser from a training folder (``ema.safetensors`` by default) or a checkpoint file.

    Returns an :class:`EDMDenoiser` in eval mode with gradients disabled on its parameters: call it as
    ``D(x, sigma)``.
    """
    from latentgeo.train import load_trained

    den = load_trained(path, ema=ema, device=device, command="latentgeo train diffusion")
    if not isinstance(den, nn.Module) or not hasattr(den, "sigma_data"):
        raise LatentgeoError(f"'{path}' does not hold a diffusion denoiser; pass a folder written by "
                             "`latentgeo train diffusion`")
    return den
