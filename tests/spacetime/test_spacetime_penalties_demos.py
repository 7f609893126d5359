"""Penalties and the paper's toy demonstrations."""
import math

import pytest
import torch
import torch.nn.functional as F

from latentgeo.spacetime import RegionAvoidance, SNRPenalty, geodesic, lambda_of_sigma
from latentgeo.spacetime.demos import fisher_rao_collapse_demo, mixture_1d, mixture_1d_demo, pullback_demo

DT = torch.float64


def test_snr_penalty_value_and_ramp():
    p = SNRPenalty(weight=100.0, lambda_min=3.0, beta=10.0, ramp=0.5)
    s = torch.tensor([0.1, 0.5, 1.0], dtype=DT)
    lam = -2 * torch.log(s)
    ref = 100.0 * (torch.log1p(torch.exp(10 * (3.0 - lam))) / 10).mean()
    assert torch.allclose(p(None, s), ref)
    p.set_step(0, 100)
    assert math.isclose(float(p(None, s)), float(ref) / 50, rel_tol=1e-12)
    p.set_step(60, 100)
    assert torch.allclose(p(None, s), ref)


def test_snr_penalty_keeps_geodesic_at_high_snr():
    D = mixture_1d().as_denoiser()
    a, b = (torch.tensor([-1.0], dtype=DT), 0.1), (torch.tensor([1.0], dtype=DT), 0.1)
    kw = dict(n_points=32, n_nodes=6, steps=150, n_probes=None)
    g0 = geodesic(D, a, b, **kw)
    g1 = geodesic(D, a, b, penalty=SNRPenalty(weight=100.0, lambda_min=3.0, ramp=0.3), **kw)
    assert float(lambda_of_sigma(g0.sigmas).min()) < 2.0  # unconstrained: dives into noise
    assert float(lambda_of_sigma(g1.sigmas).min()) > float(lambda_of_sigma(g0.sigmas).min()) + 0.5
    assert g1.energy > g0.energy  # the constraint costs energy


def test_region_avoidance_moves_curve_away():
    D = mixture_1d().as_denoiser()
    a, b = (torch.tensor([-1.0], dtype=DT), 0.1), (torch.tensor([1.0], dtype=DT), 0.1)
    kw = dict(n_points=24, n_nodes=6, steps=100, n_probes=None)
    g0 = geodesic(D, a, b, **kw)
    # forbid the state the unconstrained geodesic passes through at its noisiest point
    i = int(g0.sigmas.argmax())
    pen = RegionAvoidance(D, g0.xs[i].clone(), float(g0.sigmas[i]), kl_min=1.0, weight=200.0, ramp=0.3,
                          n_probes=None)
    g1 = geodesic(D, a, b, penalty=pen, **kw)
    kl0 = pen.kl(g0.xs, g0.sigmas).min()
    kl1 = pen.kl(g1.xs, g1.sigmas).min()
    assert float(kl0) < 0.5
    assert float(kl1) > float(kl0) + 0.5


def test_mixture_1d_geodesic_beats_straight_and_pf_ode_paths(tmp_path):
    r = mixture_1d_demo(out=tmp_path, n_points=32, n_nodes=6, steps=150, n_paths=2)
    m = r["modes"]
    assert m["geodesic_energy"] < 0.2 * m["straight_energy"]
    assert m["max_sigma_on_geodesic"] > 0.3  # the geodesic between the modes passes through higher noise
    for p in r["pf_paths"]:
        assert p["geodesic_energy"] < p["straight_energy"]
        assert p["geodesic_energy"] < p["pf_energy"]
        assert p["geodesic_length"] < p["pf_length"]
    assert (tmp_path / "mixture_1d.png").stat().st_size > 1000
    assert (tmp_path / "mixture_1d.json").exists()


def test_fisher_rao_at_x_T_collapses(tmp_path):
    r = fisher_rao_collapse_demo(out=tmp_path, n_pairs=8, n_points=12)
    L = r["mean_length"]
    assert L[-1] < 0.02 * L[0]
    assert -1.3 < r["loglog_slope_upper_half"] < -0.7
    assert r["metric_trace"][-1] < 1e-6
    assert (tmp_path / "fisher_rao_collapse.png").exists()


@pytest.mark.slow
def test_pullback_geodesic_decodes_to_straight_segment():
    r = pullback_demo(steps=300)
    assert r["latent_line_energy"] > 1.5 * r["segment_energy"]
    assert r["optimised_energy"] < 1.1 * r["segment_energy"]
    assert r["optimised_energy"] >= r["segment_energy"] * (1 - 1e-6)  # a straight segment is the minimum
    assert r["optimised_rel_deviation"] < r["latent_line_rel_deviation"]
