"""Synthetic samplers: shapes, determinism and statistics against their exact laws."""
import math

import pytest
import torch

import latentgeo.data as D
from latentgeo.errors import LatentgeoError


def _cov(x):
    x = x.to(torch.float64)
    xc = x - x.mean(0)
    return xc.T @ xc / (x.shape[0] - 1)


SAMPLERS = [
    (lambda n, s: D.gaussian_mixture_subspace(n, seed=s), 10),
    (lambda n, s: D.gaussian_mixture_subspace(n, dim=5, n_components=3, seed=s), 5),
    (lambda n, s: D.embedded_gaussian(n, dim=7, seed=s), 7),
    (lambda n, s: D.embedded_gaussian(n, dim=7, seed=s, frame="random"), 7),
    (lambda n, s: D.anisotropic_gaussian(n, 0.3, seed=s), 2),
    (lambda n, s: D.ripple(n, 0.2, 3.0, seed=s), 3),
    (lambda n, s: D.two_moons(n, seed=s), 2),
    (lambda n, s: D.rings(n, seed=s), 2),
    (lambda n, s: D.checkerboard(n, seed=s), 2),
]


@pytest.mark.parametrize("fn,dim", SAMPLERS)
def test_shape_dtype_determinism(fn, dim):
    a, b, c = fn(257, 3), fn(257, 3), fn(257, 4)
    assert a.shape == (257, dim) and a.dtype == torch.float32
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert torch.isfinite(a).all()


def test_global_rng_untouched():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    D.gaussian_mixture_subspace(100, seed=5)
    D.two_moons(100, seed=5)
    assert torch.equal(torch.rand(3), expected)


def test_float64_option():
    x = D.anisotropic_gaussian(10, 0.5, seed=0, dtype=torch.float64)
    assert x.dtype == torch.float64
    assert torch.allclose(x.float(), D.anisotropic_gaussian(10, 0.5, seed=0))


def test_gmm_subspace_statistics_match_exact_params():
    n, dim, k, noise = 40_000, 6, 4, 0.05
    x, lab = D.gaussian_mixture_subspace(n, dim=dim, n_components=k, seed=1, noise=noise, return_labels=True)
    assert lab.dtype == torch.int64 and lab.min() >= 0 and lab.max() < k
    w, m, c = D.subspace_mixture_params(dim, k, noise=noise)
    assert torch.allclose(w.sum(), torch.tensor(1.0, dtype=torch.float64))
    # Means lie on the circle of radius 2 in the first two coordinates only.
    assert torch.allclose(m[:, :2].norm(dim=1), torch.full((k,), 2.0, dtype=torch.float64))
    assert (m[:, 2:] == 0).all()
    # Label frequencies ~ 1/k (binomial standard error).
    freq = torch.bincount(lab, minlength=k).double() / n
    assert (freq - 1 / k).abs().max() < 5 * math.sqrt((1 / k) * (1 - 1 / k) / n)
    # Per-component mean and covariance.
    for j in range(k):
        xj = x[lab == j].double()
        nj = xj.shape[0]
        sd = torch.sqrt(torch.diagonal(c[j]))
        assert ((xj.mean(0) - m[j]).abs() < 5 * sd / math.sqrt(nj)).all()
        cj = _cov(xj)
        # Sample variance of a Gaussian has standard error sqrt(2/n) * var.
        assert ((torch.diagonal(cj) - sd**2).abs() < 5 * math.sqrt(2 / nj) * sd**2).all()
    # Whole-mixture covariance = sum_k w_k (C_k + m_k m_k^T) - mu mu^T.
    mu = (w[:, None] * m).sum(0)
    cov = (w[:, None, None] * (c + m[:, :, None] * m[:, None, :])).sum(0) - torch.outer(mu, mu)
    assert torch.allclose(_cov(x)[:2, :2], cov[:2, :2], atol=0.06)
    assert torch.allclose(_cov(x)[2:, 2:], cov[2:, 2:], atol=1e-4)


def test_gmm_noise_zero_is_exactly_planar():
    x = D.gaussian_mixture_subspace(100, dim=8, noise=0.0, seed=0)
    assert (x[:, 2:] == 0).all()


def _pdist(a):
    # Direct differences: torch.cdist's matrix-product path loses ~1e-9 on the diagonal.
    return ((a[:, None, :] - a[None, :, :]) ** 2).sum(-1).sqrt()


