"""Spacetime geometry of a diffusion model (REFERENCE.md §3, Karczewski et al., ICLR 2026).

The denoising posteriors ``p(x0 | x, sigma)`` form an exponential family indexed by the spacetime point
``z = (x, sigma)``: :func:`eta`, :func:`mu`, simulation-free :func:`curve_energy` / :func:`curve_length`,
spline :func:`geodesic` (batched, chunked), Diffusion Edit Distance (:func:`edit_distance`,
:func:`edit_distance_matrix`), constraint penalties (:class:`SNRPenalty`, :class:`RegionAvoidance`) and the paper's
toy demonstrations (:mod:`latentgeo.spacetime.demos`).

Example (exact denoiser of a 1-D mixture; any ``D(x, sigma) -> E[x0|x]`` works)::

    import torch
    from latentgeo.fisher.exact import GaussianMixture
    from latentgeo.spacetime import geodesic, edit_distance

    gm = GaussianMixture(torch.tensor([0.5, 0.5]), torch.tensor([[-1.0], [1.0]]), torch.full((2, 1, 1), 0.02))
    D = gm.as_denoiser()
    g = geodesic(D, start=(torch.tensor([-1.0]), 0.1), end=(torch.tensor([1.0]), 0.1),
                 n_points=64, n_nodes=8, steps=300, n_probes=None)   # exact divergence in 1-D
    g.xs, g.sigmas, g.energy, g.length, g.history["energy"]
    edit_distance(D, torch.tensor([-1.0]), torch.tensor([1.0]), sigma_min=0.1)

Probes: ``n_probes=None`` is the exact divergence (small dimensions); an integer uses that many Rademacher
probes per point, shared along each curve (unbiased per segment, and the probe noise of neighbouring points cancels).
"""
from latentgeo.spacetime.diffed import (edit_distance, edit_distance_matrix, edit_distance_pairs, encode_to_sigma,
                                        pf_ode_path)
from latentgeo.spacetime.family import (OBJECTIVES, curve_energy, curve_length, divergence, eta, kl_from_state,
                                        lambda_of_sigma, mu, objective_terms, segment_components, segment_terms,
                                        sigma_of_lambda)
from latentgeo.spacetime.compare import (between_within, knn_accuracy, mean_distance, semantic_sentence,
                                         semantic_statistics)
from latentgeo.spacetime.energy import energy_and_grad
from latentgeo.spacetime.latent import LatentGeodesic, latent_geodesic
from latentgeo.spacetime.fast import compiled_energy_step
from latentgeo.spacetime.geodesic import Geodesic, geodesic
from latentgeo.spacetime.penalties import RegionAvoidance, SNRPenalty, SumPenalty, region_kl, snr_penalty_value
from latentgeo.spacetime.spline import SplineCurve, spline_basis

__all__ = ["eta", "mu", "divergence", "segment_terms", "curve_energy", "curve_length", "kl_from_state",
           "lambda_of_sigma", "sigma_of_lambda", "Geodesic", "geodesic", "energy_and_grad", "SplineCurve",
           "spline_basis", "compiled_energy_step", "edit_distance", "edit_distance_pairs", "edit_distance_matrix", "encode_to_sigma",
           "pf_ode_path", "SNRPenalty", "RegionAvoidance", "SumPenalty", "snr_penalty_value", "region_kl",
           "segment_components", "objective_terms", "OBJECTIVES", "latent_geodesic", "LatentGeodesic",
           "knn_accuracy", "between_within", "semantic_statistics", "semantic_sentence", "mean_distance"]
