"""Distances checked against closed forms (not against themselves)."""
import math

import numpy as np
import pytest
import torch

from latentgeo.errors import LatentgeoError
from latentgeo.metrics import frechet_distance, frechet_distance_samples, mmd, sliced_wasserstein


def _rot(d, seed):
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))
    return q


# ------------------------------------------------------------------------------------------------ Frechet distance

def test_frechet_commuting_covariances_closed_form():
    d = 6
    rng = np.random.default_rng(0)
    a, b = rng.uniform(0.1, 3, d), rng.uniform(0.1, 3, d)
    m1, m2 = rng.normal(size=d), rng.normal(size=d)
    q = _rot(d, 1)  # same eigenbasis: the covariances commute but are not diagonal
    C1, C2 = q @ np.diag(a) @ q.T, q @ np.diag(b) @ q.T
    exact = float(((m1 - m2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum())
    assert frechet_distance(m1, C1, m2, C2) == pytest.approx(exact, rel=1e-10, abs=1e-12)


def test_frechet_non_commuting_2d_closed_form():
    # For 2x2 PSD M: tr sqrt(M) = sqrt(tr M + 2 sqrt(det M)), with M = C1^1/2 C2 C1^1/2 (tr M = tr C1C2).
    C1 = np.array([[2.0, 0.7], [0.7, 1.0]])
    C2 = np.array([[0.5, -0.3], [-0.3, 1.5]])
    m1, m2 = np.array([0.0, 1.0]), np.array([2.0, -1.0])
    tr_sqrt = math.sqrt(np.trace(C1 @ C2) + 2 * math.sqrt(np.linalg.det(C1) * np.linalg.det(C2)))
    exact = 8.0 + np.trace(C1) + np.trace(C2) - 2 * tr_sqrt
    assert frechet_distance(m1, C1, m2, C2) == pytest.approx(exact, rel=1e-10)
    # symmetric in its arguments
    assert frechet_distance(m2, C2, m1, C1) == pytest.approx(exact, rel=1e-10)


def test_frechet_singular_covariances_are_finite_and_exact():
    # N(0, diag(1,0)) vs N(0, diag(0,1)): the optimal coupling is independent, W2^2 = 1 + 1.
    fd = frechet_distance(np.zeros(2), np.diag([1.0, 0.0]), np.zeros(2), np.diag([0.0, 1.0]))
    assert fd == pytest.approx(2.0, abs=1e-12)
    C = np.diag([1.0, 0.0, 0.0])
    assert frechet_distance(np.zeros(3), C, np.zeros(3), C) == pytest.approx(0.0, abs=1e-12)


def test_frechet_from_samples_converges():
    rng = np.random.default_rng(3)
    d = 3
    C2 = np.diag([1.0, 2.0, 0.5])
    x = rng.normal(size=(20000, d))
    y = rng.normal(size=(20000, d)) @ np.sqrt(C2) + np.array([1.0, 0, 0])
    exact = 1.0 + ((1 - np.sqrt(np.diag(C2))) ** 2).sum()
    assert frechet_distance_samples(x, y) == pytest.approx(exact, abs=0.05)


def test_frechet_shape_mismatch_is_user_error():
    with pytest.raises(LatentgeoError):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))


# --------------------------------------------------------------------------------------------- sliced Wasserstein

def test_sw_of_shift_matches_expected_projection():
    d = 5
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, d, generator=g, dtype=torch.float64)
    s = torch.tensor([1.0, -2.0, 0.5, 0.0, 3.0], dtype=torch.float64)
    sw, se = sliced_wasserstein(x, x + s, n_projections=4000, generator=torch.Generator().manual_seed(1),
                                return_std=True)
    expected = float(s.pow(2).sum() / d)  # E (theta . s)^2 with theta uniform on the sphere
    assert abs(sw ** 2 - expected) < 4 * se
    assert se < 0.05 * expected


