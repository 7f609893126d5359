"""Wrappers that turn other diffusion parametrisations into a VE denoiser ``D(x, sigma) -> E[x0|x]``."""
from __future__ import annotations

from typing import Callable, Optional, Union

import torch
from torch import nn

from latentgeo.diffusion.edm import as_sigma_batch
from latentgeo.errors import LatentgeoError, check_choice

__all__ = ["VPToVE"]


class VPToVE(nn.Module):
    """A variance-preserving model as a VE denoiser.

    VP: ``x_t = alpha x0 + s n`` with ``alpha^2 + s^2 = 1``. It is the VE model at ``sigma = s/alpha`` applied to
    ``x_t / alpha``, so for VE input ``x`` at ``sigma``: ``alpha = 1/sqrt(1 + sigma^2)``, ``s = sigma alpha``,
    ``x_t = alpha x``, and the model's output is turned into ``E[x0|x]``:

    - ``prediction="epsilon"``: ``D = x - sigma * eps``;
    - ``prediction="x0"``: ``D = out``;
    - ``prediction="v"`` (``v = alpha n - s x0``): ``D = alpha x_t - s v``.

    The model is called as ``model(x_t, t)``; its time argument ``t`` (shape ``[B]``) is chosen by ``time``:

    - ``"log_snr"``: ``t = log(alpha^2/s^2) = -2 ln sigma``;
    - ``"discrete"``: fractional index into ``alphas_cumprod`` (a DDPM schedule of length T), found by
      interpolating ``ln sigma_k = 0.5 ln((1 - a_k)/a_k)`` linearly; sigma outside the table is clamped to its ends
      (``t`` is then rounded only if ``round_time=True``, for models that need integer timesteps);
    - ``"sigma"``: ``t = sigma``; or any callable ``sigma -> t``.

    Outputs with a ``.sample`` attribute (diffusers' ``UNet2DOutput``) are unwrapped, so a diffusers DDPM
    ``UNet2DModel`` with ``scheduler.alphas_cumprod`` works directly:
    ``VPToVE(unet, alphas_cumprod=sched.alphas_cumprod, time="discrete")``.
    """

    def __init__(self, model: Callable, time: Union[str, Callable] = "log_snr", prediction: str = "epsilon",
                 alphas_cumprod: Optional[torch.Tensor] = None, round_time: bool = False):
        super().__init__()
        self.model = model
        check_choice(prediction, ["epsilon", "x0", "v"], "prediction")
        self.prediction = prediction
        if not callable(time):
            check_choice(time, ["log_snr", "discrete", "sigma"], "time")
        self.time = time
        self.round_time = round_time
        if time == "discrete":
            if alphas_cumprod is None:
                raise LatentgeoError("time='discrete' needs alphas_cumprod (the DDPM schedule); pass it")
            a = torch.as_tensor(alphas_cumprod, dtype=torch.float64).reshape(-1)
            log_s = 0.5 * torch.log((1 - a) / a)
            if bool((log_s[1:] <= log_s[:-1]).any()):
                raise LatentgeoError("alphas_cumprod must be strictly decreasing; pass the scheduler's alphas_cumprod")
            self.register_buffer("_log_sigmas", log_s, persistent=False)

    def _t(self, sigma: torch.Tensor) -> torch.Tensor:
        if callable(self.time):
            return self.time(sigma)
        if self.time == "log_snr":
            return -2 * sigma.log()
        if self.time == "sigma":
            return sigma
        ls = self._log_sigmas.to(sigma.device)
        q = sigma.double().log().clamp(float(ls[0]), float(ls[-1]))
        k = torch.searchsorted(ls, q).clamp(1, len(ls) - 1)
        lo, hi = ls[k - 1], ls[k]
        t = (k - 1).double() + (q - lo) / (hi - lo)
        return (t.round() if self.round_time else t).to(sigma.dtype)

    def forward(self, x: torch.Tensor, sigma: Union[float, torch.Tensor]) -> torch.Tensor:
        s = as_sigma_batch(sigma, x)
        view = (-1,) + (1,) * (x.ndim - 1)
        alpha = (1 + s ** 2).rsqrt().view(view)
        svp = s.view(view) * alpha
        x_t = alpha * x
        out = self.model(x_t, self._t(s))
        out = getattr(out, "sample", out)
        if self.prediction == "epsilon":
            return x - s.view(view) * out
        if self.prediction == "x0":
            return out
        return alpha * x_t - svp * out
