"""A nearly identical pair batched with a distant one keeps a ~0 distance (Adam must not walk it off the line)."""
import torch

from latentgeo.fisher.exact import GaussianMixture
from latentgeo.spacetime import edit_distance_pairs, geodesic


def _denoiser():
    d64 = torch.float64
    gm = GaussianMixture(torch.tensor([0.5, 0.5]), torch.tensor([[-2.0, 0, 0], [2.0, 0, 0]], dtype=d64),
                         torch.eye(3, dtype=d64) * 0.1)
    return gm.as_denoiser()


def test_near_identical_pair_stays_near_zero_in_a_batch():
    D = _denoiser()
    a = torch.tensor([[-2.0, 0, 0], [-2.0, 0.3, 0.1]], dtype=torch.float64)
    b = torch.tensor([[2.0, 0, 0], [-2.0, 0.3, 0.1]], dtype=torch.float64)
    b[1] += 1e-9
    L = edit_distance_pairs(D, a, b, sigma_min=0.1, n_points=16, steps=100)
    assert float(L[1]) < 1e-6
    assert float(L[0]) > 1.0  # the distant pair is a real geodesic, not the guard's straight line
    # and the guard never returns a curve worse than the straight line it started from
    line = geodesic(D, (a[0], 0.1), (b[0], 0.1), n_points=16, steps=0)
    assert float(L[0]) <= line.length + 1e-9
