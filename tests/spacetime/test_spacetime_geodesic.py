"""Spline curves and geodesic optimisation on exact mixture denoisers."""
import numpy as np
import pytest
import torch

from latentgeo.errors import LatentgeoError
from latentgeo.fisher.exact import GaussianMixture
from latentgeo.spacetime import SplineCurve, curve_energy, energy_and_grad, geodesic, spline_basis

DT = torch.float64


def _mix1d():
    return GaussianMixture(torch.tensor([0.5, 0.5], dtype=DT), torch.tensor([[-1.0], [1.0]], dtype=DT),
                           torch.tensor([[[0.05]], [[0.05]]], dtype=DT))


def _mix2d():
    return GaussianMixture(torch.tensor([0.4, 0.6], dtype=DT), torch.tensor([[-1.0, 0.5], [1.0, -0.3]], dtype=DT),
                           torch.tensor([[0.1, 0.05], [0.05, 0.2]], dtype=DT))


def test_spline_basis_vanishes_interpolates_and_is_c2():
    K = 5
    knots = np.linspace(0, 1, K + 2)
    B = spline_basis(0, K, s=knots)
    assert np.allclose(B[0], 0) and np.allclose(B[-1], 0)
    assert np.allclose(B[1:-1], np.eye(K))
    # second differences on a fine grid are continuous (no jumps at knots), third are bounded (cubic pieces)
    s = np.linspace(0, 1, 2001)
    c = np.random.default_rng(0).normal(size=K)
    y = spline_basis(0, K, s=s) @ c
    d2 = np.diff(y, 2) / (s[1] - s[0]) ** 2
    assert np.max(np.abs(np.diff(d2))) < 0.05 * (np.max(np.abs(d2)) + 1)


def test_zero_nodes_give_straight_line_in_logsnr():
    xa, xb = torch.tensor([[0.0, 1.0]], dtype=DT), torch.tensor([[2.0, -1.0]], dtype=DT)
    sa, sb = torch.tensor([0.1], dtype=DT), torch.tensor([1.0], dtype=DT)
    xs, sig = SplineCurve(xa, sa, xb, sb, 4).evaluate(5)
    ref = torch.stack([torch.linspace(0, 2, 5, dtype=DT), torch.linspace(1, -1, 5, dtype=DT)], 1)
    assert torch.allclose(xs[0], ref)
    lam = -2 * torch.log(sig[0])
    assert torch.allclose(lam, torch.linspace(float(-2 * np.log(0.1)), 0.0, 5, dtype=DT))


def test_chunked_gradient_equals_unchunked():
    D = _mix2d().as_denoiser()
    P = 2
    xa = torch.tensor([[-1.0, 0.5], [0.0, 0.0]], dtype=DT)
    xb = torch.tensor([[1.0, -0.3], [0.5, 1.0]], dtype=DT)
    cur = SplineCurve(xa, torch.tensor([0.3, 0.5], dtype=DT), xb, torch.tensor([0.3, 0.2], dtype=DT), 3,
                      nodes=torch.randn(P, 3, 3, dtype=DT, generator=torch.Generator().manual_seed(0)) * 0.3)
    pen = lambda xs, s: (xs ** 2).sum() * 0.1 + s.sum()  # noqa: E731
    for robust in (True, False):
        out = []
        for chunk in (None, 7):
            xs, sig = cur.evaluate(16)
            out.append(energy_and_grad(D, xs, sig, [cur.nodes], n_probes=None, chunk_size=chunk, penalty=pen,
                                       robust=robust))
        assert torch.allclose(out[0][0], out[1][0], rtol=1e-12)
        assert torch.allclose(out[0][2][0], out[1][2][0], rtol=1e-9, atol=1e-10)
    # and the energy is the documented curve_energy
    xs, sig = cur.evaluate(16)
    assert torch.allclose(out[0][0], curve_energy(D, xs.detach(), sig.detach(), n_probes=None), rtol=1e-12)


def test_geodesic_beats_straight_line_1d_mixture():
    D = _mix1d().as_denoiser()
    a, b = (torch.tensor([-1.0], dtype=DT), 0.2), (torch.tensor([1.0], dtype=DT), 0.2)
    g = geodesic(D, a, b, n_points=48, n_nodes=6, steps=150, lr=0.1, n_probes=None)
    straight = g.history["energy"][0]
    assert g.energy < 0.5 * straight
    # the geodesic between two modes passes through higher noise (lower log-SNR)
    assert float(g.sigmas.max()) > 0.4
    # endpoints stay fixed
    assert torch.allclose(g.xs[0], a[0]) and torch.allclose(g.xs[-1], b[0])
    assert abs(float(g.sigmas[0]) - 0.2) < 1e-12 and abs(float(g.sigmas[-1]) - 0.2) < 1e-12
    # energy >= length^2 / 2 (Cauchy-Schwarz), near equality at the optimum (constant speed)
    assert g.energy >= 0.5 * g.length ** 2 - 1e-9
    assert g.energy < 0.5 * g.length ** 2 * 1.1


