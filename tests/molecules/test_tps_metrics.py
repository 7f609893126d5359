"""TPS metrics (latentgeo.molecules.metrics): hand-computed values on hand-made paths, the best-path curve, and the
`metrics` section that `latentgeo tps` writes into summary.json."""
import json
import math

import numpy as np
import pytest
import torch

from latentgeo.errors import LatentgeoError
from latentgeo.molecules.metrics import best_at, best_so_far, equal_evaluations, tps_metrics
from latentgeo.molecules.potentials import Potential


class Plane(Potential):
    """U(x, y) = 3 - 2 x + 10 y: every energy below is computable by hand."""

    bounds = ((-1.0, 2.0), (-1.0, 1.0))

    def _energy(self, x):
        return 3.0 - 2.0 * x[:, 0] + 10.0 * x[:, 1]

    def _energy_and_grad(self, x):
        g = torch.stack([torch.full_like(x[:, 0], -2.0), torch.full_like(x[:, 1], 10.0)], -1)
        return self._energy(x), g


class PeriodicPlane(Plane):
    period = 2 * math.pi


START, END = (0.0, 0.0), (1.0, 0.0)  # U(start) = 3, U(end) = 3 - 2 = 1 -> reference min(3, 1) = 1
PATHS = np.array([
    # states                          energies 3 - 2x + 10y       max   final distance to (1, 0)
    [[0, 0], [0.5, 0.3], [1.0, 0.0]],    # 3, 3 - 1 + 3 = 5, 1       5.0   0           -> reaches (r = 0.5)
    [[0, 0], [0.5, 0.1], [0.9, 0.2]],    # 3, 3 - 1 + 1 = 3, 3.2     3.2   sqrt(0.05)  -> reaches
    [[0, 0], [0.2, 0.6], [0.4, 0.0]],    # 3, 3 - 0.4 + 6 = 8.6, 2.2 8.6   0.6         -> does not reach
    [[0, 0], [0.5, -0.1], [1.0, 0.45]],  # 3, 3 - 1 - 1 = 1, 5.5     5.5   0.45        -> reaches
], dtype=np.float64)


def test_metrics_match_hand_computed_values():
    pot = Plane()
    # each path costs 100 evaluations after 1000 evaluations of set-up: they complete at 1100, 1200, 1300, 1400
    m = tps_metrics(PATHS, pot, START, END, n_energy_evals=1400, radius=0.5, radii=(0.2,),
                    path_evals=[1100, 1200, 1300, 1400], lower_bound=2.0)
    me = [5.0, 3.2, 8.6, 5.5]
    assert m.n_paths == 4
    assert m.max_energy_mean == pytest.approx(22.3 / 4)                 # 5.575
    # deviations from 5.575: -0.575, -2.375, 3.025, -0.075 -> squares sum 0.330625 + 5.640625 + 9.150625 + 0.005625
    assert m.max_energy_std == pytest.approx(math.sqrt(15.1275 / 4))
    assert m.max_energy_min == pytest.approx(3.2)
    assert m.max_energy_median == pytest.approx((5.0 + 5.5) / 2)
    assert (m.energy_start, m.energy_end, m.reference_energy) == pytest.approx((3.0, 1.0, 1.0))
    # barrier = MaxEnergy - min(U(start), U(end)) = MaxEnergy - 1: 4, 2.2, 7.6, 4.5
    assert m.barrier_mean == pytest.approx(18.3 / 4)
    assert m.barrier_std == pytest.approx(m.max_energy_std)
    assert m.barrier_min == pytest.approx(2.2)
    # paths 1, 2, 4 end within 0.5 of (1, 0); path 3 ends 0.6 away
    assert m.target_radius == 0.5 and m.n_reached == 3 and m.reached_fraction == pytest.approx(0.75)
    assert m.max_energy_reached_mean == pytest.approx((5.0 + 3.2 + 5.5) / 3)
    # reaching MaxEnergies 5.0, 3.2, 5.5 around 13.7 / 3: population std
    r = np.array([5.0, 3.2, 5.5])
    assert m.max_energy_reached_std == pytest.approx(math.sqrt(((r - 13.7 / 3) ** 2).sum() / 3))
    assert m.max_energy_reached_min == pytest.approx(3.2)
    assert m.final_distance_mean == pytest.approx((0 + math.sqrt(0.05) + 0.6 + 0.45) / 4)
    # at radius 0.2 only path 1 (distance 0) reaches; path 2's sqrt(0.05) = 0.2236 > 0.2
    assert m.reached_fraction_by_radius == {"0.2": 0.25, "0.5": 0.75}
    assert m.n_energy_evals == 1400
    assert m.max_energy_mean_minus_lower_bound == pytest.approx(5.575 - 2.0)
    # the best transition path so far: 5.0 after 1100; 3.2 after 1200; path 3 (1300) does not reach; stays 3.2
    assert m.curve == {"evaluations": [1100, 1200, 1400], "best_max_energy": [5.0, 3.2, 3.2]}
    assert best_at(m.curve, 1000) is None and best_at(m.curve, 1150) == 5.0 and best_at(m.curve, 1399) == 3.2
    assert best_at(m.curve, 1500, total=1400) is None
    d = m.to_dict()
    json.dumps(d)
    assert d["curve"] == m.curve and d["max_energy_mean"] == m.max_energy_mean


