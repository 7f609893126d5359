"""Runnable demonstrations of the spacetime-geometry paper's toy results (exact mixture denoisers, no training).

- :func:`mixture_1d_demo` — paper Fig. 1: a 1-D Gaussian mixture, the spacetime geodesic between two points drawn over
  the noised density ``p_sigma(x)``, and the energy/length of PF-ODE sample paths vs the geodesic between the same
  endpoints (the PF-ODE path is not a geodesic: the geodesic is shorter).
- :func:`pullback_demo` — negative result (i): geodesics of the pullback of the Euclidean metric through the PF-ODE
  decoder decode to straight segments in data space, with energy ``|a - b|^2 / 2``; the latent geometry adds nothing.
- :func:`fisher_rao_collapse_demo` — negative result (ii): the Fisher-Rao metric of ``p(x0 | x_T)`` over ``x_T`` alone
  (fixed terminal noise) collapses as ``sigma_T`` grows (distances ~ 1/sigma_T), because the reverse process forgets
  ``x_T``.

Every demo returns a dict of numbers (JSON-serialisable) and, given ``out`` (a folder), writes a PNG plot and the
numbers as JSON there.
"""
from __future__ import annotations

import io
import math
import os
from pathlib import Path
from typing import Dict, Optional, Union

import numpy as np
import torch

from latentgeo.spacetime.diffed import _rho_grid, pf_ode_path
from latentgeo.spacetime.family import curve_energy, curve_length, lambda_of_sigma, sigma_of_lambda
from latentgeo.spacetime.geodesic import geodesic
from latentgeo.spacetime.spline import spline_basis

__all__ = ["mixture_1d", "mixture_2d", "mixture_1d_demo", "pullback_demo", "fisher_rao_collapse_demo", "save_figure"]

DT = torch.float64
PathLike = Union[str, os.PathLike]


def mixture_1d():
    """The 1-D toy: ``0.5 N(-1, 0.15^2) + 0.5 N(1, 0.15^2)`` (float64)."""
    from latentgeo.fisher.exact import GaussianMixture

    return GaussianMixture(torch.tensor([0.5, 0.5], dtype=DT), torch.tensor([[-1.0], [1.0]], dtype=DT),
                           torch.full((2, 1, 1), 0.15 ** 2, dtype=DT))


def mixture_2d():
    """A 2-D toy: three anisotropic Gaussians (float64)."""
    from latentgeo.fisher.exact import GaussianMixture

    return GaussianMixture(torch.tensor([0.35, 0.35, 0.3], dtype=DT),
                           torch.tensor([[-1.2, 0.0], [1.2, 0.3], [0.0, 1.5]], dtype=DT),
                           torch.tensor([[0.05, 0.2], [0.2, 0.04], [0.1, 0.1]], dtype=DT))


def save_figure(fig, path: PathLike) -> None:
    """Write a matplotlib figure as PNG atomically."""
    from latentgeo.checkpoint import atomic_write_bytes

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())


def _finish(out: Optional[PathLike], name: str, result: Dict, fig) -> Dict:
    import matplotlib.pyplot as plt

    if out is not None:
        from latentgeo.checkpoint import atomic_write_json

        Path(out).mkdir(parents=True, exist_ok=True)
        save_figure(fig, Path(out) / f"{name}.png")
        atomic_write_json(Path(out) / f"{name}.json", result)
        result["files"] = [str(Path(out) / f"{name}.png"), str(Path(out) / f"{name}.json")]
    plt.close(fig)
    return result


def _pf_path_uniform_lambda(D, x_T: torch.Tensor, sigma_T: float, sigma_end: float, n_points: int,
                            substeps: int = 8):
    """A PF-ODE trajectory sampled at ``n_points`` noise levels uniform in log-SNR: (xs [N, ...], sigmas [N])."""
    lam = torch.linspace(float(lambda_of_sigma(torch.tensor(sigma_T))), float(lambda_of_sigma(torch.tensor(sigma_end))),
                         (n_points - 1) * substeps + 1, dtype=DT)
    sig = sigma_of_lambda(lam)
    traj = pf_ode_path(D, x_T[None], sig)[:, 0]
    return traj[::substeps], sig[::substeps]


