"""intrinsic_curvature against closed forms: 1/R on circles and spheres of radius R (in any embedding), 0 on flat
sets, and the expected effect of a smooth ripple added by an encoder."""
import math

import pytest
import torch

from latentgeo.errors import LatentgeoError
from latentgeo.fisher.penalties import intrinsic_curvature

torch.set_num_threads(1)
F64 = torch.float64


def _embed(y, D, seed=0):
    """y [N, n] placed in R^D by a random rotation."""
    Q = torch.linalg.qr(torch.randn(D, D, generator=torch.Generator().manual_seed(seed), dtype=F64))[0]
    return torch.cat([y, torch.zeros(y.shape[0], D - y.shape[1], dtype=F64)], 1) @ Q.T


@pytest.mark.parametrize("R", [0.5, 2.0, 8.0])
def test_circle_has_curvature_one_over_radius(R):
    th = torch.rand(400, generator=torch.Generator().manual_seed(1), dtype=F64) * 2 * math.pi
    x = _embed(torch.stack([R * th.cos(), R * th.sin()], 1), 6)
    r = intrinsic_curvature(x, 1, 16)
    assert r["kappa_rms"] == pytest.approx(1 / R, rel=0.02) and r["kappa_median"] == pytest.approx(1 / R, rel=0.02)
    # scale-free bending across a neighbourhood: kappa * radius, the same for every R at equal sampling
    assert 0 < r["kappa_h"] < 0.5


def test_sphere_and_plane():
    g = torch.Generator().manual_seed(2)
    v = torch.randn(1500, 3, generator=g, dtype=F64)
    x = _embed(2.0 * v / v.norm(dim=1, keepdim=True), 5)
    assert intrinsic_curvature(x, 2, 24)["kappa_rms"] == pytest.approx(0.5, rel=0.03)
    flat = _embed(torch.randn(500, 2, generator=g, dtype=F64), 5)
    assert intrinsic_curvature(flat, 2, 24)["kappa_rms"] < 1e-9


def test_ripple_adds_curvature_a_rotation_does_not():
    g = torch.Generator().manual_seed(3)
    y = torch.randn(800, 2, generator=g, dtype=F64)
    flat = _embed(y, 4)
    rippled = _embed(torch.cat([y, 0.3 * torch.sin(3.0 * y[:, :1])], 1), 4)
    rotated = _embed(y, 4, seed=9)
    k_flat, k_rip = intrinsic_curvature(flat, 2, 24)["kappa_rms"], intrinsic_curvature(rippled, 2, 24)["kappa_rms"]
    assert k_flat < 1e-9 and k_rip > 0.5  # |B| up to eps omega^2 = 2.7
    assert intrinsic_curvature(rotated, 2, 24)["kappa_rms"] < 1e-9


def test_bad_settings_are_refused():
    x = torch.randn(30, 4, dtype=F64)
    with pytest.raises(LatentgeoError, match="quadratic fit"):
        intrinsic_curvature(x, 2, 4)
    with pytest.raises(LatentgeoError, match="manifold dimension"):
        intrinsic_curvature(x, 4, 20)
