"""End-to-end TPS runs at reduced settings (training-free KDE denoiser), constraints, and the CLI."""
import json
import math

import numpy as np
import pytest
import torch

from latentgeo.molecules import ALANINE_END, ALANINE_START, AlanineTable, grid_lower_bound
from latentgeo.molecules.baselines import straight_path
from latentgeo.molecules.tps import max_energy, transition_paths

QUICK = dict(denoiser="kde", n_chains=400, data_steps=400, geo_steps=100, n_points=64, k_steps=48)


@pytest.fixture(scope="module")
def ala_run():
    torch.set_num_threads(1)
    pot = AlanineTable()
    return pot, transition_paths(pot, ALANINE_START, ALANINE_END, 100, seed=0, **QUICK)


def test_100_paths_beat_the_straight_line(ala_run):
    pot, res = ala_run
    assert res.paths.shape == (100, 64, 2)
    straight = max_energy(pot, straight_path(ALANINE_START, ALANINE_END, 512)[None])[0]
    assert straight > 42.0  # the straight segment crosses the high ridge
    assert res.max_energy.mean() < straight - 3.0
    # the strict MaxEnergy covers the frames, so it is at least the frames' one
    assert (res.max_energy >= res.max_energy_frames - 1e-12).all()
    # paths that arrive are continuous at the step scale, so none can beat the grid minimax bound by much
    lb = grid_lower_bound(pot)
    assert res.reached.mean() > 0.3
    assert res.max_energy[res.reached].mean() >= lb
    # gradient evaluations are counted exactly: chains x steps for data, P x N x K for sampling
    assert res.evals == {"data": 400 * 400, "sampling": 100 * 64 * 48, "total": 400 * 400 + 100 * 64 * 48}
    # the curve starts and ends at the states, at log-SNR 4
    assert np.allclose(res.geodesic_xs[0], ALANINE_START) and np.allclose(res.geodesic_xs[-1], ALANINE_END)
    assert res.geodesic_sigmas[0] == pytest.approx(math.exp(-2))


@pytest.mark.slow
def test_snr_penalty_and_region_avoidance(ala_run):
    from latentgeo.molecules.tps import tps_geodesic
    from latentgeo.spacetime import kl_from_state

    pot, res = ala_run
    den = res.denoiser
    s_end = math.exp(-2)
    base_max = float(res.geodesic_sigmas.max())
    _, sg, _ = tps_geodesic(den, ALANINE_START, ALANINE_END, s_end, n_points=64, steps=100, snr_penalty=100.0)
    assert float(sg.max()) < base_max  # the low-SNR penalty keeps the curve at higher SNR (smaller sigma)
    assert float(-2 * torch.log(sg).min()) > float(-2 * np.log(base_max))
    # a higher log-SNR floor keeps the curve at smaller sigma still (the penalty is a mean over the points)
    _, sg4, _ = tps_geodesic(den, ALANINE_START, ALANINE_END, s_end, n_points=64, steps=100, snr_penalty=100.0,
                             snr_lambda=4.5)
    assert float(torch.log(sg4).mean()) < float(torch.log(sg).mean()) - 0.05
    # forbid a state next to the unconstrained curve (exactly on it the KL gradient vanishes): the constrained
    # curve moves away from it (larger KL)
    mid = len(res.geodesic_xs) // 2
    star = (tuple(res.geodesic_xs[mid] + 0.2), float(res.geodesic_sigmas[mid]))
    xs2, sg2, _ = tps_geodesic(den, ALANINE_START, ALANINE_END, s_end, n_points=64, steps=100, avoid=star,
                               avoid_weight=100.0)
    x_star = torch.tensor(star[0], dtype=torch.float64)
    kl0 = kl_from_state(den, x_star, star[1], torch.as_tensor(res.geodesic_xs), torch.as_tensor(res.geodesic_sigmas),
                        n_probes=None)
    kl1 = kl_from_state(den, x_star, star[1], xs2, sg2, n_probes=None)
    assert float(kl1.min()) > float(kl0.min()) + 1.0


@pytest.mark.slow
def test_cli_mueller_brown_quick(tmp_path):
    from latentgeo.cli import main

    out = tmp_path / "mb"
    main(["tps", "mueller-brown", "--paths", "20", "--out", str(out), "--quick", "--denoiser", "kde"])
    s = json.loads((out / "summary.json").read_text())
    for k in ("max_energy_mean", "max_energy_std", "lower_bound", "energy_evaluations", "seconds"):
        assert k in s
    assert s["energy_evaluations"] == sum(s["energy_evaluations_split"].values())
    p = np.load(out / "paths.npz")["paths"]
    assert p.shape == (20, 64, 2)
    assert (out / "paths.png").read_bytes()[:4] == b"\x89PNG"
    assert s["max_energy_mean"] < s["baselines"]["straight_line"]["max_energy"]


def test_cli_bad_inputs(tmp_path, capsys):
    from latentgeo.cli import main

    for argv, msg in ((["tps", "water", "--out", str(tmp_path)], "unknown system"),
                      (["tps", "alanine", "--out", str(tmp_path), "--avoid", "1,2"], "--avoid"),
                      (["tps", "alanine", "--out", str(tmp_path), "--paths", "0"], "--paths")):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2
        assert msg in capsys.readouterr().err