def mixture_1d_demo(out: Optional[PathLike] = None, n_points: int = 48, n_nodes: int = 8, steps: int = 300,
                    n_paths: int = 3, sigma_T: float = 2.0, sigma_end: float = 0.1, seed: int = 0) -> Dict:
    """Paper Fig. 1 on the 1-D mixture with the exact denoiser.

    (a) the geodesic between ``z_a = (-1, 0.1)`` and ``z_b = (1, 0.1)`` (one point in each mode) over ``p_sigma(x)``;
    (b) ``n_paths`` PF-ODE sample paths from ``(x_T, sigma_T)`` down to ``sigma_end`` (sampled uniformly in log-SNR)
    and the geodesic between each path's endpoints: energies and lengths of both (exact divergence).
    Returns the numbers; with ``out`` writes ``mixture_1d.png`` and ``mixture_1d.json``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gm = mixture_1d()
    D = gm.as_denoiser()
    za = (torch.tensor([-1.0], dtype=DT), 0.1)
    zb = (torch.tensor([1.0], dtype=DT), 0.1)
    g = geodesic(D, za, zb, n_points=n_points, n_nodes=n_nodes, steps=steps, n_probes=None)
    res: Dict = {"modes": {"start": [-1.0, 0.1], "end": [1.0, 0.1], "straight_energy": g.history["energy"][0],
                           "geodesic_energy": g.energy, "geodesic_length": g.length,
                           "max_sigma_on_geodesic": float(g.sigmas.max())}, "pf_paths": []}
    gen = torch.Generator().manual_seed(seed)
    x_T = torch.randn(n_paths, 1, generator=gen, dtype=DT) * math.sqrt(sigma_T ** 2 + 1.0)
    paths, geos = [], []
    for k in range(n_paths):
        xs, sg = _pf_path_uniform_lambda(D, x_T[k], sigma_T, sigma_end, n_points)
        e_pf = float(curve_energy(D, xs, sg, n_probes=None))
        l_pf = float(curve_length(D, xs, sg, n_probes=None))
        gk = geodesic(D, (xs[0], float(sg[0])), (xs[-1], float(sg[-1])), n_points=n_points, n_nodes=n_nodes,
                      steps=steps, n_probes=None)
        res["pf_paths"].append({"x_T": float(x_T[k, 0]), "x_end": float(xs[-1, 0]), "pf_energy": e_pf,
                                "pf_length": l_pf, "geodesic_energy": gk.energy, "geodesic_length": gk.length,
                                "straight_energy": gk.history["energy"][0]})
        paths.append((xs, sg))
        geos.append(gk)

    fig, ax = plt.subplots(1, 1, figsize=(7.5, 4.5))
    lam_grid = np.linspace(float(lambda_of_sigma(torch.tensor(sigma_T))) - 0.5, 6.0, 200)
    x_grid = np.linspace(-7.0, 7.0, 281)
    sig_grid = np.exp(-lam_grid / 2)
    dens = np.zeros((x_grid.size, lam_grid.size))
    xg = torch.as_tensor(x_grid, dtype=DT)[:, None]
    for j, s in enumerate(sig_grid):
        lp = gm.log_prob(xg, float(s)).numpy()
        dens[:, j] = np.exp(lp - lp.max())
    ax.imshow(dens, origin="lower", aspect="auto", cmap="Greys",
              extent=[lam_grid[0], lam_grid[-1], x_grid[0], x_grid[-1]])
    lam_g = lambda_of_sigma(g.sigmas).numpy()
    ax.plot(lam_g, g.xs[:, 0].numpy(), "r-", lw=2.2, label=f"geodesic (L={g.length:.2f})")
    ax.plot([lam_g[0], lam_g[-1]], [-1, 1], "r--", lw=1, label="straight line in (λ, x)")
    for k, ((xs, sg), gk) in enumerate(zip(paths, geos)):
        ax.plot(lambda_of_sigma(sg).numpy(), xs[:, 0].numpy(), color="tab:blue", lw=1.4,
                label="PF-ODE paths" if k == 0 else None)
        ax.plot(lambda_of_sigma(gk.sigmas).numpy(), gk.xs[:, 0].numpy(), color="tab:orange", lw=1.4, ls="-.",
                label="geodesics between PF-ODE endpoints" if k == 0 else None)
    ax.set_xlabel("log-SNR λ = -2 log σ  (noise ← → data)")
    ax.set_ylabel("x")
    ax.set_title("Spacetime geodesics over the noised density p_σ(x) (1-D mixture, exact denoiser)")
    ax.legend(loc="lower right", fontsize=7)
    return _finish(out, "mixture_1d", res, fig)


def _decode(D, u: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    return pf_ode_path(D, u, grid, grad=True)[-1]


def pullback_demo(out: Optional[PathLike] = None, sigma_T: float = 5.0, sigma_0: float = 0.02, ode_steps: int = 12,
                  n_points: int = 16, n_nodes: int = 6, steps: int = 300, lr: float = 0.005, seed: int = 1) -> Dict:
    """Negative result (i): pullback geodesics of the PF-ODE decoder decode to straight segments.

    Latent ``u = x_T`` at ``sigma_T``; decoder ``Dec`` = Heun PF-ODE from ``sigma_T`` to ``sigma_0`` (differentiable).
    A spline curve ``u(s)`` between ``u_a`` and ``u_b`` is optimised for the pullback energy
    ``(N-1)/2 sum_n |Dec(u_{n+1}) - Dec(u_n)|^2``. Returns the decoded curve's energy (expected ``|a-b|^2/2``),
    its largest distance from the segment [a, b] relative to ``|a-b|``, and the same for the straight latent line.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gm = mixture_2d()
    D = gm.as_denoiser()
    grid = _rho_grid(sigma_0, sigma_T, ode_steps, DT, "cpu").flip(0)
    gen = torch.Generator().manual_seed(seed)
    # latent endpoints: encode two data samples from different components
    x0 = torch.stack([gm.means[0], gm.means[1]]) + 0.05 * torch.randn(2, 2, generator=gen, dtype=DT)
    u = pf_ode_path(D, x0, grid.flip(0))[-1]
    with torch.no_grad():
        ab = _decode(D, u, grid)
    a, b = ab[0], ab[1]
    Bm = torch.as_tensor(spline_basis(n_points, n_nodes), dtype=DT)
    s = torch.linspace(0, 1, n_points, dtype=DT)[:, None]
    line = (1 - s) * u[0] + s * u[1]
    C = torch.zeros(n_nodes, 2, dtype=DT, requires_grad=True)
    opt = torch.optim.Adam([C], lr=lr * float(torch.linalg.norm(u[1] - u[0])))
    hist = []

    def energy(C):
        xs = _decode(D, line + Bm @ C, grid)
        return 0.5 * (n_points - 1) * ((xs[1:] - xs[:-1]) ** 2).sum(), xs

    for _ in range(steps):
        opt.zero_grad()
        E, _ = energy(C)
        E.backward()
        opt.step()
        hist.append(float(E.detach()))
    with torch.no_grad():
        E_opt, xs_opt = energy(C)
        E_line, xs_line = energy(torch.zeros_like(C))

    def dev(xs):  # max distance from the segment [a, b], relative to |a - b|
        d = b - a
        t = ((xs - a) @ d / (d @ d)).clamp(0, 1)
        return float(((xs - a - t[:, None] * d).norm(dim=1)).max() / d.norm())

    target = 0.5 * float(((b - a) ** 2).sum())
    res = {"segment_energy": target, "optimised_energy": float(E_opt), "latent_line_energy": float(E_line),
           "optimised_rel_deviation": dev(xs_opt), "latent_line_rel_deviation": dev(xs_line),
           "energy_history": hist[:: max(1, len(hist) // 50)]}
    fig, ax = plt.subplots(1, 2, figsize=(9, 4))
    xx, yy = np.meshgrid(np.linspace(-2.2, 2.2, 120), np.linspace(-1.2, 2.8, 120))
    pts = torch.as_tensor(np.stack([xx.ravel(), yy.ravel()], 1), dtype=DT)
    ax[0].contourf(xx, yy, np.exp(gm.log_prob(pts, 0.05).numpy()).reshape(xx.shape), levels=20, cmap="Greys")
    ax[0].plot(xs_line[:, 0], xs_line[:, 1], "b.-", label=f"decoded straight latent line (E={float(E_line):.2f})")
    ax[0].plot(xs_opt[:, 0], xs_opt[:, 1], "r.-", label=f"decoded pullback geodesic (E={float(E_opt):.2f})")
    ax[0].plot([a[0], b[0]], [a[1], b[1]], "k--", lw=1, label=f"segment |a-b|²/2={target:.2f}")
    ax[0].legend(fontsize=7)
    ax[0].set_title("data space")
    ax[1].plot(hist)
    ax[1].axhline(target, color="k", ls="--")
    ax[1].set_xlabel("Adam step")
    ax[1].set_ylabel("pullback energy")
    ax[1].set_title("energy → |a-b|²/2 (a straight segment)")
    return _finish(out, "pullback", res, fig)


def fisher_rao_collapse_demo(out: Optional[PathLike] = None, sigmas_T=None, n_pairs: int = 16, n_points: int = 24,
                             seed: int = 0) -> Dict:
    """Negative result (ii): the Fisher-Rao geometry of ``p(x0 | x_T)`` over ``x_T`` at a fixed ``sigma_T`` collapses.

    For each ``sigma_T``: ``n_pairs`` pairs ``x_T ~ p_{sigma_T}``; the Fisher-Rao length of the straight segment
    between them at constant ``sigma_T`` (exact divergence), and the metric trace ``E tr G = E tr Cov[x0|x_T] /
    sigma_T^4``. Returns both per ``sigma_T`` and the log-log slope of the mean length over the upper half of the grid
    (about -1: distances vanish as ``1/sigma_T``).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gm = mixture_2d()
    D = gm.as_denoiser()
    sigmas_T = np.geomspace(0.3, 80.0, 10) if sigmas_T is None else np.asarray(sigmas_T, dtype=float)
    gen = torch.Generator().manual_seed(seed)
    lengths, traces = [], []
    s = torch.linspace(0, 1, n_points, dtype=DT)
    for sT in sigmas_T:
        x0 = gm.sample(2 * n_pairs, gen)
        xT = x0 + sT * torch.randn(x0.shape, generator=gen, dtype=DT)
        xa, xb = xT[:n_pairs], xT[n_pairs:]
        xs = (1 - s)[None, :, None] * xa[:, None] + s[None, :, None] * xb[:, None]  # [P, N, 2]
        sg = torch.full((n_pairs, n_points), float(sT), dtype=DT)
        L = curve_length(D, xs, sg, n_probes=None)
        cov = gm.posterior_cov(xT, float(sT))
        traces.append(float(torch.diagonal(cov, dim1=-2, dim2=-1).sum(-1).mean() / sT ** 4))
        lengths.append(float(L.mean()))
    half = len(sigmas_T) // 2
    slope = float(np.polyfit(np.log(sigmas_T[half:]), np.log(lengths[half:]), 1)[0])
    res = {"sigma_T": [float(v) for v in sigmas_T], "mean_length": lengths, "metric_trace": traces,
           "loglog_slope_upper_half": slope}
    fig, ax = plt.subplots(1, 1, figsize=(5.5, 4))
    ax.loglog(sigmas_T, lengths, "o-", label="mean Fisher-Rao length between x_T pairs")
    ax.loglog(sigmas_T, traces, "s-", label="E tr G(x_T) = E tr Cov[x0|x_T] / σ_T⁴")
    ax.set_xlabel("σ_T")
    ax.set_title(f"Fisher-Rao metric at x_T alone collapses (slope {slope:.2f})")
    ax.legend(fontsize=7)
    return _finish(out, "fisher_rao_collapse", res, fig)
