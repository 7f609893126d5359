"""Spacetime geometry of a diffusion model (REFERENCE.md §3, Karczewski et al., ICLR 2026).

The denoising posteriors ``p(x0 | x, sigma)`` form an exponential family indexed by the spacetime point
``z = (x, sigma)``: :func:`eta`, :func:`mu`, simulation-free :func:`curve_energy` / :func:`curve_length`,
spline :func:`geodesic` (batched, chunked), Diffusion Edit Distance (:func:`edit_distance`,
:func:`edit_distance_matrix`), constraint penalties (:class:`SNRPenalty`, :class:`RegionAvoidance`) and the paper's
toy demonstrations (:mod:`latentgeo.spacetime.demos`).
"""
from latentgeo.spacetime.diffed import (edit_distance, edit_distance_matrix, edit_distance_pairs, encode_to_sigma,
                                        pf_ode_path)
from latentgeo.spacetime.family import (curve_energy, curve_length, divergence, eta, kl_from_state,
                                        lambda_of_sigma, mu, segment_terms, sigma_of_lambda)
from latentgeo.spacetime.geodesic import Geodesic, energy_and_grad, geodesic
from latentgeo.spacetime.penalties import RegionAvoidance, SNRPenalty, SumPenalty, region_kl, snr_penalty_value
from latentgeo.spacetime.spline import SplineCurve, spline_basis

__all__ = ["eta", "mu", "divergence", "segment_terms", "curve_energy", "curve_length", "kl_from_state",
           "lambda_of_sigma", "sigma_of_lambda", "Geodesic", "geodesic", "energy_and_grad", "SplineCurve",
           "spline_basis", "edit_distance", "edit_distance_pairs", "edit_distance_matrix", "encode_to_sigma",
           "pf_ode_path", "SNRPenalty", "RegionAvoidance", "SumPenalty", "snr_penalty_value", "region_kl"]
