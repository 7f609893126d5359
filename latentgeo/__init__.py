"""latentgeo — the geometry of latent diffusion models.

Three capabilities on one denoiser contract ``D(x, sigma) -> E[x0 | x]`` (VE noise ``x = x0 + sigma * n``,
``sigma`` of shape ``[B]``):

- GPE: geometry-preserving encoders and decoders, baselines, and geometry metrics for any encoder
  (:mod:`latentgeo.autoencoders`);
- Fisher diagnostics of latent diffusability (:mod:`latentgeo.fisher`);
- spacetime (Fisher-Rao) geometry: curve energies, geodesics, Diffusion Edit Distance, transition paths
  (:mod:`latentgeo.spacetime`, :mod:`latentgeo.molecules`).

The names below are the curated public API; subpackages are imported lazily on first use so that
``import latentgeo`` (and the CLI's start-up) stays fast.
"""
from __future__ import annotations

import importlib
from typing import Any

from latentgeo._version import __version__
from latentgeo.errors import LatentgeoError

_SUBPACKAGES = ("data", "nets", "diffusion", "train", "flows", "autoencoders", "fisher", "spacetime", "molecules",
                "metrics", "report", "checkpoint", "errors", "resolve")

# public name -> (module, attribute)
_LAZY = {
    # checkpoints (lazy too: `import latentgeo` and the CLI's start-up do not import torch)
    "save": ("latentgeo.checkpoint", "save"),
    "load": ("latentgeo.checkpoint", "load"),
    "save_state": ("latentgeo.checkpoint", "save_state"),
    "load_state": ("latentgeo.checkpoint", "load_state"),
    "register_module": ("latentgeo.checkpoint", "register_module"),
    # data
    "load_dataset": ("latentgeo.data", "load"),
    "DATASETS": ("latentgeo.data", "DATASETS"),
    # diffusion core
    "EDMDenoiser": ("latentgeo.diffusion", "EDMDenoiser"),
    "fit_denoiser": ("latentgeo.diffusion", "fit_denoiser"),
    "train_denoiser": ("latentgeo.diffusion", "train_denoiser"),
    "load_denoiser": ("latentgeo.resolve", "load_denoiser"),
    "edm_sigmas": ("latentgeo.diffusion", "edm_sigmas"),
    "heun_sample": ("latentgeo.diffusion", "heun_sample"),
    "sample": ("latentgeo.diffusion", "sample"),
    "pf_ode_encode": ("latentgeo.diffusion", "pf_ode_encode"),
    "pf_ode_decode": ("latentgeo.diffusion", "pf_ode_decode"),
    "VPToVE": ("latentgeo.diffusion", "VPToVE"),
    "EDMToVE": ("latentgeo.diffusion", "EDMToVE"),
    "FlowToVE": ("latentgeo.diffusion", "FlowToVE"),
    "VEDenoiser": ("latentgeo.diffusion", "VEDenoiser"),
    # bring your own model: one resolver behind every command
    "resolve_denoiser": ("latentgeo.resolve", "resolve_denoiser"),
    "resolve_encoder": ("latentgeo.resolve", "resolve_encoder"),
    "resolve_flow": ("latentgeo.resolve", "resolve_flow"),
    "check_input_shape": ("latentgeo.resolve", "check_input_shape"),
    "train_loop": ("latentgeo.train", "train_loop"),
    "fit_flow": ("latentgeo.flows", "fit_flow"),
    "load_flow": ("latentgeo.resolve", "load_flow"),
    "flow_sample": ("latentgeo.flows", "flow_sample"),
    # GPE
    "gme_loss": ("latentgeo.autoencoders", "gme_loss"),
    "train_autoencoder": ("latentgeo.autoencoders", "train_autoencoder"),
    "load_encoder": ("latentgeo.resolve", "load_encoder"),
    "load_decoder": ("latentgeo.resolve", "load_decoder"),
    "geometry_report": ("latentgeo.autoencoders", "geometry_report"),
    # Fisher
    "fisher_curves": ("latentgeo.fisher", "fisher_curves"),
    "fir_deviation": ("latentgeo.fisher", "fir_deviation"),
    "FisherCurves": ("latentgeo.fisher", "FisherCurves"),
    "diagnose": ("latentgeo.fisher", "diagnose"),
    "GaussianMixture": ("latentgeo.fisher.exact", "GaussianMixture"),
    # spacetime
    "curve_energy": ("latentgeo.spacetime", "curve_energy"),
    "curve_length": ("latentgeo.spacetime", "curve_length"),
    "geodesic": ("latentgeo.spacetime", "geodesic"),
    "edit_distance": ("latentgeo.spacetime", "edit_distance"),
    "edit_distance_matrix": ("latentgeo.spacetime", "edit_distance_matrix"),
    "edit_distance_pairs": ("latentgeo.spacetime", "edit_distance_pairs"),
    "eta": ("latentgeo.spacetime", "eta"),
    "mu": ("latentgeo.spacetime", "mu"),
    "Geodesic": ("latentgeo.spacetime", "Geodesic"),
    "kl_from_state": ("latentgeo.spacetime", "kl_from_state"),
    "SNRPenalty": ("latentgeo.spacetime", "SNRPenalty"),
    "RegionAvoidance": ("latentgeo.spacetime", "RegionAvoidance"),
    # molecules
    "transition_paths": ("latentgeo.molecules", "transition_paths"),
    "run_tps": ("latentgeo.molecules", "run_tps"),
    "AlanineTable": ("latentgeo.molecules", "AlanineTable"),
    "MuellerBrown": ("latentgeo.molecules", "MuellerBrown"),
    "load_alanine_table": ("latentgeo.molecules", "load_alanine_table"),
    "grid_lower_bound": ("latentgeo.molecules", "grid_lower_bound"),
    "two_way_shooting": ("latentgeo.molecules", "two_way_shooting"),
    # metrics / report / demo
    "sliced_wasserstein": ("latentgeo.metrics", "sliced_wasserstein"),
    "mmd": ("latentgeo.metrics", "mmd"),
    "frechet_distance": ("latentgeo.metrics", "frechet_distance"),
    "Report": ("latentgeo.report", "Report"),
    "run_demo": ("latentgeo.demo", "run_demo"),
}

__all__ = ["__version__", "LatentgeoError", *_LAZY, *_SUBPACKAGES]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        mod, attr = _LAZY[name]
        value = getattr(importlib.import_module(mod), attr)
        globals()[name] = value
        return value
    if name in _SUBPACKAGES:
        return importlib.import_module(f"latentgeo.{name}")
    raise AttributeError(f"module 'latentgeo' has no attribute '{name}'")


def __dir__() -> list:
    return sorted(set(globals()) | set(__all__))
