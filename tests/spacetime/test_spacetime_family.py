"""Exponential-family quantities against Gaussian / mixture closed forms."""
import math

import pytest
import torch

from latentgeo.errors import LatentgeoError
from latentgeo.fisher.exact import GaussianMixture, gaussian_kl
from latentgeo.spacetime import curve_energy, curve_length, divergence, eta, kl_from_state, mu, segment_terms

DT = torch.float64


def _gaussian(n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(n, n, generator=g, dtype=DT)
    C = A @ A.T + 0.2 * torch.eye(n, dtype=DT)
    m = torch.randn(n, generator=g, dtype=DT)
    return m, C, GaussianMixture(torch.ones(1, dtype=DT), m[None], C[None])


def _posterior(m, C, x, s):
    """p(x0|x) for x0 ~ N(m, C), x = x0 + s n: N(S (C^-1 m + x/s^2), S), S = (C^-1 + I/s^2)^-1."""
    I = torch.eye(m.shape[0], dtype=DT)
    S = torch.linalg.inv(torch.linalg.inv(C) + I / s**2)
    return S @ (torch.linalg.solve(C, m) + x / s**2), S


def test_eta_values():
    x = torch.tensor([[1.0, -2.0]], dtype=DT)
    ex, es = eta(x, 0.5)
    assert torch.allclose(ex, x / 0.25)
    assert torch.allclose(es, torch.tensor([-2.0], dtype=DT))


def test_mu_matches_posterior_moments_gaussian():
    m, C, gm = _gaussian()
    D = gm.as_denoiser()
    x = torch.randn(4, 3, dtype=DT, generator=torch.Generator().manual_seed(1))
    s = torch.tensor([0.1, 0.5, 1.0, 3.0], dtype=DT)
    mx, ms = mu(D, x, s, n_probes=None)
    for i in range(4):
        pm, S = _posterior(m, C, x[i], s[i])
        assert torch.allclose(mx[i], pm, atol=1e-12)
        assert abs(float(ms[i] - (torch.trace(S) + pm @ pm))) < 1e-10


def test_segment_terms_equal_symmetrised_kl():
    m, C, gm = _gaussian(n=3, seed=2)
    D = gm.as_denoiser()
    g = torch.Generator().manual_seed(3)
    N = 7
    xs = torch.randn(N, 3, generator=g, dtype=DT) * 2
    sig = torch.rand(N, generator=g, dtype=DT) * 2 + 0.2
    d = segment_terms(D, xs, sig, n_probes=None)
    for i in range(N - 1):
        a = _posterior(m, C, xs[i], sig[i])
        b = _posterior(m, C, xs[i + 1], sig[i + 1])
        ref = gaussian_kl(a[0], a[1], b[0], b[1]) + gaussian_kl(b[0], b[1], a[0], a[1])
        assert abs(float(d[i] - ref)) < 1e-10 * max(1.0, float(ref))
    # energy and length are the documented sums
    E = curve_energy(D, xs, sig, n_probes=None)
    L = curve_length(D, xs, sig, n_probes=None)
    assert math.isclose(float(E), 0.5 * (N - 1) * float(d.sum()), rel_tol=1e-12)
    assert math.isclose(float(L), float(d.sqrt().sum()), rel_tol=1e-12)


def test_exact_divergence_is_trace_of_posterior_cov_mixture():
    gm = GaussianMixture(torch.tensor([0.3, 0.7], dtype=DT), torch.tensor([[-1.0, 0.5], [1.0, 0.0]], dtype=DT),
                         torch.diag_embed(torch.tensor([[0.2, 0.05], [0.1, 0.3]], dtype=DT)))
    x = torch.randn(5, 2, dtype=DT, generator=torch.Generator().manual_seed(0))
    s = torch.linspace(0.2, 2.0, 5, dtype=DT)
    div = divergence(gm.as_denoiser(), x, s, n_probes=None)
    ref = torch.diagonal(gm.posterior_cov(x, s), dim1=-2, dim2=-1).sum(-1) / s**2
    assert torch.allclose(div, ref, atol=1e-12)


def test_hutchinson_unbiased():
    gm = GaussianMixture(torch.tensor([0.5, 0.5], dtype=DT),
                         torch.tensor([[-1.0, 0.5, 0.0], [1.0, 0.0, 1.0]], dtype=DT),
                         torch.tensor([[0.2, 0.05, 0.4], [0.1, 0.3, 0.2]], dtype=DT))
    D = gm.as_denoiser()
    x = torch.randn(3, 3, dtype=DT, generator=torch.Generator().manual_seed(0))
    s = torch.tensor([0.3, 0.8, 1.5], dtype=DT)
    exact = mu(D, x, s, n_probes=None)[1]
    _, samples = divergence(D, x, s, n_probes=4000, generator=torch.Generator().manual_seed(5),
                            return_samples=True)
    ms = s**2 * samples + (D(x, s) ** 2).sum(-1)  # per-probe mu_s estimates [M, B]
    mean, se = ms.mean(0), ms.std(0) / math.sqrt(ms.shape[0])
    assert (se > 0).all()
    assert ((mean - exact).abs() < 3 * se).all()
    # and mu() with many probes agrees within the same bound
    est = mu(D, x, s, n_probes=4000, generator=torch.Generator().manual_seed(6))[1]
    assert ((est - exact).abs() < 3 * se * 1.5).all()


def test_mu_differentiable_in_x_and_sigma():
    gm = GaussianMixture(torch.tensor([0.5, 0.5], dtype=DT), torch.tensor([[-1.0, 0.5], [1.0, 0.0]], dtype=DT),
                         torch.diag_embed(torch.tensor([[0.2, 0.05], [0.1, 0.3]], dtype=DT)))
    D = gm.as_denoiser()
    x = torch.tensor([[0.3, -0.2], [0.1, 0.4]], dtype=DT, requires_grad=True)
    s = torch.tensor([0.5, 0.9], dtype=DT, requires_grad=True)

    def f(x, s):
        return mu(D, x, s, n_probes=None)[1]

    assert torch.autograd.gradcheck(f, (x, s))


def test_kl_from_state_matches_closed_form():
    m, C, gm = _gaussian(n=2, seed=4)
    D = gm.as_denoiser()
    xstar, sstar = torch.tensor([0.7, 0.7], dtype=DT), 0.6
    a = _posterior(m, C, xstar, torch.tensor(sstar, dtype=DT))
    errs = []
    for N in (50, 200):  # trapezoid rule: the error must shrink ~ N^-2
        xs = torch.stack([torch.linspace(-1, 1, N, dtype=DT), torch.linspace(0.5, -0.5, N, dtype=DT)], 1)
        sig = torch.linspace(0.4, 1.2, N, dtype=DT)
        kl = kl_from_state(D, xstar, sstar, xs, sig, n_bridge=N, n_probes=None)
        ref = torch.stack([gaussian_kl(a[0], a[1], *_posterior(m, C, xs[i], sig[i])) for i in range(N)])
        errs.append(float((kl - ref).abs().max()))
    assert errs[1] < 1e-3
    assert errs[1] < errs[0] / 8


def test_bad_shapes_raise():
    gm = GaussianMixture(torch.ones(1, dtype=DT), torch.zeros(1, 2, dtype=DT), torch.eye(2, dtype=DT)[None])
    with pytest.raises(LatentgeoError):
        segment_terms(gm.as_denoiser(), torch.zeros(5, 2, dtype=DT), torch.ones(4, dtype=DT))
    with pytest.raises(LatentgeoError):
        mu(gm.as_denoiser(), torch.zeros(3, 2, dtype=DT), torch.ones(2, dtype=DT))


def test_mu_gradient_through_a_network_matches_finite_differences():
    """Double backward through a real (row-independent) network: gradcheck of mu in x and sigma."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.SiLU(), torch.nn.Linear(16, 16), torch.nn.Tanh(),
                              torch.nn.Linear(16, 2)).double()

    def D(x, s):
        return x / (1 + s[:, None] ** 2) + s[:, None] * net(torch.cat([x, torch.log(s)[:, None]], 1))

    x = torch.randn(3, 2, dtype=DT, requires_grad=True)
    s = torch.tensor([0.3, 0.7, 1.4], dtype=DT, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: mu(D, a, b, n_probes=None)[1], (x, s))
    # and the exact divergence equals the Jacobian trace
    J = torch.autograd.functional.jacobian(lambda a: D(a, s.detach()), x.detach())  # [B, 2, B, 2]
    tr = torch.stack([torch.trace(J[i, :, i, :]) for i in range(3)])
    assert torch.allclose(divergence(D, x.detach(), s.detach(), n_probes=None), tr, atol=1e-12)


def test_ssim_properties():
    from latentgeo.spacetime.compare import ssim

    g = torch.Generator().manual_seed(0)
    a = torch.rand(2, 1, 8, 8, generator=g) * 2 - 1
    assert torch.allclose(ssim(a, a), torch.ones(2, dtype=DT))
    b = a + 0.5 * torch.randn(a.shape, generator=g)
    c = a + 0.1 * torch.randn(a.shape, generator=g)
    s_b, s_c = ssim(a, b), ssim(a, c)
    assert (s_b < s_c).all() and (s_c < 1).all()
    assert torch.allclose(ssim(a, b), ssim(b, a))


def test_exact_divergence_refuses_huge_dimension():
    D = lambda x, s: x  # noqa: E731
    with pytest.raises(LatentgeoError):
        mu(D, torch.zeros(1, 2000), torch.ones(1), n_probes=None)
