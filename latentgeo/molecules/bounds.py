"""Grid minimax (bottleneck) lower bound for transition paths.

Any continuous path between two states passes through a chain of grid cells; scored on the table by nearest grid
point, its MaxEnergy is at least the *bottleneck* value: the smallest threshold ``t`` such that the grid nodes with
``U <= t`` connect the two states. We find it with a minimax Dijkstra (priority = the largest energy met so far).
"""
from __future__ import annotations

import heapq
from typing import List, Sequence, Tuple

import numpy as np

from latentgeo.errors import LatentgeoError

__all__ = ["minimax_path", "grid_lower_bound"]

_N4 = ((1, 0), (-1, 0), (0, 1), (0, -1))
_N8 = _N4 + ((1, 1), (1, -1), (-1, 1), (-1, -1))


def minimax_path(
    energy: np.ndarray,
    start: Sequence[int],
    end: Sequence[int],
    periodic: bool = True,
    connectivity: int = 8,
) -> Tuple[float, List[Tuple[int, int]]]:
    """Bottleneck path on a 2-D grid.

    Args:
        energy: ``[H, W]`` node energies.
        start, end: grid indices ``(i, j)`` of the two states.
        periodic: wrap both axes (a torus, e.g. dihedral angles).
        connectivity: 4 (axis neighbours) or 8 (also diagonals). A continuous path that leaves a nearest-grid cell
            through a corner visits a diagonal neighbour, so 8 is the right choice for nearest-grid scoring.

    Returns:
        ``(value, path)``: the minimal possible maximum energy along a grid path (endpoints included), and one
        optimal path as a list of ``(i, j)``.
    """
    e = np.asarray(energy, dtype=np.float64)
    if e.ndim != 2:
        raise LatentgeoError(f"energy grid has shape {e.shape}; pass a 2-D [H, W] array")
    if connectivity not in (4, 8):
        raise LatentgeoError(f"connectivity must be 4 or 8, got {connectivity!r}; "
                             "pass connectivity=8 (the default) or 4")
    h, w = e.shape
    s = (int(start[0]), int(start[1]))
    t = (int(end[0]), int(end[1]))
    for name, p in (("start", s), ("end", t)):
        if not (0 <= p[0] < h and 0 <= p[1] < w):
            raise LatentgeoError(f"{name} index {p} lies outside the {h}x{w} grid; pass indices inside it")
    nbrs = _N8 if connectivity == 8 else _N4
    best = np.full((h, w), np.inf)
    prev = {}
    best[s] = e[s]
    heap = [(e[s], s)]
    while heap:
        v, (i, j) = heapq.heappop(heap)
        if v > best[i, j]:
            continue
        if (i, j) == t:
            break
        for di, dj in nbrs:
            a, b = i + di, j + dj
            if periodic:
                a %= h
                b %= w
            elif not (0 <= a < h and 0 <= b < w):
                continue
            nv = max(v, e[a, b])
            if nv < best[a, b]:
                best[a, b] = nv
                prev[(a, b)] = (i, j)
                heapq.heappush(heap, (nv, (a, b)))
    path = [t]
    while path[-1] != s:
        path.append(prev[path[-1]])
    return float(best[t]), path[::-1]


def grid_lower_bound(potential=None, start=None, end=None, connectivity: int = 8) -> float:
    """MaxEnergy lower bound between two states on the alanine table (default states of the benchmark).

    Args:
        potential: an :class:`~latentgeo.molecules.AlanineTable` (default: a new one).
        start, end: ``(phi, psi)`` in radians (default: ``ALANINE_START`` / ``ALANINE_END``).
    """
    from latentgeo.molecules.potentials import ALANINE_END, ALANINE_START, AlanineTable

    pot = potential if potential is not None else AlanineTable()
    st = np.asarray(start if start is not None else ALANINE_START, dtype=np.float64)
    en = np.asarray(end if end is not None else ALANINE_END, dtype=np.float64)
    i0, j0 = pot.grid_index(st)
    i1, j1 = pot.grid_index(en)
    value, _ = minimax_path(pot.table, (int(i0), int(j0)), (int(i1), int(j1)), periodic=True,
                            connectivity=connectivity)
    return value
