"""Fisher diagnostics of latent diffusability (REFERENCE.md §2).

- :func:`fisher_curves` estimates FI, FIR, MMSE and MMSE-rate curves of data under a denoiser (JVP + Hutchinson).
- :func:`fir_deviation` compares data-space and latent-space curves (``D_R``, ``D_I``).
- :mod:`latentgeo.fisher.exact` has the exact Gaussian / Gaussian-mixture references.
"""
from latentgeo.fisher.curves import FisherCurves, FisherDeviation, default_sigmas, fir_deviation, fisher_curves, plot_curves

__all__ = ["FisherCurves", "FisherDeviation", "fisher_curves", "fir_deviation", "default_sigmas", "plot_curves"]
