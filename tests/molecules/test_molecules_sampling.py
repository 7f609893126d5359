"""Langevin vs the Boltzmann histogram, annealed Langevin vs the OU closed form, KDE denoiser vs the mixture oracle,
string method vs the grid lower bound."""
import math

import numpy as np
import pytest
import torch

from latentgeo.errors import LatentgeoError
from latentgeo.molecules import ALANINE_END, ALANINE_START, AlanineTable, MuellerBrown, Potential, grid_lower_bound
from latentgeo.molecules.baselines import densify, straight_path, string_method
from latentgeo.molecules.kde import KDEDenoiser
from latentgeo.molecules.langevin import boltzmann_samples, langevin, uniform_starts
from latentgeo.molecules.tps import annealed_langevin, max_energy


def _boltzmann_hist(pot, kT, nb=12, sub=16):
    """Exact bin probabilities of exp(-U/kT) restricted to the box (midpoint rule on sub x sub points per bin)."""
    (x0, x1), (y0, y1) = pot.bounds
    ex, ey = np.linspace(x0, x1, nb + 1), np.linspace(y0, y1, nb + 1)
    fx = np.linspace(x0, x1, nb * sub + 1)
    fy = np.linspace(y0, y1, nb * sub + 1)
    fx, fy = (fx[:-1] + fx[1:]) / 2, (fy[:-1] + fy[1:]) / 2
    g = np.stack(np.meshgrid(fx, fy, indexing="ij"), -1).reshape(-1, 2)
    u = pot.score_energy(g).reshape(nb * sub, nb * sub)
    w = np.exp(-(u - u.min()) / kT).reshape(nb, sub, nb, sub).sum((1, 3))
    return w / w.sum(), ex, ey


@pytest.mark.slow
def test_mueller_brown_langevin_matches_boltzmann():
    """Total variation between the Langevin histogram and the exact Boltzmann bin masses.

    Bound: with M independent samples the expected sampling TV is at most 0.5 * sum_i sqrt(p_i (1 - p_i) / M)
    (Jensen on E|p_hat - p|). We use M = number of chains (10k; snapshots of one chain are counted as a single sample,
    a conservative choice) — about 0.041 here — and allow 0.02 more for the O(dt) Euler-Maruyama bias and for the
    incomplete mixing from uniform starts. Samples at the wrong temperature (kT x 0.8 or x 1.25) miss this bound
    (TV ~0.15 / ~0.085), so the test can fail.
    """
    pot = MuellerBrown(scale=0.03)  # barriers of a few kT so that 2000 steps mix between the basins
    p, ex, ey = _boltzmann_hist(pot, 1.0)
    gen = torch.Generator().manual_seed(0)
    n = 10000
    _, rec = langevin(pot, uniform_starts(pot, n, gen), 2000, 2e-3, 1.0, gen, record_every=500)
    assert pot.n_grad_evals == n * 2000
    s = rec[1:].reshape(-1, 2).numpy()
    h, _, _ = np.histogram2d(s[:, 0], s[:, 1], [ex, ey])
    h /= h.sum()
    bound = 0.5 * np.sqrt(p * (1 - p) / n).sum() + 0.02
    tv = 0.5 * np.abs(h - p).sum()
    assert tv < bound, (tv, bound)
    for wrong in (0.8, 1.25):
        assert 0.5 * np.abs(h - _boltzmann_hist(pot, wrong)[0]).sum() > bound


class _Flat(Potential):
    def _energy(self, x):
        return torch.zeros(x.shape[0], dtype=x.dtype)

    def _energy_and_grad(self, x):
        return self._energy(x), torch.zeros_like(x)


def test_annealed_langevin_tether_matches_ou_closed_form():
    """Flat U: at a fixed curve point the chain is Euler-discretised OU, x' = (1 - a) x + sqrt(2 dt) xi with
    a = dt / sigma^2, whose stationary variance is exactly 2 dt / (1 - (1 - a)^2) = sigma^2 * 2 / (2 - a)."""
    pot = _Flat()
    sigma, dt = 0.2, 4e-3
    xs = torch.tensor([[1.0, -2.0]] * 3, dtype=torch.float64)
    paths = annealed_langevin(pot, xs, torch.full((3,), sigma, dtype=torch.float64), 20000, k_steps=200, step=dt,
                              generator=torch.Generator().manual_seed(0))
    assert paths.shape == (20000, 3, 2) and pot.n_grad_evals == 20000 * 3 * 200
    a = dt / sigma ** 2
    var = sigma ** 2 * 2 / (2 - a)
    last = paths[:, -1]
    assert torch.allclose(last.mean(0), xs[0], atol=4 * math.sqrt(var / 20000))
    # standard error of a variance estimate with 40k Gaussian values: var * sqrt(2 / 40000)
    assert last.var(0).mean().item() == pytest.approx(var, rel=4 * math.sqrt(2 / 40000))
    with pytest.raises(LatentgeoError, match="too large"):
        annealed_langevin(pot, xs, torch.full((3,), 0.01, dtype=torch.float64), 2, step=1e-3)


