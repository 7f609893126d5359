"""Spacetime geometry of a diffusion model (REFERENCE.md §3): exponential-family view of the denoising posteriors,
simulation-free curve energy/length, spline geodesics, Diffusion Edit Distance."""
from latentgeo.spacetime.family import (curve_energy, curve_length, divergence, eta, kl_from_state,
                                        lambda_of_sigma, mu, segment_terms, sigma_of_lambda)
from latentgeo.spacetime.geodesic import Geodesic, energy_and_grad, geodesic
from latentgeo.spacetime.spline import SplineCurve, spline_basis

__all__ = ["eta", "mu", "divergence", "segment_terms", "curve_energy", "curve_length", "kl_from_state",
           "lambda_of_sigma", "sigma_of_lambda", "Geodesic", "geodesic", "energy_and_grad", "SplineCurve",
           "spline_basis"]
