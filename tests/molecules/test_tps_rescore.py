"""TPS results can be re-scored: paths.npz holds the Langevin state attaining each path's MaxEnergy (max_states) and,
with save_states, every state (all_states); re-scoring them on the table reproduces the reported MaxEnergy exactly."""
import json

import numpy as np
import pytest
import torch

from latentgeo.molecules import ALANINE_END, ALANINE_START, AlanineTable, MuellerBrown
from latentgeo.molecules.run import run_tps
from latentgeo.molecules.tps import annealed_langevin

TINY = dict(denoiser="kde", n_chains=60, data_steps=40, geo_steps=5, n_points=8, k_steps=4)


@pytest.mark.parametrize("system,pot", [("alanine", AlanineTable), ("mueller-brown", lambda: MuellerBrown(scale=0.1))])
def test_paths_npz_rescores_to_the_reported_max_energy(tmp_path, system, pot):
    torch.set_num_threads(1)
    P, N, K = 5, TINY["n_points"], TINY["k_steps"]
    s = run_tps(system, P, str(tmp_path), baselines=False, seed=1, save_states=True, **TINY)
    z = np.load(tmp_path / "paths.npz")
    assert z["paths"].shape == (P, N, 2)
    assert z["max_states"].shape == (P, 2) and z["max_energy"].shape == (P,)
    assert z["all_states"].shape == (P, N * K, 2)
    table = pot()
    rescored = table.score_energy(z["max_states"])
    assert np.array_equal(rescored, z["max_energy"])  # exactly, not approximately
    assert float(np.mean(rescored)) == s["max_energy_mean"]
    # every state is kept: the per-path maximum over all of them is the reported one, and the frames are among them
    assert np.array_equal(table.score_energy(z["all_states"]).max(axis=1), z["max_energy"])
    assert np.array_equal(z["all_states"][:, K - 1::K], z["paths"])
    assert (z["max_energy"] >= z["max_energy_frames"]).all()
    summ = json.loads((tmp_path / "summary.json").read_text())
    sc = summ["max_energy_scoring"]
    assert sc["states_per_path"] == N * K and sc["all_states_saved"] is True
    assert sc["rescore_max_abs_difference"] == 0.0 and "max_states" in sc["rescore"]


def test_without_save_states_only_the_max_states_are_stored(tmp_path):
    run_tps("alanine", 3, str(tmp_path), baselines=False, seed=0, **TINY)
    z = np.load(tmp_path / "paths.npz")
    assert "all_states" not in z.files
    assert np.array_equal(AlanineTable().score_energy(z["max_states"]), z["max_energy"])


def test_annealed_langevin_states_and_argmax():
    pot = AlanineTable()
    xs = torch.tensor(np.linspace(ALANINE_START, ALANINE_END, 6))
    sg = torch.full((6,), 0.3, dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    frames, strict, arg, states = annealed_langevin(pot, xs, sg, 7, k_steps=3, step=1e-3, generator=g,
                                                    keep_states=True)
    assert states.shape == (7, 18, 2) and torch.equal(states[:, 2::3], frames)
    e = pot.score_energy(states.numpy())
    assert np.array_equal(e.max(1), strict) and np.array_equal(pot.score_energy(arg), strict)
    # the first state attaining the maximum is the one kept
    first = e.argmax(1)
    assert np.array_equal(arg, states.numpy()[np.arange(7), first])
    # the old two-value form is unchanged (and gives the same maximum with the same noise)
    f2, s2 = annealed_langevin(pot, xs, sg, 7, k_steps=3, step=1e-3, generator=torch.Generator().manual_seed(0),
                               track_max=True)
    assert torch.equal(f2, frames) and np.array_equal(s2, strict)


def test_degenerate_settings_are_refused_before_any_work():
    from latentgeo.errors import LatentgeoError
    from latentgeo.molecules.tps import transition_paths

    pot = AlanineTable()
    for kw, msg in ((dict(k_steps=0), "k_steps"), (dict(n_points=1), "n_points"), (dict(denoiser="gp"), "denoiser"),
                    (dict(scheme="rk4"), "scheme"), (dict(avoid=((0.0, 0.0), float("nan"))), "sigma")):
        with pytest.raises(LatentgeoError, match=msg):
            transition_paths(pot, ALANINE_START, ALANINE_END, 2, **{**TINY, **kw})
    assert pot.n_grad_evals == 0  # nothing was simulated
