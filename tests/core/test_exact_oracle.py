"""The exact Gaussian-mixture oracle against autograd and against independent closed forms."""
import math

import pytest
import torch
from torch.distributions import MultivariateNormal

from latentgeo.errors import LatentgeoError
from latentgeo.fisher.exact import (GaussianMixture, gaussian_fi, gaussian_fir, gaussian_kl, gaussian_mmse,
                                    gaussian_mmse_rate)

D64 = torch.float64


def _mixture(n=3, K=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(K, n, n, generator=g, dtype=D64)
    C = A @ A.transpose(-1, -2) + 0.1 * torch.eye(n, dtype=D64)
    return GaussianMixture(torch.tensor([0.3, 0.7][:K] if K == 2 else [1.0] * K), torch.randn(K, n, generator=g, dtype=D64), C), C


def test_log_prob_matches_torch_distributions():
    gm, C = _mixture()
    x = torch.randn(6, 3, dtype=D64)
    for sigma in (0.0, 0.3, 2.0):
        ref = torch.logsumexp(torch.stack([
            math.log(w) + MultivariateNormal(gm.means[k], C[k] + sigma**2 * torch.eye(3, dtype=D64)).log_prob(x)
            for k, w in enumerate(gm.weights.tolist())]), 0)
        assert torch.allclose(gm.log_prob(x, sigma), ref, atol=1e-12)


def test_score_and_hessian_match_autograd():
    gm, _ = _mixture()
    x = torch.randn(4, 3, dtype=D64)
    sigma = torch.tensor([0.1, 0.5, 1.0, 3.0], dtype=D64)
    xr = x.clone().requires_grad_(True)
    grad = torch.autograd.grad(gm.log_prob(xr, sigma).sum(), xr)[0]
    assert torch.allclose(gm.score(x, sigma), grad, atol=1e-10)
    for i in range(4):
        H = torch.autograd.functional.hessian(lambda z: gm.log_prob(z[None], sigma[i:i + 1]).sum(), x[i])
        assert torch.allclose(gm.hessian(x[i:i + 1], sigma[i:i + 1])[0], H, atol=1e-9)


def test_denoiser_is_posterior_mean_by_tweedie_and_cov():
    # one Gaussian: E[x0|x] = m + C (C + tau)^-1 (x - m), Cov = C - C (C+tau)^-1 C
    gm, C = _mixture(K=1)
    m, C0 = gm.means[0], C[0]
    x = torch.randn(5, 3, dtype=D64)
    tau = 0.49
    S = C0 + tau * torch.eye(3, dtype=D64)
    ref = m + (C0 @ torch.linalg.solve(S, (x - m).T)).T
    assert torch.allclose(gm.denoiser(x, 0.7), ref, atol=1e-12)
    cov = C0 - C0 @ torch.linalg.solve(S, C0)
    assert torch.allclose(gm.posterior_cov(x, 0.7), cov.expand(5, 3, 3), atol=1e-12)


def test_single_gaussian_closed_forms_match_monte_carlo():
    gm, C = _mixture(K=1)
    ref = gm.fisher_reference(0.5, m=100_000, generator=torch.Generator().manual_seed(1))
    tau = 0.25
    # the trace form is exact for a Gaussian (the Hessian is constant)
    assert ref["fi_trace"] == pytest.approx(float(gaussian_fi(C[0], tau)), rel=1e-12)
    assert ref["fir"] == pytest.approx(float(gaussian_fir(C[0], tau)), rel=1e-12)
    assert ref["mmse_rate"] == pytest.approx(float(gaussian_mmse_rate(C[0], tau)), rel=1e-12)
    assert ref["fi"] == pytest.approx(float(gaussian_fi(C[0], tau)), rel=0.02)
    assert ref["mmse"] == pytest.approx(float(gaussian_mmse(C[0], tau)), rel=0.02)
    # identities between the closed forms: mmse = n tau - tau^2 I, mmse' = n - 2 tau I - tau^2 R
    n = 3
    I, R = gaussian_fi(C[0], tau), gaussian_fir(C[0], tau)
    assert float(gaussian_mmse(C[0], tau)) == pytest.approx(float(n * tau - tau**2 * I), rel=1e-12)
    assert float(gaussian_mmse_rate(C[0], tau)) == pytest.approx(float(n - 2 * tau * I - tau**2 * R), rel=1e-12)
    # R is the derivative of I
    h = 1e-6
    assert float(R) == pytest.approx(float((gaussian_fi(C[0], tau + h) - gaussian_fi(C[0], tau - h)) / (2 * h)), rel=1e-6)


def test_sampling_moments():
    gm, _ = _mixture()
    x = gm.sample(200_000, torch.Generator().manual_seed(2))
    assert torch.allclose(x.mean(0), gm.mean(), atol=0.03)
    assert torch.allclose(torch.cov(x.T), gm.covariance(), atol=0.08)


def test_gaussian_kl_against_monte_carlo():
    g = torch.Generator().manual_seed(4)
    A, B = torch.randn(2, 2, generator=g, dtype=D64), torch.randn(2, 2, generator=g, dtype=D64)
    C0, C1 = A @ A.T + 0.5 * torch.eye(2, dtype=D64), B @ B.T + 0.5 * torch.eye(2, dtype=D64)
    m0, m1 = torch.zeros(2, dtype=D64), torch.tensor([0.5, -1.0], dtype=D64)
    p, q = MultivariateNormal(m0, C0), MultivariateNormal(m1, C1)
    assert float(gaussian_kl(m0, C0, m1, C1)) == pytest.approx(float(torch.distributions.kl_divergence(p, q)), rel=1e-12)
    assert float(gaussian_kl(m0, C0, m0, C0)) == pytest.approx(0.0, abs=1e-12)


def test_bad_shapes_are_clear_errors():
    gm, _ = _mixture()
    with pytest.raises(LatentgeoError, match="R\\^3"):
        gm.score(torch.zeros(2, 4, dtype=D64), 1.0)
    with pytest.raises(LatentgeoError, match="sigma has"):
        gm.score(torch.zeros(2, 3, dtype=D64), torch.ones(3, dtype=D64))