def test_embedded_coords_and_random_frame_are_isometric():
    n = 300
    y = D.embedded_gaussian(n, dim=2, seed=7, dtype=torch.float64)  # the 2-D source itself (U = I_2)
    xc = D.embedded_gaussian(n, dim=12, seed=7, dtype=torch.float64)
    xr = D.embedded_gaussian(n, dim=12, seed=7, frame="random", dtype=torch.float64)
    assert torch.equal(xc[:, :2], y) and (xc[:, 2:] == 0).all()
    dy = _pdist(y)
    assert torch.allclose(_pdist(xc), dy, atol=1e-12)
    assert torch.allclose(_pdist(xr), dy, atol=1e-12)
    # The random frame is orthonormal, fixed across sample seeds, and not the coordinate frame.
    u = D.embedding_frame(12, "random")
    assert torch.allclose(u.T @ u, torch.eye(2, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(xr, y @ u.T, atol=1e-12)
    assert (u[2:].abs() > 1e-3).any()


def test_embedded_first_two_coordinates_are_standard_normal():
    x = D.embedded_gaussian(40_000, dim=4, seed=2)
    cov = _cov(x)[:2, :2]
    assert torch.allclose(cov, torch.eye(2, dtype=torch.float64), atol=5 * math.sqrt(2 / 40_000) * 1.5)


@pytest.mark.parametrize("delta0", [0.5, -0.3, 0.9])
def test_anisotropic_covariance(delta0):
    n = 50_000
    x = D.anisotropic_gaussian(n, delta0, seed=11)
    target = torch.diag(torch.tensor([1 + delta0, 1 - delta0], dtype=torch.float64))
    cov = _cov(x)
    tol = 5 * math.sqrt(2 / n) * (1 + abs(delta0))  # 5 standard errors of a sample variance
    assert (cov - target).abs().max() < tol
    assert x.mean(0).abs().max() < 5 * math.sqrt((1 + abs(delta0)) / n)


@pytest.mark.parametrize("delta0", [1.0, -1.0, 1.5, float("nan")])
def test_anisotropic_rejects_bad_delta(delta0):
    with pytest.raises(LatentgeoError, match="delta0"):
        D.anisotropic_gaussian(10, delta0)


def test_ripple_is_graph_of_sine():
    eps0, omega = 0.3, 4.0
    x = D.ripple(20_000, eps0, omega, seed=3, dtype=torch.float64)
    assert torch.allclose(x[:, 2], eps0 * torch.sin(omega * x[:, 0]), atol=1e-14)
    assert x[:, 2].abs().max() <= eps0
    assert (_cov(x[:, :2]) - torch.eye(2, dtype=torch.float64)).abs().max() < 5 * math.sqrt(2 / 20_000)


def test_moons_lie_on_half_circles_without_noise():
    x, lab = D.two_moons(2000, seed=0, noise=0.0, return_labels=True, dtype=torch.float64)
    p = x + torch.tensor([0.5, 0.25], dtype=torch.float64)
    centre = torch.where(lab[:, None] == 0, torch.zeros(2, dtype=torch.float64),
                         torch.tensor([1.0, 0.5], dtype=torch.float64))
    assert torch.allclose((p - centre).norm(dim=1), torch.ones(2000, dtype=torch.float64), atol=1e-12)
    assert (p[lab == 0, 1] >= -1e-12).all() and (p[lab == 1, 1] <= 0.5 + 1e-12).all()
    assert abs(lab.double().mean().item() - 0.5) < 5 * 0.5 / math.sqrt(2000)
    # Noise is additive isotropic Gaussian with the requested std.
    xn = D.two_moons(2000, seed=0, noise=0.1, dtype=torch.float64)
    resid = xn - x
    assert abs(resid.std().item() - 0.1) < 0.01


def test_rings_radii_and_proportions():
    n = 30_000
    x, lab = D.rings(n, seed=0, n_rings=3, noise=0.0, return_labels=True, dtype=torch.float64)
    r = x.norm(dim=1)
    assert torch.allclose(r, (lab + 1).double() / 3, atol=1e-12)
    freq = torch.bincount(lab, minlength=3).double() / n
    target = torch.tensor([1, 2, 3], dtype=torch.float64) / 6  # proportional to circumference
    assert (freq - target).abs().max() < 5 * math.sqrt(0.25 / n)


def test_checkerboard_support_and_uniform_cells():
    n = 32_000
    x = D.checkerboard(n, seed=0)
    assert x.min() >= -2 and x.max() <= 2
    cell = torch.floor(x.double() + 2).long().clamp(0, 3)
    assert ((cell[:, 0] + cell[:, 1]) % 2 == 0).all()
    counts = torch.bincount(cell[:, 0] * 4 + cell[:, 1], minlength=16).double() / n
    dark = counts[counts > 0]
    assert dark.numel() == 8
    assert (dark - 1 / 8).abs().max() < 5 * math.sqrt((1 / 8) * (7 / 8) / n)


@pytest.mark.parametrize("call,match", [
    (lambda: D.two_moons(0), "positive integer"),
    (lambda: D.rings(-3), "positive integer"),
    (lambda: D.gaussian_mixture_subspace(10, dim=1), "dim"),
    (lambda: D.gaussian_mixture_subspace(10, noise=-1.0), "noise"),
    (lambda: D.embedded_gaussian(10, frame="weird"), "frame"),
    (lambda: D.ripple(10, eps0=float("inf")), "eps0"),
    (lambda: D.checkerboard(10, seed=1.5), "seed"),
])
def test_bad_arguments(call, match):
    with pytest.raises(LatentgeoError, match=match):
        call()


def test_gmm_samples_agree_with_exact_mixture_oracle():
    """Independent check against latentgeo.fisher.exact: moments and average log-likelihood of our samples."""
    exact = pytest.importorskip("latentgeo.fisher.exact")
    dim, k, noise, n = 5, 6, 0.1, 30_000
    gm = exact.GaussianMixture(*D.subspace_mixture_params(dim, k, noise=noise))
    x = D.gaussian_mixture_subspace(n, dim=dim, n_components=k, noise=noise, seed=4, dtype=torch.float64)
    assert (x.mean(0) - gm.mean()).abs().max() < 5 * gm.covariance().diagonal().sqrt().max() / math.sqrt(n)
    assert (_cov(x) - gm.covariance()).abs().max() < 0.06
    # E_p[log p] estimated from our samples vs from the oracle's own sampler (two independent MC estimates).
    ours = gm.log_prob(x)
    theirs = gm.log_prob(gm.sample(n, torch.Generator().manual_seed(99)))
    se = math.sqrt(ours.var().item() / n + theirs.var().item() / n)
    assert abs(ours.mean().item() - theirs.mean().item()) < 5 * se
    # A wrong law (noise doubled) is detected by the same statistic.
    wrong = D.gaussian_mixture_subspace(n, dim=dim, n_components=k, noise=2 * noise, seed=4, dtype=torch.float64)
    assert abs(gm.log_prob(wrong).mean().item() - theirs.mean().item()) > 20 * se
