"""What DiffED measures on exact mixture denoisers in 16 dimensions, and the resumable all-pairs matrix.

Exactness: on one isotropic Gaussian N(m, v I_n) the posteriors p(x0 | x, sigma) = N(m + c (x - m), sigma^2 c I),
c = v / (v + sigma^2), sweep the isotropic Gaussians, whose Fisher-Rao metric (|dmu|^2 + 2n ds^2) / s^2 is sqrt(2n)
times the hyperbolic half plane: DiffED(a, b) = sqrt(2n) * 2 asinh(c |a - b| / (2 sqrt(2n) s0)), s0 = sigma_min sqrt(c)
(while the geodesic's posterior variance stays below v).

Semantics: at the SAME Euclidean length, a pair that changes mixture component is CLOSER in DiffED than a pair that
stays inside one component (the opposite of the hypothesis in issue 15). Moving inside a component transports a
sharp posterior (a hyperbolic length that grows like log(|a - b| / sigma_min)); changing component re-weights two
posteriors, which Fisher-Rao geometry prices at a bounded amount (about pi for disjoint modes) plus the short moves
off the data. The within-component lengths match the closed form above, and an optimised between-component curve can
only over-estimate its geodesic, so the ordering is not an optimisation artefact.
"""
import math

import numpy as np
import pytest
import torch

from latentgeo.errors import LatentgeoError
from latentgeo.fisher.exact import GaussianMixture
from latentgeo.spacetime import edit_distance, edit_distance_matrix, edit_distance_pairs
from latentgeo.spacetime.diffed import read_matrix_cache

DT = torch.float64
N_DIM = 16
KW = dict(sigma_min=0.1, n_points=16, n_nodes=4, steps=60, n_probes=1)  # eval: exact divergence (n <= 16)


def _two_components(a=1.5, v=0.25):
    """Two isotropic components N(-+a e0, v I) in R^16 (6 standard deviations apart for the defaults)."""
    m = torch.zeros(2, N_DIM, dtype=DT)
    m[0, 0], m[1, 0] = -a, a
    covs = (v * torch.eye(N_DIM, dtype=DT)).expand(2, N_DIM, N_DIM).clone()
    return GaussianMixture(torch.tensor([0.5, 0.5], dtype=DT), m, covs), m


def _closed_form(dist, v, sigma_min, n=N_DIM):
    c = v / (v + sigma_min ** 2)
    s0 = sigma_min * math.sqrt(c)
    r = math.sqrt(2 * n)
    return r * 2 * math.asinh(c * dist / (2 * r * s0))


def _pairs(m, a, v, P=4, seed=0):
    """P within-component pairs (m_k + c +- u, |2u| = 2a) and P between-component pairs (m_0 + c, m_1 + c): all of
    Euclidean length 2a."""
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(P, N_DIM, generator=g, dtype=DT)
    u = u / u.norm(dim=1, keepdim=True) * a
    c = 0.5 * math.sqrt(v) * torch.randn(P, N_DIM, generator=g, dtype=DT)
    k = torch.arange(P) % 2
    return (m[k] + c + u, m[k] + c - u), (m[0] + c, m[1] + c)


def test_symmetric_and_zero_on_identical_points():
    gm, m = _two_components()
    D = gm.as_denoiser()
    (Aw, Bw), (Ab, Bb) = _pairs(m, 1.5, 0.25, P=2)
    A, B = torch.cat([Aw, Ab]), torch.cat([Bw, Bb])
    ab = edit_distance_pairs(D, A, B, generator=torch.Generator().manual_seed(1), **KW)
    ba = edit_distance_pairs(D, B, A, generator=torch.Generator().manual_seed(2), **KW)
    assert (ab > 1).all()
    assert float(((ab - ba).abs() / ab).max()) < 0.02
    # zero on identical points: the function, and the diagonal of an X-vs-Y matrix (cold and warm-started)
    assert edit_distance(D, A[0], A[0], **KW) == 0.0
    for warm in (None, "auto"):
        M = edit_distance_matrix(D, A[:2], A[:2].clone(), warm_start=warm, pilot_pairs=2, pilot_steps=10, seed=0,
                                 **dict(KW, n_points=8, steps=5))
        assert (M.diagonal() == 0).all() and (M[~torch.eye(2, dtype=bool)] > 1).all()


def test_gaussian_diffed_matches_hyperbolic_closed_form():
    gm, m = _two_components()
    D = gm.as_denoiser()
    (Aw, Bw), _ = _pairs(m, 1.5, 0.25, P=3)
    L = edit_distance_pairs(D, Aw, Bw, generator=torch.Generator().manual_seed(0), **KW)
    want = _closed_form(3.0, 0.25, 0.1)  # 19.04
    assert float(((L - want) / want).abs().max()) < 0.02, (L, want)