def test_batched_equals_individual():
    D = _mix2d().as_denoiser()
    xa = torch.tensor([[-1.0, 0.5], [0.3, 0.0]], dtype=DT)
    xb = torch.tensor([[1.0, -0.3], [0.5, 1.0]], dtype=DT)
    gb = geodesic(D, (xa, 0.3), (xb, 0.3), n_points=16, n_nodes=3, steps=20, n_probes=None, batched=True)
    assert gb.xs.shape == (2, 16, 2) and gb.sigmas.shape == (2, 16) and gb.energy.shape == (2,)
    for i in range(2):
        gi = geodesic(D, (xa[i], 0.3), (xb[i], 0.3), n_points=16, n_nodes=3, steps=20, n_probes=None)
        assert abs(gi.energy - float(gb.energy[i])) < 1e-8 * max(1, gi.energy)


def test_identical_endpoints_zero_energy_with_probes():
    D = _mix2d().as_denoiser()
    x = torch.tensor([0.2, 0.1], dtype=DT)
    g = geodesic(D, (x, 0.3), (x, 0.3), n_points=16, n_nodes=3, steps=5, n_probes=1,
                 generator=torch.Generator().manual_seed(0))
    assert g.energy == 0.0 and g.length == 0.0


def test_penalty_hook_changes_curve():
    D = _mix1d().as_denoiser()
    a, b = (torch.tensor([-1.0], dtype=DT), 0.2), (torch.tensor([1.0], dtype=DT), 0.2)
    calls = []

    def pen(xs, s):
        calls.append(xs.shape)
        return 50.0 * (s ** 2).mean()  # discourage high noise

    g0 = geodesic(D, a, b, n_points=24, n_nodes=4, steps=60, n_probes=None)
    g1 = geodesic(D, a, b, n_points=24, n_nodes=4, steps=60, n_probes=None, penalty=pen)
    assert calls and calls[0] == (24, 1)
    assert float(g1.sigmas.max()) < float(g0.sigmas.max())


def test_bad_inputs():
    D = _mix1d().as_denoiser()
    with pytest.raises(LatentgeoError):
        geodesic(D, (torch.tensor([0.0]), 0.0), (torch.tensor([1.0]), 0.1), steps=1)
    with pytest.raises(LatentgeoError):
        geodesic(D, (torch.tensor([0.0]), 0.1), (torch.tensor([1.0, 2.0]), 0.1), steps=1)
    with pytest.raises(LatentgeoError):
        geodesic(D, torch.tensor([0.0]), (torch.tensor([1.0]), 0.1), steps=1)


def test_spline_basis_matches_scipy_natural_spline():
    from scipy.interpolate import CubicSpline

    K = 7
    s = np.linspace(0, 1, 101)
    c = np.random.default_rng(1).normal(size=K)
    ref = CubicSpline(np.linspace(0, 1, K + 2), np.r_[0.0, c, 0.0], bc_type="natural")(s)
    assert np.allclose(spline_basis(0, K, s=s) @ c, ref, atol=1e-12)


def test_resample_and_warm_start():
    D = _mix2d().as_denoiser()
    a, b = (torch.tensor([-1.0, 0.5], dtype=DT), 0.3), (torch.tensor([1.0, -0.3], dtype=DT), 0.3)
    g = geodesic(D, a, b, n_points=12, n_nodes=4, steps=30, n_probes=None)
    xs, s = g.resample(12)
    assert torch.allclose(xs, g.xs) and torch.allclose(s, g.sigmas)
    # warm start on a finer grid continues from the coarse optimum (first logged energy ~ the coarse energy)
    g2 = geodesic(D, a, b, n_points=40, n_nodes=4, steps=1, n_probes=None, init_nodes=g.nodes)
    straight = geodesic(D, a, b, n_points=40, n_nodes=4, steps=0, n_probes=None).energy
    assert g2.history["energy"][0] < 0.8 * straight


def test_robust_objective_against_an_invalid_denoiser():
    """D = -x has Jacobian -I (no posterior mean has that): every segment term is negative, so the signed energy is
    unbounded below. The robust objective does not run away, and the result flags the violation."""
    D = lambda x, s: -x  # noqa: E731
    a, b = (torch.tensor([-1.0, 0.0], dtype=DT), 0.5), (torch.tensor([1.0, 0.0], dtype=DT), 0.5)
    kw = dict(n_points=16, n_nodes=4, steps=40, n_probes=None)
    signed = geodesic(D, a, b, robust=False, **kw)
    robust = geodesic(D, a, b, robust=True, **kw)
    assert signed.energy < 3 * signed.history["energy"][0] < 0  # runs away to ever more negative "energy"
    assert robust.energy >= 1.01 * robust.history["energy"][0]  # |objective| did not grow
    assert robust.negative_fraction > 0.5
    good = geodesic(_mix2d().as_denoiser(), a, b, n_points=16, n_nodes=4, steps=5, n_probes=None)
    assert good.negative_fraction == 0.0
