"""Two-way shooting MCMC baseline at reduced settings: every sampled path is a reactive Langevin trajectory."""
import math

import numpy as np
import torch

from latentgeo.molecules import ALANINE_END, ALANINE_START, AlanineTable
from latentgeo.molecules.baselines import _state_distance, string_method, two_way_shooting
from latentgeo.molecules.tps import max_energy


def test_two_way_shooting_paths_connect_the_states():
    torch.set_num_threads(1)
    pot = AlanineTable()
    st = string_method(pot, ALANINE_START, ALANINE_END, n_images=32, n_iter=300)
    top = st[int(np.argmax(pot.score_energy(st.numpy())))]
    pot.reset_counter()
    T, C, dt, r = 300, 24, 2e-3, (3.0, 0.5)
    out = two_way_shooting(pot, ALANINE_START, ALANINE_END, n_paths=48, n_chains=C, n_frames=T, dt=dt, radius=r,
                           burn_in=5, init_point=top, seed=0)
    n = pot.reset_counter()
    p = out["paths"]
    assert p.shape == (48, T, 2)
    assert (_state_distance(pot, p[:, 0], ALANINE_START) < r[0]).all()
    assert (_state_distance(pot, p[:, -1], ALANINE_END) < r[1]).all()
    # dynamical: consecutive frames differ by an Euler-Maruyama step (noise sqrt(2 dt) per axis plus drift)
    jumps = (p[:, 1:] - p[:, :-1]).norm(dim=-1)
    assert float(jumps.max()) < 10 * math.sqrt(2 * dt)
    # every proposal integrates exactly T - 1 new states per chain
    assert n > 0 and n % (T - 1) == 0
    assert 0.0 <= out["acceptance"] <= 1.0
    # the paths cross the ~36 kT barrier (the frames can skip single grid cells), well below the straight segment
    me = max_energy(pot, p)
    assert me.min() > 30.0 and me.mean() < 40.0
