"""Potentials: table lookup, Fourier surrogate, Mueller-Brown, gradient counters, minimax lower bound."""
import math
from collections import deque

import numpy as np
import pytest
import torch

from latentgeo.errors import LatentgeoError
from latentgeo.molecules import (ALANINE_END, ALANINE_START, MUELLER_BROWN_MINIMA, AlanineTable, MuellerBrown,
                                 grid_lower_bound, load_alanine_table, minimax_path, wrap_angle)

SHARED = "/work/shared/data/alanine_dipeptide_phi_psi_energy.dat"


@pytest.fixture(scope="module")
def ala():
    return AlanineTable()


def test_load_table_shapes_and_orientation():
    phi, psi, e = load_alanine_table()
    assert phi.shape == (89,) and psi.shape == (89,) and e.shape == (89, 89)
    assert np.allclose(np.diff(phi), 2 * np.pi / 89) and phi[0] == pytest.approx(-np.pi)
    # independent parse of the raw file: rows are (phi, psi, U)
    raw = np.loadtxt(SHARED)
    for r in raw[[0, 1, 90, 4000, 7920]]:
        i = np.argmin(np.abs(phi - r[0]))
        j = np.argmin(np.abs(psi - r[1]))
        assert e[i, j] == r[2]


def test_table_minimum_and_wrapping(ala):
    x = np.array([[-1.377, 1.094]])
    assert ala.table_energy(x)[0] == 0.0
    # the same point shifted by multiples of 2 pi, and the edge pi == -pi
    shifted = x + np.array([[2 * np.pi, -4 * np.pi], [-6 * np.pi, 2 * np.pi]])
    assert (ala.table_energy(shifted) == 0.0).all()
    phi, psi, e = load_alanine_table()
    assert ala.table_energy(np.array([[np.pi, np.pi]]))[0] == e[0, 0]
    # just below +pi is nearer to -pi (grid point 0) than to the last grid point
    assert ala.table_energy(np.array([[np.pi - 0.01, phi[5]]]))[0] == e[0, 5]
    assert ala.table_energy(np.array([[phi[-1] + 0.01, phi[5]]]))[0] == e[-1, 5]
    assert wrap_angle(torch.tensor([3 * math.pi / 2])).item() == pytest.approx(-math.pi / 2)


def test_surrogate_fit_error_and_gradient(ala):
    phi, psi, e = load_alanine_table()
    g = torch.tensor(np.stack(np.meshgrid(phi, psi, indexing="ij"), -1).reshape(-1, 2))
    err = (ala.energy(g).numpy().reshape(89, 89) - e)
    assert np.abs(err).max() < 0.05 and ala.fit_max_error == pytest.approx(np.abs(err).max())
    # periodic: same value after a 2 pi shift
    assert torch.allclose(ala.energy(g[:50]), ala.energy(g[:50] + 2 * math.pi), atol=1e-9)
    # analytic gradient equals autograd of the energy
    x = (torch.rand(64, 2, dtype=torch.float64) * 2 - 1) * math.pi
    xr = x.clone().requires_grad_(True)
    (auto,) = torch.autograd.grad(ala.energy(xr).sum(), xr)
    ala.reset_counter()
    e2, gr = ala.energy_and_grad(x)
    assert torch.allclose(gr, auto, atol=1e-9) and ala.n_grad_evals == 64
    ala.grad(x[:10])
    assert ala.reset_counter() == 74 and ala.n_grad_evals == 0


def test_mueller_brown_minima_and_gradient():
    mb = MuellerBrown()
    for (xy, u) in MUELLER_BROWN_MINIMA:
        x = torch.tensor([xy], dtype=torch.float64)
        assert mb.energy(x).item() == pytest.approx(u, abs=0.01)
        # a local minimum: small gradient relative to the scale, and higher energy around it
        ring = x + 0.02 * torch.tensor([[1.0, 0], [-1, 0], [0, 1], [0, -1]], dtype=torch.float64)
        assert (mb.energy(ring) > mb.energy(x)).all()
    x = torch.randn(32, 2, dtype=torch.float64) * 0.5 + torch.tensor([-0.3, 0.8], dtype=torch.float64)
    xr = x.clone().requires_grad_(True)
    (auto,) = torch.autograd.grad(mb.energy(xr).sum(), xr)
    assert torch.allclose(mb.grad(x), auto, atol=1e-8) and mb.n_grad_evals == 32


