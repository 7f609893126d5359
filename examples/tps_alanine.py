"""Transition paths of alanine dipeptide through a diffusion model's spacetime (``transition_paths``).

What it shows
    The full pipeline of the spacetime paper's transition path sampling on the alanine dipeptide (phi, psi) energy
    table shipped with latentgeo: Boltzmann samples by Langevin dynamics, a small denoiser trained on them, the
    spacetime geodesic between the two metastable states at high SNR, annealed Langevin paths tethered to it, and
    the MaxEnergy score (the highest table energy a path visits; lower is better) against the grid minimax lower
    bound. No diffusers model is involved; the denoiser is latentgeo's own MLP (or ``denoiser="kde"``, training-free,
    or any callable ``D(x, sigma)``).

How to run (under a minute on 2 CPU cores; nothing is downloaded)
    .venv/bin/python examples/tps_alanine.py

For a real run
    The settings here are tiny (a few hundred training steps, a few dozen paths). The benchmark's settings
    (``benchmarks/tps_alanine.py``, MaxEnergy 37.4 against the bound 36.34) are the function's defaults::

        res = transition_paths(AlanineTable(), ALANINE_START, ALANINE_END, n_paths=1000, geo_compile=True)

    (about 3 minutes on 2 CPU cores; ``device="cuda"`` trains the denoiser on a GPU). To use your own diffusion
    model of molecular configurations, pass it as ``denoiser=`` (e.g. ``resolve_denoiser("path/to/model")``) and
    your own :class:`~latentgeo.molecules.Potential`. On the command line: ``latentgeo tps alanine --paths 1000``.
"""
import numpy as np
import torch

import _tiny_models as tiny
from latentgeo.molecules import ALANINE_END, ALANINE_START, AlanineTable, grid_lower_bound, transition_paths

torch.set_num_threads(1)

pot = AlanineTable()
if tiny.QUICK:
    kw = dict(n_paths=8, n_chains=200, data_steps=100, train_steps=60, n_points=16, n_nodes=4, geo_steps=20, k_steps=8)
else:
    kw = dict(n_paths=64, n_chains=500, data_steps=400, train_steps=600, n_points=64, n_nodes=8, geo_steps=200,
              k_steps=32)
res = transition_paths(pot, ALANINE_START, ALANINE_END, seed=0, **kw)
bound = grid_lower_bound(pot)
me, ok = res.max_energy, res.reached
print(f"{kw['n_paths']} paths x {kw['n_points']} frames (settings: {kw})")
print(f"reached the end state: {ok.mean():.0%} of the paths")
if ok.any():  # the bound holds for paths that cross; paths that stay in the start basin score lower
    print(f"MaxEnergy of the reactive paths {me[ok].mean():.2f} +- {me[ok].std():.2f} kT (grid minimax lower bound "
          f"{bound:.2f}; the benchmark at full settings: 37.4)")
geo = res.info.get("geodesic") or {}
print(f"geodesic: sigma at its ends {res.geodesic_sigmas[0]:.3g}, max sigma along it {res.geodesic_sigmas.max():.3g}"
      + "".join(f", {k} {geo[k]:.4g}" for k in ("energy", "length") if isinstance(geo.get(k), float)))
print("energy-gradient evaluations:", res.evals)
print("seconds per stage:", {k: round(v, 2) for k, v in res.seconds.items()})
if not (bool(np.isfinite(me).all()) and (not ok.any() or me[ok].min() >= bound - 1e-6)):
    raise SystemExit(1)