def test_strict_max_energy_is_used_and_checked():
    pot = Plane()
    # a strict MaxEnergy over more states than the frames given (the spacetime sampler's case) is used as is ...
    strict = np.array([5.0, 4.0, 8.6, 6.0])
    m = tps_metrics(PATHS, pot, START, END, n_energy_evals=0, max_energy=strict, radius=0.5)
    assert m.max_energy_mean == pytest.approx(23.6 / 4) and m.max_energy_reached_mean == pytest.approx(5.0)
    # ... but one below the maximum over the given states cannot be a maximum over every state
    with pytest.raises(LatentgeoError, match="below the maximum"):
        tps_metrics(PATHS, pot, START, END, n_energy_evals=0, max_energy=strict - 1.0)
    with pytest.raises(LatentgeoError, match="shape"):
        tps_metrics(PATHS[0], pot, START, END, n_energy_evals=0)


def test_reach_wraps_angles_on_a_torus():
    pot = PeriodicPlane()
    end = (-math.pi + 0.1, 0.0)
    paths = np.array([[[0.0, 0.0], [math.pi - 0.1, 0.0]]])  # 0.2 from `end` across the seam, 2 pi - 0.2 without
    m = tps_metrics(paths, pot, START, end, n_energy_evals=0)
    assert m.target_radius == 0.75  # TPS-DPS's torsion radius on a periodic surface
    assert m.final_distance_mean == pytest.approx(0.2) and m.reached_fraction == 1.0


def test_best_so_far_is_monotone_and_compressed():
    rng = np.random.default_rng(0)
    me = rng.normal(size=200)
    ev = np.cumsum(rng.integers(1, 50, size=200))
    c = best_so_far(me, ev)
    b = np.array(c["best_max_energy"])
    assert (np.diff(b) <= 0).all() and b[-1] == me.min() and c["evaluations"][-1] == ev[-1]
    assert c["evaluations"][0] == ev[0] and b[0] == me[0]
    # a step function: reading it at every completion reproduces the running minimum exactly
    assert all(best_at(c, e) == v for e, v in zip(ev, np.minimum.accumulate(me)))
    # leading points without a path (inf) are dropped
    assert best_so_far([np.inf, 2.0, 3.0, 1.0], [5, 6, 7, 8]) == {"evaluations": [6, 8], "best_max_energy": [2.0, 1.0]}
    with pytest.raises(LatentgeoError, match="non-decreasing"):
        best_so_far([1.0, 2.0], [5, 4])
    a = {"n_energy_evals": 1000, "curve": {"evaluations": [10, 500], "best_max_energy": [3, 2]}}
    b = {"n_energy_evals": 800, "curve": {"evaluations": [100], "best_max_energy": [2.5]}}
    eq = equal_evaluations({"a": a, "b": b}, n_budgets=3)
    assert eq["common_budget"] == 800 and eq["at_common_budget"] == {"a": 2.0, "b": 2.5}
    # budgets: geometric from the earliest first path (10) to the common budget (800): 10, 89.4, 800
    assert [r["evaluations"] for r in eq["rows"]] == [10, 89, 800]
    assert eq["rows"][0] == {"evaluations": 10, "a": 3.0, "b": None}  # b has no path before 100 evaluations
    assert eq["rows"][1] == {"evaluations": 89, "a": 3.0, "b": None}


