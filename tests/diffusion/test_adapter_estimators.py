"""Estimators through an adapter give the same numbers as through the exact denoiser: fisher_curves, curve_energy
and geodesic on an exact Gaussian-mixture model written in VP-epsilon and rectified-flow parametrisations."""
import torch

from latentgeo.diffusion import FlowToVE, VPToVE
from latentgeo.fisher import fisher_curves
from latentgeo.fisher.exact import GaussianMixture
from latentgeo.spacetime import curve_energy, geodesic

F64 = torch.float64


def _gm():
    g = torch.Generator().manual_seed(3)
    A = torch.randn(2, 3, 3, generator=g, dtype=F64)
    covs = A @ A.transpose(-1, -2) * 0.2 + 0.05 * torch.eye(3, dtype=F64)
    return GaussianMixture(torch.tensor([0.4, 0.6], dtype=F64), 1.2 * torch.randn(2, 3, generator=g, dtype=F64),
                           covs)


GM = _gm()


def _eps_model(x_t, t):
    """Exact epsilon prediction at log-SNR time t = -2 ln sigma, written from the VP definition
    x_t = alpha x0 + s n with alpha = 1/sqrt(1 + sigma^2), s = sigma alpha: E[n | x_t] = (x - D(x, sigma)) / sigma
    with x = x_t / alpha."""
    sigma = torch.exp(-t / 2)
    alpha = 1 / torch.sqrt(1 + sigma ** 2)
    x = x_t / alpha[:, None]
    return (x - GM.denoiser(x, sigma)) / sigma[:, None]


def _velocity_model(x_t, t):
    """Exact rectified-flow velocity E[n - x0 | x_t] for x_t = (1 - t) x0 + t n: with sigma = t / (1 - t) and
    x = x_t / (1 - t), E[x0 | x_t] = D(x, sigma), E[n | x_t] = (x_t - (1 - t) D) / t."""
    sigma = t / (1 - t)
    x = x_t / (1 - t)[:, None]
    d = GM.denoiser(x, sigma)
    return (x_t - (1 - t)[:, None] * d) / t[:, None] - d


ADAPTERS = {"vp-eps": VPToVE(_eps_model, time="log_snr", prediction="epsilon"),
            "rectified-flow": FlowToVE(_velocity_model, convention="rectified_flow")}


def test_fisher_curves_through_adapters_equal_the_exact_denoiser():
    x0 = GM.sample(64, generator=torch.Generator().manual_seed(0))
    sigmas = torch.tensor([0.05, 0.3, 1.0, 4.0], dtype=F64)

    def run(den):
        return fisher_curves(den, x0, sigmas, n_probes=4, generator=torch.Generator().manual_seed(7),
                             use_score=False, dtype=F64)

    ref = run(GM.as_denoiser())
    for name, den in ADAPTERS.items():
        c = run(den)
        for field in ("fi", "fir", "mmse", "mmse_rate"):
            a, b = torch.as_tensor(getattr(c, field)), torch.as_tensor(getattr(ref, field))
            assert torch.allclose(a, b, rtol=1e-6, atol=1e-9), (name, field, a, b)


def test_curve_energy_and_geodesic_through_adapters_equal_the_exact_denoiser():
    g = torch.Generator().manual_seed(1)
    a, b = GM.sample(2, generator=g)
    s = torch.linspace(0, 1, 9, dtype=F64)[:, None]
    xs = (1 - s) * a + s * b + 0.3 * torch.sin(torch.pi * s)
    sig = 0.2 + 0.6 * torch.sin(torch.pi * s[:, 0])
    ref = curve_energy(GM.as_denoiser(), xs, sig, n_probes=None)
    for name, den in ADAPTERS.items():
        e = curve_energy(den, xs, sig, n_probes=None)
        assert torch.allclose(e, ref, rtol=1e-6), (name, float(e), float(ref))
    start, end = (a, torch.tensor(0.3, dtype=F64)), (b, torch.tensor(0.3, dtype=F64))
    geo_ref = geodesic(GM.as_denoiser(), start, end, n_points=8, n_nodes=3, steps=5, lr=0.05, n_probes=None)
    for name, den in ADAPTERS.items():
        geo = geodesic(den, start, end, n_points=8, n_nodes=3, steps=5, lr=0.05, n_probes=None)
        assert abs(geo.energy - geo_ref.energy) <= 1e-6 * abs(geo_ref.energy), name
        assert torch.allclose(geo.xs, geo_ref.xs, atol=1e-6), name
