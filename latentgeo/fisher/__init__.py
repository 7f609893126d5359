"""Fisher diagnostics of latent diffusability (REFERENCE.md §2).

- :func:`fisher_curves` estimates FI, FIR, MMSE and MMSE-rate curves of data under a denoiser (JVP + Hutchinson);
  :class:`FisherCurves` holds them (``to_dict``, ``save``/``load``, ``plot``).
- :func:`fir_deviation` compares data-space and latent-space curves (``D_R``, ``D_I``).
- Encoder penalties: :func:`dimensional_compression`, :func:`tangential_distortion`, :func:`curvature_penalty`,
  :func:`tangent_basis`, :func:`local_pca_dimension`; spectra: :func:`power_spectrum`,
  :func:`high_frequency_fraction`.
- :func:`run_toy` (compression / tangential / curvature toys) and :func:`diagnose` (pixels vs encoders' latents;
  module :mod:`latentgeo.fisher.diagnosis`).
- :mod:`latentgeo.fisher.exact` has the exact Gaussian / Gaussian-mixture references;
  :mod:`latentgeo.fisher._closed_forms` the toys' exact curves and the ripple's quadrature denoiser.
"""
from latentgeo.fisher.curves import (FisherCurves, FisherDeviation, default_sigmas, fir_deviation, fisher_curves,
                                     plot_curves)
from latentgeo.fisher.penalties import (curvature_penalty, dimensional_compression, high_frequency_fraction,
                                        local_pca_dimension, power_spectrum, tangent_basis, tangential_distortion)


def __getattr__(name):  # lazy: these pull in training code and matplotlib
    if name == "diagnose":
        # the module is `diagnosis`, not `diagnose`: a submodule named like the function would shadow it as a
        # package attribute once anything imported the submodule
        from latentgeo.fisher.diagnosis import diagnose

        return diagnose
    if name in ("run_toy", "TOYS"):
        from latentgeo.fisher import toys

        return getattr(toys, name)
    raise AttributeError(f"module 'latentgeo.fisher' has no attribute '{name}'")


__all__ = ["FisherCurves", "FisherDeviation", "fisher_curves", "fir_deviation", "default_sigmas", "plot_curves",
           "dimensional_compression", "tangential_distortion", "curvature_penalty", "tangent_basis",
           "local_pca_dimension", "power_spectrum", "high_frequency_fraction", "diagnose", "run_toy", "TOYS"]