def test_leimkuhler_matthews_scheme_has_the_exact_ou_variance():
    """Same OU chain with the Leimkuhler-Matthews noise (xi_n + xi_{n+1}) / 2: y_n = x_n - c xi_n is an AR(1) with
    innovation c (2 - a) xi_n (c = sqrt(2 dt) / 2), so Var x = c^2 (2 - a) / a + c^2 = 2 c^2 / a = sigma^2 EXACTLY,
    where Euler-Maruyama is 2 / (2 - a) = 5% too wide here (a = 0.1): the test tells the two apart."""
    pot = _Flat()
    sigma, dt = 0.2, 4e-3
    xs = torch.tensor([[0.5, 0.0]] * 2, dtype=torch.float64)
    paths = annealed_langevin(pot, xs, torch.full((2,), sigma, dtype=torch.float64), 20000, k_steps=200, step=dt,
                              generator=torch.Generator().manual_seed(1), scheme="lm")
    v = paths[:, -1].var(0).mean().item()
    assert v == pytest.approx(sigma ** 2, rel=4 * math.sqrt(2 / 40000))
    assert abs(v - sigma ** 2 * 2 / (2 - dt / sigma ** 2)) > 0.02 * sigma ** 2
    # the plain sampler takes the scheme too, and an unknown scheme is a clear error
    x = langevin(pot, torch.zeros(4, 2, dtype=torch.float64), 3, 1e-3, scheme="lm")
    assert x.shape == (4, 2)
    with pytest.raises(LatentgeoError, match="unknown Langevin scheme 'heun'"):
        langevin(pot, torch.zeros(4, 2, dtype=torch.float64), 3, 1e-3, scheme="heun")


def test_kde_denoiser_equals_gaussian_mixture_oracle():
    from latentgeo.fisher.exact import GaussianMixture

    g = torch.Generator().manual_seed(0)
    pts = torch.randn(30, 2, generator=g, dtype=torch.float64)
    h = 0.3
    den = KDEDenoiser(pts, bandwidth=h)
    gm = GaussianMixture(torch.ones(30), pts, (h ** 2) * torch.eye(2, dtype=torch.float64).expand(30, 2, 2))
    x = torch.randn(16, 2, generator=g, dtype=torch.float64) * 2
    sig = torch.rand(16, generator=g, dtype=torch.float64) + 0.05
    assert torch.allclose(den(x, sig), gm.denoiser(x, sig), atol=1e-10)
    # periodic images: the denoiser commutes with a 2 pi shift of the input near the middle of the box
    dp = KDEDenoiser(pts, bandwidth=h, period=2 * math.pi)
    shift = torch.tensor([2 * math.pi, 0.0], dtype=torch.float64)
    xc = torch.randn(8, 2, generator=g, dtype=torch.float64) * 0.3
    s = torch.full((8,), 0.3, dtype=torch.float64)
    assert torch.allclose(dp(xc + shift, s) - shift, dp(xc, s), atol=1e-6)


def test_boltzmann_samples_alanine_stay_low():
    pot = AlanineTable()
    s = boltzmann_samples(pot, n_chains=200, n_steps=400, step=1e-3, keep_last=200, thin=50, seed=0)
    assert s.shape == (200 * 4, 2) and pot.n_grad_evals == 200 * 400
    assert (s.abs() <= math.pi).all()
    # kT = 1 equilibrium within basins: table energies of samples are low (the surface spans 0..96)
    assert np.median(pot.table_energy(s.numpy())) < 6.0


def test_string_method_reaches_the_grid_bound():
    pot = AlanineTable()
    lb = grid_lower_bound(pot)
    straight = max_energy(pot, densify(straight_path(ALANINE_START, ALANINE_END, 64), 8)[None])[0]
    s = string_method(pot, ALANINE_START, ALANINE_END, n_images=48, n_iter=400, step=2e-3)
    me = max_energy(pot, densify(s, 8)[None])[0]
    assert pot.n_grad_evals == 46 * 400
    assert lb <= me < lb + 0.5 < straight
