"""The three Fisher toys of REFERENCE.md §2, run end to end: data-space vs latent-space FIR deviation ``D_R``.

Each toy pairs a data law with a latent law (what an encoder with one specific defect would produce), estimates the
FIR of both with :func:`latentgeo.fisher.fisher_curves` from denoisers, and plots ``D_R(sigma)`` against the exact
curves of :mod:`latentgeo.fisher._closed_forms`:

- ``compression``: ``N(0, I_2)`` isometrically in R^D (data) vs in R^d (latent); reference line ``(D-d)/(D-2)``.
- ``tangential``: ``N(0, I_2)`` vs ``A x`` with ``A = diag(sqrt(1+delta0), sqrt(1-delta0))``; exact small-tau value
  ``(3 delta0^2 - delta0^4)/(1 - delta0^2)^2`` AND the paper's ``1.25 delta0`` line (not derivable; shown as is).
- ``curvature``: flat plane vs ripple ``(y1, y2, eps0 sin(omega y1))`` in R^3; ``sup D_R ~ 0.17 (eps0 omega)^2``.

``denoisers="exact"`` uses the exact oracles (seconds); ``"trained"`` fits small EDM MLP denoisers with
:func:`latentgeo.diffusion.fit_denoiser` on samples of each law (what a user would do), one per law.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

import torch

from latentgeo.errors import LatentgeoError, check_choice
from latentgeo.fisher import _closed_forms as cf
from latentgeo.fisher.curves import _save_fig, fir_deviation, fisher_curves

__all__ = ["TOYS", "toy_laws", "run_toy"]

TOYS = ("compression", "tangential", "curvature")
_DEFAULT_PARAMS = {"compression": [4, 8, 12], "tangential": [0.1, 0.2, 0.3, 0.5], "curvature": [0.05, 0.1, 0.2]}
_F64 = torch.float64


def _embedded(dim: int, D_frame_seed: int = 0):
    """Exact mixture oracle of N(0, I_2) in R^dim (a fixed random orthonormal frame)."""
    from latentgeo.fisher.exact import GaussianMixture

    g = torch.Generator().manual_seed(1000 + D_frame_seed + dim)
    U = torch.linalg.qr(torch.randn(dim, 2, generator=g, dtype=_F64))[0]
    return GaussianMixture(torch.ones(1), torch.zeros(1, dim, dtype=_F64), (U @ U.T)[None])


def _diag_gauss(var):
    from latentgeo.fisher.exact import GaussianMixture

    v = torch.as_tensor(var, dtype=_F64)
    return GaussianMixture(torch.ones(1), torch.zeros(1, v.numel(), dtype=_F64), torch.diag(v)[None])


def toy_laws(name: str, param: float, D: int = 16, omega: float = 5.0):
    """``(data_oracle, latent_oracle, exact_dr)`` for one toy setting.

    Oracles have ``.sample(m, generator)`` and are exact denoisers (``as_denoiser()`` for mixtures, callable for
    the ripple); ``exact_dr(tau)`` is the exact D_R curve (None for the ripple, whose exact curve is computed by
    :func:`latentgeo.fisher._closed_forms.ripple_fisher_reference`).
    """
    check_choice(name, TOYS, "toy")
    if name == "compression":
        d = int(param)
        if not 2 <= d <= D:
            raise LatentgeoError(f"latent dimension d={d} must lie in [2, D={D}]; pass an integer d in that range")
        return _embedded(D), _embedded(d), (lambda tau: cf.compression_dr(D, d, tau))
    if name == "tangential":
        delta = float(param)
        if not -1 < delta < 1:
            raise LatentgeoError(f"delta0={delta} must lie strictly between -1 and 1; pass e.g. 0.5")
        return _diag_gauss([1.0, 1.0]), _diag_gauss([1 + delta, 1 - delta]), (lambda tau: cf.tangential_dr(delta, tau))
    return cf.RippleDenoiser(0.0, omega, n_quad=401), cf.RippleDenoiser(float(param), omega, n_quad=401), None


def _check_settings(name: str, params, *, n_eval, n_probes, n_train, steps, D, omega, trained: bool) -> None:
    """Refuse settings that would fail (or mean nothing) only after the first denoiser is fitted."""
    def pos_int(v, what, lo):
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise LatentgeoError(f"{what} must be an integer >= {lo}, got {v!r}; pass a whole number of at least {lo}")

    pos_int(n_eval, "n_eval", 2)
    pos_int(n_probes, "n_probes", 1)
    if trained:
        pos_int(n_train, "n_train", 2)
        pos_int(steps, "steps", 1)
    if name == "compression":
        pos_int(D, "D", 3)
    if name == "curvature" and not (isinstance(omega, (int, float)) and math.isfinite(omega) and omega > 0):
        raise LatentgeoError(f"omega must be a positive finite number, got {omega!r}; pass e.g. omega=5 (the default)")
    for p in params:
        try:
            v = float(p)
        except (TypeError, ValueError):
            raise LatentgeoError(f"toy parameter {p!r} is not a number; pass numbers") from None
        if not math.isfinite(v):
            raise LatentgeoError(f"toy parameter {p!r} is not finite; pass finite numbers")
        if name == "compression" and (v != int(v) or not 2 <= int(v) <= D):
            raise LatentgeoError(f"latent dimension d={p!r} must be an integer in [2, D={D}]; "
                                 "pass whole numbers in that range")
        if name == "tangential" and not -1 < v < 1:
            raise LatentgeoError(f"delta0={v:g} must lie strictly between -1 and 1; pass values such as 0.5")


def _denoiser_of(oracle):
    return oracle.as_denoiser() if hasattr(oracle, "as_denoiser") else oracle


def _sample(oracle, m, seed):
    return oracle.sample(m, torch.Generator().manual_seed(seed)).to(_F64)


def run_toy(name: str, out: Optional[str] = None, params: Optional[Sequence[float]] = None,
            denoisers: str = "exact", sigmas: Optional[Sequence[float]] = None, n_eval: int = 1000,
            n_probes: int = 8, n_train: int = 4000, steps: int = 1500, D: int = 16, omega: float = 5.0,
            seed: int = 0, net_kwargs: Optional[Dict[str, Any]] = None, progress: bool = False,
            device: str = "cpu") -> Dict[str, Any]:
    """Run one toy; write ``toy_<name>.json`` and two PNG plots to ``out`` (if given). Returns the result dict.

    Args:
        name: ``compression`` | ``tangential`` | ``curvature``.
        params: the swept parameter (d values / delta0 values / eps0 values); defaults per toy.
        denoisers: ``exact`` (oracles) or ``trained`` (EDM MLPs fitted on ``n_train`` samples for ``steps`` steps).
        sigmas: noise levels (default 16 log-spaced in [0.01, 10] for exact, [0.02, 10] for trained).
        device: where the trained denoisers are fitted and evaluated (the exact oracles run on the CPU).

    Every setting is checked before any denoiser is fitted (one-line :class:`LatentgeoError`).
    """
    check_choice(name, TOYS, "toy")
    check_choice(denoisers, ("exact", "trained"), "denoisers")
    params = list(params) if params is not None else list(_DEFAULT_PARAMS[name])
    if not params:
        raise LatentgeoError("params is empty; pass at least one swept value")
    _check_settings(name, params, n_eval=n_eval, n_probes=n_probes, n_train=n_train, steps=steps, D=D, omega=omega,
                    trained=denoisers == "trained")
    lo = 0.01 if denoisers == "exact" else 0.02
    sig = torch.as_tensor(sigmas if sigmas is not None else torch.logspace(math.log10(lo), 1, 16), dtype=_F64)
    if sig.ndim != 1 or sig.numel() == 0 or not bool(torch.isfinite(sig).all()) or bool((sig <= 0).any()):
        raise LatentgeoError(f"sigmas must be a non-empty list of positive finite noise levels, got {sigmas!r}; "
                             "pass e.g. [0.01, 0.1, 1, 10], or None for the default grid")
    net_kwargs = net_kwargs or {"hidden": 128, "depth": 2}
    dev = torch.device("cpu" if denoisers == "exact" else device)

    def get_den(oracle, tag):
        if denoisers == "exact":
            return _denoiser_of(oracle)
        from latentgeo.diffusion import fit_denoiser

        x = _sample(oracle, n_train, seed + 1).float()
        if progress:
            print(f"[toy {name}] training denoiser for {tag} on {tuple(x.shape)} for {steps} steps", flush=True)
        return fit_denoiser(x, steps=steps, batch_size=256, net_kwargs=net_kwargs, seed=seed, device=str(dev))

    def curves(oracle, tag):
        den = get_den(oracle, tag)
        x0 = _sample(oracle, n_eval, seed + 2)
        if denoisers == "trained":
            p = next(den.parameters(), None) if isinstance(den, torch.nn.Module) else None
            x0 = x0.to(p.device if p is not None else dev)
        dt = _F64 if denoisers == "exact" else torch.float32
        return fisher_curves(den, x0, sig, n_probes=n_probes, generator=torch.Generator().manual_seed(seed + 3),
                             dtype=dt, label=tag)

    data_oracle = toy_laws(name, params[0], D, omega)[0]
    data_tag = {"compression": f"data R^{D}", "tangential": "data N(0,I2)", "curvature": "flat plane in R^3"}[name]
    data_curves = curves(data_oracle, data_tag)
    rows = []
    for p in params:
        _, lat, exact_dr = toy_laws(name, p, D, omega)
        tag = {"compression": f"latent d={int(p)}", "tangential": f"delta0={p}", "curvature": f"eps0={p}"}[name]
        lc = curves(lat, tag)
        dev = fir_deviation(data_curves, lc)
        if exact_dr is not None:
            exact = exact_dr(sig ** 2)
        else:  # ripple: deterministic quadrature with exact Hessians; the flat plane is closed form
            exact = []
            for s in sig.tolist():
                r0 = float(cf.plane_fir(s * s))
                exact.append(abs(cf.ripple_fir(p, omega, s, n_y=120, n_noise=10) - r0) / abs(r0))
            exact = torch.tensor(exact, dtype=_F64)
        row = {"param": p, "label": tag, "d_r": dev.d_r.tolist(), "d_r_se": dev.d_r_se.tolist(),
               "d_i": dev.d_i.tolist(), "exact_d_r": exact.tolist(), "latent_curves": lc.to_dict()}
        if name == "compression":
            row["reference_line"] = cf.compression_dr_small_tau(D, int(p))
        elif name == "tangential":
            row["exact_small_tau"] = cf.tangential_dr_small_tau(p)
            row["paper_line_1.25_delta0"] = 1.25 * p
        else:
            row["reference_0.17_eps_omega_sq"] = 0.17 * (p * omega) ** 2
            row["sup_d_r"] = float(dev.d_r.max())
            row["sigma_at_sup"] = float(sig[int(dev.d_r.argmax())])
        rows.append(row)
    result = {"toy": name, "denoisers": denoisers, "sigma": sig.tolist(), "D": D, "omega": omega,
              "data_curves": data_curves.to_dict(), "rows": rows,
              "settings": {"n_eval": n_eval, "n_probes": n_probes, "n_train": n_train, "steps": steps,
                           "seed": seed, "net_kwargs": net_kwargs}}
    if out is not None:
        from latentgeo.checkpoint import atomic_write_json

        outp = Path(out)
        outp.mkdir(parents=True, exist_ok=True)
        atomic_write_json(outp / f"toy_{name}.json", result)
        _plot_toy(result, outp)
    return result


def _plot_toy(res: Dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    name = res["toy"]
    s = res["sigma"]
    fig, ax = plt.subplots(figsize=(6, 4.2))
    for row in res["rows"]:
        eb = ax.errorbar(s, row["d_r"], yerr=[2 * v for v in row["d_r_se"]], fmt="o", ms=3, capsize=2,
                         label=f"{row['label']} ({res['denoisers']}, +-2 SE)")
        ln = eb.lines[0]
        ax.plot(s, row["exact_d_r"], "-", color=ln.get_color(), lw=1)
        if name == "compression":
            ax.axhline(row["reference_line"], color=ln.get_color(), ls=":", lw=1)
        if name == "tangential":
            ax.axhline(row["paper_line_1.25_delta0"], color=ln.get_color(), ls="--", lw=1)
    ax.set_xscale("log")
    ax.set(xlabel="sigma", ylabel="D_R = |R_data - R_latent| / |R_data|")
    ax.set_title(f"{name} toy: markers estimated, lines exact"
                 + {"compression": "\ndotted: (D-d)/(D-2)", "tangential": "\ndashed: paper line 1.25 delta0",
                    "curvature": ""}[name], fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    _save_fig(fig, out / f"toy_{name}_dr_vs_sigma.png")

    fig, ax = plt.subplots(figsize=(5, 4))
    ps = [r["param"] for r in res["rows"]]
    if name == "compression":
        D = res["D"]
        est = [r["d_r"][0] for r in res["rows"]]
        dd = torch.linspace(2, D, 50)
        ax.plot(dd, (D - dd) / (D - 2), "k-", label="(D-d)/(D-2)")
        ax.plot(ps, est, "o", label=f"estimated at sigma={s[0]:.3g}")
        ax.set(xlabel=f"latent dimension d (D={D})", ylabel="D_R at small sigma")
    elif name == "tangential":
        dl = torch.linspace(0, max(ps) * 1.1, 60)
        ax.plot(dl, (3 * dl ** 2 - dl ** 4) / (1 - dl ** 2) ** 2, "k-", label="exact (3d^2-d^4)/(1-d^2)^2")
        ax.plot(dl, 1.25 * dl, "k--", label="paper line 1.25 delta0")
        ax.plot(ps, [r["d_r"][0] for r in res["rows"]], "o", label=f"estimated at sigma={s[0]:.3g}")
        ax.set(xlabel="delta0", ylabel="D_R at small sigma")
    else:
        om = res["omega"]
        x = [(p * om) ** 2 for p in ps]
        ax.plot(x, [r["sup_d_r"] for r in res["rows"]], "o", label="estimated sup_sigma D_R")
        ax.plot(x, [max(r["exact_d_r"]) for r in res["rows"]], "s", mfc="none", label="exact (quadrature)")
        xx = torch.linspace(0, max(x) * 1.1, 20)
        ax.plot(xx, 0.17 * xx, "k-", label="0.17 (eps0 omega)^2")
        ax.set(xlabel="(eps0 omega)^2", ylabel="sup over sigma of D_R")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    _save_fig(fig, out / f"toy_{name}_summary.png")