def test_component_change_is_closer_than_a_move_inside_a_component_of_the_same_length():
    gm, m = _two_components()
    D = gm.as_denoiser()
    (Aw, Bw), (Ab, Bb) = _pairs(m, 1.5, 0.25, P=4)
    assert torch.allclose((Aw - Bw).norm(dim=1), (Ab - Bb).norm(dim=1))  # all pairs of length 3
    L = edit_distance_pairs(D, torch.cat([Aw, Ab]), torch.cat([Bw, Bb]),
                            generator=torch.Generator().manual_seed(3), **KW)
    within, between = L[:4], L[4:]
    # every between-component DiffED is below every within-component DiffED of the same Euclidean length, and
    # below the closed-form within-component value (a certificate: an optimised curve over-estimates its geodesic)
    assert float(between.max()) < 0.97 * float(within.min()), (within, between)
    assert float(between.max()) < 0.97 * _closed_form(3.0, 0.25, 0.1)


class _Counting:
    """Denoiser wrapper counting rows evaluated (a proxy for the work done)."""

    def __init__(self, D):
        self.D, self.rows = D, 0
        self.mixture = D.mixture  # keeps the model fingerprint of the cache

    def __call__(self, x, sigma):
        self.rows += x.shape[0]
        return self.D(x, sigma)


def test_matrix_resumes_without_recomputing_finished_pairs(tmp_path):
    gm, m = _two_components()
    X = gm.sample(6, torch.Generator().manual_seed(0))  # 15 pairs: batches of 4, 4, 4, 3
    kw = dict(KW, n_points=8, steps=4, pair_batch=4, seed=7)  # bookkeeping, not accuracy
    full_d = _Counting(gm.as_denoiser())
    M_full, info = edit_distance_matrix(full_d, X, out=tmp_path / "full.npz", return_info=True, **kw)
    assert info["computed"] == 15 and info["resumed"] == 0

    cache = tmp_path / "part.npz"
    seen = []

    def stop_after_two_batches(done, total):
        seen.append((done, total))
        if len(seen) == 2:
            raise KeyboardInterrupt  # an interruption after 2 saved batches

    with pytest.raises(KeyboardInterrupt):
        edit_distance_matrix(gm.as_denoiser(), X, out=cache, progress=stop_after_two_batches, **kw)
    assert seen == [(4, 15), (8, 15)]
    Dp, done, meta = read_matrix_cache(cache)
    assert int(np.triu(done, 1).sum()) == 8 and np.isnan(Dp[~done]).all()

    part_d = _Counting(gm.as_denoiser())
    M, info = edit_distance_matrix(part_d, X, out=cache, return_info=True, **kw)
    assert info["computed"] == 7 and info["resumed"] == 8
    assert part_d.rows * 15 == full_d.rows * 7  # exactly the 7 unfinished pairs were optimised
    assert torch.equal(M, M_full)  # per-batch seeds: identical to the uninterrupted matrix

    again = _Counting(gm.as_denoiser())
    assert torch.equal(edit_distance_matrix(again, X, out=cache, **kw), M_full) and again.rows == 0
    with pytest.raises(LatentgeoError, match="different data"):
        edit_distance_matrix(gm.as_denoiser(), X + 0.1, out=cache, **kw)
    with pytest.raises(LatentgeoError, match="different model"):
        edit_distance_matrix(_two_components(a=1.4)[0].as_denoiser(), X, out=cache, **kw)
    with pytest.raises(LatentgeoError, match="different distance settings"):
        edit_distance_matrix(gm.as_denoiser(), X, out=cache, **dict(kw, steps=16))
    fresh = _Counting(gm.as_denoiser())
    edit_distance_matrix(fresh, X, out=cache, resume=False, **kw)
    assert fresh.rows == full_d.rows


def test_warm_started_matrix_resumes_with_its_profile(tmp_path):
    gm, m = _two_components()
    X = gm.sample(5, torch.Generator().manual_seed(1))  # 10 pairs
    kw = dict(KW, n_points=8, steps=4, pair_batch=4, seed=3, warm_start="auto", pilot_pairs=3, pilot_steps=30)
    M_full, info = edit_distance_matrix(gm.as_denoiser(), X, return_info=True, **kw)
    prof = info["warm_profile"]
    assert prof.shape == (4,) and (prof < 0).all()  # the geodesics rise to lower SNR in the middle
    cache = tmp_path / "w.npz"

    def stop(done, total):
        raise RuntimeError("stop")

    with pytest.raises(RuntimeError):
        edit_distance_matrix(gm.as_denoiser(), X, out=cache, progress=stop, **kw)
    M, info = edit_distance_matrix(gm.as_denoiser(), X, out=cache, return_info=True, **kw)
    assert info["computed"] == 6 and torch.equal(info["warm_profile"], prof)
    assert torch.equal(M, M_full)
