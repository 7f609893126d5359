"""latentgeo — the geometry of latent diffusion models.

Three capabilities on one denoiser contract ``D(x, sigma) -> E[x0 | x]`` (VE noise ``x = x0 + sigma * n``):

- GPE: geometry-preserving encoders and decoders, baselines, and geometry metrics for any encoder
  (:mod:`latentgeo.autoencoders`);
- Fisher diagnostics of latent diffusability (:mod:`latentgeo.fisher`);
- spacetime (Fisher-Rao) geometry: curve energies, geodesics, Diffusion Edit Distance, transition paths
  (:mod:`latentgeo.spacetime`, :mod:`latentgeo.molecules`).
"""
from latentgeo._version import __version__
from latentgeo.checkpoint import load, load_state, register_module, save, save_state
from latentgeo.errors import LatentgeoError

__all__ = ["__version__", "LatentgeoError", "save", "load", "save_state", "load_state", "register_module"]