def test_sw_single_projection_is_exact_projected_shift():
    d = 4
    x = torch.randn(50, d, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    s = torch.tensor([0.3, -1.0, 2.0, 0.1], dtype=torch.float64)
    sw = sliced_wasserstein(x, x + s, n_projections=1, generator=torch.Generator().manual_seed(7))
    theta = torch.randn(d, 1, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    theta = theta / theta.norm()
    assert sw == pytest.approx(abs(float(s @ theta[:, 0])), rel=1e-12)


def test_sw_unequal_sizes_exact_1d():
    # 1-D: SW_1 = W_1. Quantile functions of {0,1} and {0,.5,1} differ by .5 on [1/3, 2/3): W_1 = 1/6.
    sw = sliced_wasserstein(torch.tensor([0.0, 1.0]), torch.tensor([0.0, 0.5, 1.0]), n_projections=3, p=1)
    assert sw == pytest.approx(1 / 6, rel=1e-12)
    # A sample against itself duplicated is the same law: distance 0.
    x = torch.randn(40, 3, generator=torch.Generator().manual_seed(0))
    assert sliced_wasserstein(x, torch.cat([x, x]), n_projections=20) == pytest.approx(0.0, abs=1e-12)


def test_sw_rejects_bad_input():
    with pytest.raises(LatentgeoError):
        sliced_wasserstein(torch.zeros(5, 2), torch.zeros(5, 3))
    with pytest.raises(LatentgeoError):
        sliced_wasserstein(torch.full((5, 2), float("nan")), torch.zeros(5, 2))


# ------------------------------------------------------------------------------------------------------------ MMD

def _mmd2_gauss(m1, s1, m2, s2, h, d):
    """Closed-form MMD^2 between N(m1, s1^2 I) and N(m2, s2^2 I) under exp(-|a-b|^2/(2h^2))."""
    def ek(mu2, var):  # E exp(-|u|^2/(2h^2)), u ~ N(mu, var I)
        return (h * h / (h * h + var)) ** (d / 2) * math.exp(-mu2 / (2 * (h * h + var)))
    return ek(0, 2 * s1 ** 2) + ek(0, 2 * s2 ** 2) - 2 * ek(float(((m1 - m2) ** 2).sum()), s1 ** 2 + s2 ** 2)


@pytest.mark.parametrize("shift", [0.0, 0.6])
def test_mmd_unbiased_matches_closed_form(shift):
    d, n, h, reps = 2, 12, 1.0, 600
    g = torch.Generator().manual_seed(11)
    m2 = torch.tensor([shift, 0.0], dtype=torch.float64)
    vals = []
    for _ in range(reps):
        x = torch.randn(n, d, generator=g, dtype=torch.float64)
        y = 1.3 * torch.randn(n, d, generator=g, dtype=torch.float64) + m2
        vals.append(mmd(x, y, bandwidths=[h]))
    vals = np.array(vals)
    exact = _mmd2_gauss(np.zeros(d), 1.0, m2.numpy(), 1.3, h, d)
    se = vals.std(ddof=1) / math.sqrt(reps)
    assert abs(vals.mean() - exact) < 4 * se
    # the biased V-statistic is off by O(1/n): detectably so at n = 12 (the test would catch a lost diagonal)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    assert mmd(x, x, bandwidths=[h], biased=True) == pytest.approx(0.0, abs=1e-12)
    assert mmd(x, x, bandwidths=[h]) < -0.01


def test_mmd_identical_near_zero_and_shift_positive():
    g = torch.Generator().manual_seed(5)
    x, y = torch.randn(400, 3, generator=g), torch.randn(400, 3, generator=g)
    same = mmd(x, y)
    shifted = mmd(x, y + 1.0)
    assert abs(same) < 0.01
    assert shifted > 0.1
    for k in ("laplacian", "imq"):
        assert mmd(x, y + 1.0, kernel=k) > 10 * abs(mmd(x, y, kernel=k))


def test_mmd_bad_kernel():
    with pytest.raises(LatentgeoError):
        mmd(torch.zeros(3, 2), torch.zeros(3, 2), kernel="cosine")