def test_cli_mueller_brown_writes_metrics(tmp_path):
    from latentgeo.cli import main

    torch.set_num_threads(1)
    out = tmp_path / "mb"
    main(["tps", "mueller-brown", "--paths", "20", "--out", str(out), "--quick", "--denoiser", "kde",
          "--n-points", "32", "--k-steps", "64", "--geo-steps", "10"])
    s = json.loads((out / "summary.json").read_text())
    m = s["metrics"]
    assert {"max_energy", "barrier", "reached", "curve"} <= set(m["definitions"])
    ours, tws = m["methods"]["spacetime_geodesic"], m["methods"]["two_way_shooting"]
    # MaxEnergy is scored as before: every Langevin state (the same numbers as the top-level fields / paths.npz)
    assert ours["max_energy_mean"] == pytest.approx(s["max_energy_mean"], abs=1e-12)
    assert ours["max_energy_std"] == pytest.approx(s["max_energy_std"], abs=1e-12)
    assert ours["max_energy_mean"] == pytest.approx(np.load(out / "paths.npz")["max_energy"].mean(), abs=1e-12)
    assert ours["n_energy_evals"] == s["energy_evaluations"]
    assert tws["max_energy_mean"] == pytest.approx(s["baselines"]["two_way_shooting"]["max_energy_mean"])
    # shooting's count includes the string method that supplies its initial shooting point
    n_str = s["baselines"]["string_method"]["energy_evaluations"]
    assert tws["n_energy_evals"] == s["baselines"]["two_way_shooting"]["energy_evaluations"] + n_str
    assert tws["reached_fraction"] == 1.0  # shooting paths are reactive (end ball 0.3 inside the 0.5 radius)
    for v in m["methods"].values():
        assert v["barrier_mean"] == pytest.approx(v["max_energy_mean"] - v["reference_energy"])
        assert v["reference_energy"] == pytest.approx(-14.66994892, abs=1e-6)  # U(A) / 10, the lower state
    # the shooting curve (recorded during sampling) is non-increasing, within its budget, and at least as good as
    # the best of the returned ensemble (a subset of the paths it visited)
    c = tws["curve"]
    assert len(c["evaluations"]) >= 2 and (np.diff(c["best_max_energy"]) <= 0).all()
    assert (np.diff(c["evaluations"]) >= 0).all() and n_str < c["evaluations"][0]
    assert c["evaluations"][-1] == tws["n_energy_evals"]
    assert c["best_max_energy"][-1] <= tws["max_energy_min"] + 1e-12
    # ours: path i completes at data + (i + 1) N K evaluations; the curve runs over the paths that reach the target
    assert ours["n_reached"] > 0
    co, data, nk = ours["curve"], s["energy_evaluations_split"]["data"], 32 * 64
    assert (np.diff(co["best_max_energy"]) <= 0).all() and co["best_max_energy"][-1] == ours["max_energy_reached_min"]
    assert all((e - data) % nk == 0 and e > data for e in co["evaluations"])
    assert co["evaluations"][-1] == ours["n_energy_evals"] == data + 20 * nk
    eq = m["equal_evaluations"]
    assert eq["common_budget"] == min(ours["n_energy_evals"], tws["n_energy_evals"])
    assert set(eq["at_common_budget"]) == {"spacetime_geodesic", "two_way_shooting"}
    assert (out / "convergence.png").read_bytes()[:4] == b"\x89PNG"