def test_bad_inputs():
    with pytest.raises(LatentgeoError, match=r"\[B, 2\]"):
        MuellerBrown().energy(torch.zeros(3, 3))
    with pytest.raises(LatentgeoError, match="n_freq"):
        AlanineTable(n_freq=60)


def _connected(e, s, t, level, periodic):
    """BFS over the 8-neighbour sub-level set {e <= level}."""
    h, w = e.shape
    if e[s] > level or e[t] > level:
        return False
    seen = {s}
    q = deque([s])
    while q:
        i, j = q.popleft()
        for di in (-1, 0, 1):
            for dj in (-1, 0, 1):
                a, b = i + di, j + dj
                if periodic:
                    a, b = a % h, b % w
                elif not (0 <= a < h and 0 <= b < w):
                    continue
                if (a, b) not in seen and e[a, b] <= level:
                    seen.add((a, b))
                    q.append((a, b))
    return t in seen


def _bottleneck_bruteforce(e, s, t, periodic):
    """Threshold sweep: the smallest grid level whose sub-level set connects s and t. Connectivity is monotone in
    the level, so bisect over the sorted distinct levels (a plain linear sweep gives the same answer, slower)."""
    levels = np.unique(e)
    lo, hi = 0, len(levels) - 1
    while lo < hi:
        mid = (lo + hi) // 2
        if _connected(e, s, t, levels[mid], periodic):
            hi = mid
        else:
            lo = mid + 1
    return float(levels[lo])


def _bottleneck_linear(e, s, t, periodic):
    for level in np.unique(e):
        if _connected(e, s, t, level, periodic):
            return float(level)


@pytest.mark.parametrize("periodic", [True, False])
def test_minimax_equals_bruteforce_on_random_grids(periodic):
    rng = np.random.default_rng(3)
    for _ in range(20):
        e = rng.random((9, 11)) * 10
        s, t = (0, 0), (int(rng.integers(9)), int(rng.integers(11)))
        v, path = minimax_path(e, s, t, periodic=periodic)
        assert v == _bottleneck_bruteforce(e, s, t, periodic) == _bottleneck_linear(e, s, t, periodic)
        assert path[0] == s and path[-1] == t and max(e[p] for p in path) == v
        for (a, b), (c, d) in zip(path[:-1], path[1:]):  # consecutive cells are neighbours
            da, db = abs(a - c), abs(b - d)
            if periodic:
                da, db = min(da, 9 - da), min(db, 11 - db)
            assert max(da, db) == 1


def test_periodic_wrap_matters():
    # a wall in the middle column; only the wrap-around connects the two sides cheaply
    e = np.zeros((5, 7))
    e[:, 3] = 9.0
    assert minimax_path(e, (2, 1), (2, 5), periodic=True)[0] == 0.0
    assert minimax_path(e, (2, 1), (2, 5), periodic=False)[0] == 9.0


def test_alanine_lower_bound(ala):
    lb = grid_lower_bound(ala)
    assert lb == pytest.approx(36.34, abs=0.005)
    i0, j0 = ala.grid_index(np.array(ALANINE_START))
    i1, j1 = ala.grid_index(np.array(ALANINE_END))
    assert lb == _bottleneck_bruteforce(ala.table, (int(i0), int(j0)), (int(i1), int(j1)), True)


def test_openmm_source_missing_names_the_extra(monkeypatch):
    import builtins

    from latentgeo.molecules.openmm_source import openmm_alanine_samples

    real_import = builtins.__import__

    def fake_import(name, *a, **k):
        if name.split(".")[0] in ("openmm", "openmmtools", "mdtraj"):
            raise ImportError(f"No module named '{name}'", name=name)
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(LatentgeoError, match=r"pip install 'latentgeo\[molecules\]'"):
        openmm_alanine_samples(10)
