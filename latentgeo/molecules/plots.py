"""Plots of transition paths over an energy surface (PNG bytes, written atomically by the caller)."""
from __future__ import annotations

import io
from typing import Optional, Sequence

import numpy as np

__all__ = ["surface_grid", "plot_paths", "plot_best_curves"]


def surface_grid(potential, n: int = 200):
    """``(xs [a], ys [b], U [a, b])`` to draw: the table itself for alanine, an ``n x n`` grid otherwise."""
    if hasattr(potential, "table"):
        return potential.phi, potential.psi, potential.table
    return potential.grid(n)


def _segments(path: np.ndarray, period: Optional[float]):
    """Split a wrapped path where it jumps across the periodic boundary (so no line crosses the whole plot)."""
    if period is None:
        return [path]
    jumps = np.where(np.abs(np.diff(path, axis=0)).max(-1) > period / 2)[0]
    return np.split(path, jumps + 1)


def plot_paths(potential, paths: np.ndarray, geodesics: Sequence = (), labels: Sequence[str] = (),
               title: str = "", max_paths: int = 60, vmax: Optional[float] = None, extra_paths=(),
               extra_labels: Sequence[str] = (), marks=()) -> bytes:
    """Draw up to ``max_paths`` paths ``[P, T, 2]`` over the potential's surface; returns PNG bytes.

    Args:
        geodesics: curves ``[N, 2]`` drawn as thick lines (with ``labels``).
        extra_paths / extra_labels: other reference curves (e.g. the string-method path), dashed.
        marks: ``((x, y), label)`` points to mark (e.g. a forbidden state).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs, ys, u = surface_grid(potential)
    period = potential.period
    wrap = potential.wrap
    fig, ax = plt.subplots(figsize=(6.2, 5.2), dpi=110)
    vmax = vmax if vmax is not None else float(np.percentile(u, 60))
    cs = ax.contourf(xs, ys, np.minimum(u, vmax).T, levels=30, cmap="viridis")
    fig.colorbar(cs, ax=ax, label="energy (kT)")
    P = min(max_paths, len(paths))
    for p in np.asarray(paths)[:P]:
        for seg in _segments(np.asarray(wrap(p)), period):
            ax.plot(seg[:, 0], seg[:, 1], color="white", lw=0.5, alpha=0.35)
    colours = ["red", "orange", "magenta", "cyan"]
    for k, g in enumerate(geodesics):
        g = np.asarray(g)
        for j, seg in enumerate(_segments(np.asarray(wrap(g)), period)):
            ax.plot(seg[:, 0], seg[:, 1], color=colours[k % 4], lw=2,
                    label=(labels[k] if k < len(labels) else None) if j == 0 else None)
    for k, g in enumerate(extra_paths):
        for j, seg in enumerate(_segments(np.asarray(wrap(np.asarray(g))), period)):
            ax.plot(seg[:, 0], seg[:, 1], color="black", lw=1.5, ls="--",
                    label=(extra_labels[k] if k < len(extra_labels) else None) if j == 0 else None)
    for (pt, lab) in marks:
        ax.plot([pt[0]], [pt[1]], marker="x", color="red", ms=12, mew=3, ls="none", label=lab)
    ax.set_xlim(xs[0], xs[-1])
    ax.set_ylim(ys[0], ys[-1])
    if period is not None:
        ax.set_xlabel("phi (rad)")
        ax.set_ylabel("psi (rad)")
    else:
        ax.set_xlabel("x")
        ax.set_ylabel("y")
    ax.set_title(title, fontsize=9)
    if geodesics or extra_paths or marks:
        ax.legend(fontsize=7, loc="lower left")
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def plot_best_curves(curves, title: str = "", lower_bound: Optional[float] = None, points=()) -> bytes:
    """Best path's MaxEnergy against energy-gradient evaluations, one step curve per method; returns PNG bytes.

    Args:
        curves: ``{label: {"evaluations": [...], "best_max_energy": [...]}}`` (:func:`latentgeo.molecules.metrics.
            best_so_far`); each curve is drawn as a step function to its last point.
        lower_bound: a horizontal line (the grid minimax bound).
        points: ``((evaluations, energy, label), ...)`` single markers (e.g. the string method).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.2, 4.2), dpi=110)
    for k, (lab, c) in enumerate(curves.items()):
        ev, be = list(c.get("evaluations", [])), list(c.get("best_max_energy", []))
        if not ev:
            continue
        ax.step(ev, be, where="post", lw=1.8, label=lab)
        ax.plot([ev[-1]], [be[-1]], marker="o", ms=4, color=ax.lines[-1].get_color())
    for (e, v, lab) in points:
        ax.plot([max(e, 1)], [v], marker="s", ls="none", ms=6, label=lab)
    if lower_bound is not None:
        ax.axhline(lower_bound, color="black", lw=1, ls=":", label=f"grid minimax bound {lower_bound:.2f}")
    ax.set_xscale("log")
    ax.set_xlabel("energy-gradient evaluations (cumulative)")
    ax.set_ylabel("MaxEnergy of the best path so far (kT)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()
