"""EDM diffusion in data or latent space: preconditioning, loss, samplers, PF-ODE encode/decode, VP->VE, EMA.

Contract: a denoiser is ``D(x, sigma) -> E[x0 | x]`` with ``x = x0 + sigma n`` (VE), ``x`` ``[B, ...]``,
``sigma`` ``[B]``. Score ``(D - x) / sigma^2``.

- :class:`EDMDenoiser` (``net``, ``sigma_data``, ``net_kwargs``), :func:`estimate_sigma_data`, :func:`edm_loss`,
  :func:`edm_sigmas` (rho-schedule + trailing 0).
- Samplers ``f(denoiser, x_T, sigmas, *, generator=None, ...)``: :func:`heun_sample`, :func:`euler_sample`,
  :func:`euler_maruyama_sample`, :func:`edm_stochastic_sample`; :func:`sample` draws noise and runs one.
- :func:`pf_ode_encode` / :func:`pf_ode_decode`; :class:`EMA`.
- Exact adapters of other parametrisations (``latentgeo.diffusion.wrappers``): :class:`VPToVE`, :class:`EDMToVE`,
  :class:`FlowToVE`, :class:`VEDenoiser` (all with ``sigma_min`` / ``sigma_max``); :func:`ddpm_alphas_cumprod`.
- :func:`fit_denoiser` (in memory), :func:`train_denoiser` (folder with checkpoints), :func:`load_denoiser`.
"""
from latentgeo.diffusion.edm import (EDMDenoiser, as_sigma_batch, edm_loss, edm_sigmas, estimate_sigma_data,
                                     sample_training_sigmas)
from latentgeo.train.ema import EMA
from latentgeo.diffusion.fit import build_denoiser, fit_denoiser, load_denoiser, train_denoiser
from latentgeo.diffusion.samplers import (SAMPLERS, edm_stochastic_sample, euler_maruyama_sample, euler_sample,
                                          heun_sample, initial_noise, pf_ode_decode, pf_ode_encode, sample)
from latentgeo.diffusion.wrappers import (AsLatentgeoFlow, CallableTime, DiscreteTime, EDMToVE, FlowToVE, LogSNRTime,
                                          SigmaTime, TimeMap, VEAdapter, VEDenoiser, VPSDETime, VPToVE,
                                          ddpm_alphas_cumprod)

__all__ = ["EDMDenoiser", "estimate_sigma_data", "edm_loss", "edm_sigmas", "sample_training_sigmas",
           "as_sigma_batch", "EMA", "fit_denoiser", "build_denoiser", "train_denoiser", "load_denoiser",
           "heun_sample", "euler_sample", "euler_maruyama_sample", "edm_stochastic_sample", "initial_noise",
           "sample", "SAMPLERS", "pf_ode_encode", "pf_ode_decode", "VPToVE", "EDMToVE", "FlowToVE", "VEDenoiser",
           "VEAdapter", "AsLatentgeoFlow", "TimeMap", "DiscreteTime", "LogSNRTime", "VPSDETime", "SigmaTime",
           "CallableTime", "ddpm_alphas_cumprod"]
