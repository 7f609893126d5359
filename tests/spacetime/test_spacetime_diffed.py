"""Diffusion Edit Distance on exact mixture denoisers."""
import pytest
import torch

from latentgeo.errors import LatentgeoError
from latentgeo.fisher.exact import GaussianMixture
from latentgeo.spacetime import curve_length, edit_distance, edit_distance_matrix, edit_distance_pairs
from latentgeo.spacetime.diffed import encode_to_sigma, pf_ode_path

DT = torch.float64


def _mix2d():
    return GaussianMixture(torch.tensor([0.4, 0.6], dtype=DT), torch.tensor([[-1.0, 0.5], [1.0, -0.3]], dtype=DT),
                           torch.tensor([[0.1, 0.05], [0.05, 0.2]], dtype=DT))


def test_zero_for_identical_endpoints():
    D = _mix2d().as_denoiser()
    a = torch.tensor([0.3, -0.1], dtype=DT)
    assert edit_distance(D, a, a, sigma_min=0.3, steps=10, generator=torch.Generator().manual_seed(0)) == 0.0
    assert edit_distance(D, a, a, sigma_min=0.3, steps=10, encode=True, encode_steps=8) == 0.0


def test_symmetric_within_two_percent_and_below_straight_line():
    D = _mix2d().as_denoiser()
    a, b = torch.tensor([-1.0, 0.4], dtype=DT), torch.tensor([0.9, -0.2], dtype=DT)
    kw = dict(sigma_min=0.3, n_points=24, n_nodes=6, steps=120, n_probes=1, eval_probes=None)
    ab = edit_distance(D, a, b, generator=torch.Generator().manual_seed(0), **kw)
    ba = edit_distance(D, b, a, generator=torch.Generator().manual_seed(1), **kw)
    assert abs(ab - ba) / max(ab, ba) < 0.02
    s = torch.linspace(0, 1, 24, dtype=DT)[:, None]
    straight = float(curve_length(D, (1 - s) * a + s * b, torch.full((24,), 0.3, dtype=DT), n_probes=None))
    assert ab < 0.8 * straight


def test_matrix_symmetric_and_matches_pairs():
    D = _mix2d().as_denoiser()
    X = _mix2d().sample(3, torch.Generator().manual_seed(0))
    kw = dict(sigma_min=0.3, n_points=12, n_nodes=3, steps=30, n_probes=None)
    M = edit_distance_matrix(D, X, **kw)
    assert M.shape == (3, 3)
    assert torch.equal(M, M.T) and (M.diagonal() == 0).all() and (M[~torch.eye(3, dtype=bool)] > 0).all()
    P = edit_distance_pairs(D, X[[0, 1]], X[[2, 2]], **kw)
    assert torch.allclose(P, torch.stack([M[0, 2], M[1, 2]]), rtol=1e-10)
    R = edit_distance_matrix(D, X[:2], X[2:], **kw)
    assert torch.allclose(R[:, 0], P, rtol=1e-10)


def test_encode_is_pf_ode_then_geodesic():
    D = _mix2d().as_denoiser()
    a, b = torch.tensor([-1.0, 0.4], dtype=DT), torch.tensor([0.9, -0.2], dtype=DT)
    enc = encode_to_sigma(D, torch.stack([a, b]), 0.3, steps=16)
    # the encoding is invertible: decoding along the PF-ODE returns the data
    grid = torch.linspace(0.3, 0.002, 400, dtype=DT)
    back = pf_ode_path(D, enc, grid)[-1]
    assert torch.allclose(back, torch.stack([a, b]), atol=2e-3)
    kw = dict(sigma_min=0.3, n_points=12, n_nodes=3, steps=20, n_probes=None)
    d1 = edit_distance(D, a, b, encode=True, encode_steps=16, **kw)
    d2 = edit_distance(D, enc[0], enc[1], **kw)
    assert abs(d1 - d2) < 1e-8 * d2


def test_bad_inputs():
    D = _mix2d().as_denoiser()
    with pytest.raises(LatentgeoError):
        edit_distance(D, torch.zeros(2, dtype=DT), torch.zeros(3, dtype=DT))
    with pytest.raises(LatentgeoError):
        edit_distance(D, torch.zeros(2, dtype=DT), torch.ones(2, dtype=DT), sigma_min=-1.0)
    with pytest.raises(LatentgeoError):
        edit_distance(D, torch.zeros(2, dtype=DT), torch.ones(2, dtype=DT), n_points=(8, 16), steps=(5,))
