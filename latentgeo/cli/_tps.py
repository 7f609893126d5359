"""CLI of the molecules area: ``latentgeo tps alanine|mueller-brown --paths P --out DIR``.

Every option is checked at parse time (:mod:`latentgeo.cli._options`) or at the top of the command, before the
Boltzmann data are generated: a bad setting fails in well under a second, not after training.
"""
from __future__ import annotations

from typing import Optional

import typer

from latentgeo.cli._options import MAX_STEPS, opt_device, opt_float, opt_int, opt_out_dir, opt_seed, valid_floats

#: Paths / curve points beyond these are typos (P x N x K Langevin states are simulated).
MAX_PATHS = 10_000_000
MAX_POINTS = 100_000


def _avoid(text: Optional[str]):
    from latentgeo.errors import LatentgeoError

    if text is None or not str(text).strip():
        return None
    try:
        vals = valid_floats(text, "--avoid", count=3)
    except LatentgeoError as exc:
        raise LatentgeoError(f"{exc}; --avoid is 'x,y,sigma' (three finite numbers), e.g. --avoid -1.5,0.5,0.3") \
            from None
    x, y, s = vals
    if not s > 0:
        raise LatentgeoError(f"--avoid sigma must be positive, got {s:g}; e.g. --avoid -1.5,0.5,0.3")
    return ((x, y), s)


def register(app: typer.Typer, train_app: typer.Typer) -> None:
    """Add ``latentgeo tps`` to the root app."""

    @app.command("tps")
    def tps(
        system: str = typer.Argument(..., help="alanine | mueller-brown | alanine-full (22 atoms, OpenMM; needs "
                                               "the 'molecules' extra)"),
        paths: int = opt_int(1000, "--paths", help="number of transition paths P", lo=1, hi=MAX_PATHS),
        out: str = opt_out_dir(..., "--out", help="output folder (paths.npz, summary.json, paths.png, "
                                                  "convergence.png)"),
        denoiser: str = typer.Option("mlp", "--denoiser", help="mlp (trained here) | kde (training-free)"),
        n_points: Optional[int] = opt_int(None, "--n-points", help="geodesic points N (>= 2; default 128, "
                                          "alanine-full 50)", lo=2, hi=MAX_POINTS),
        k_steps: Optional[int] = opt_int(None, "--k-steps", help="Langevin steps per geodesic point K (>= 1; 64; "
                                         "alanine-full: MD steps per point, 20)", lo=1, hi=MAX_STEPS),
        geo_steps: Optional[int] = opt_int(None, "--geo-steps", help="Adam steps of the geodesic (1000; 0 keeps "
                                                                     "the initial curve)", lo=0, hi=MAX_STEPS),
        train_steps: Optional[int] = opt_int(None, "--train-steps", help="denoiser training steps (>= 1; 3000)",
                                             lo=1, hi=MAX_STEPS),
        snr_penalty: float = opt_float(0.0, "--snr-penalty", help="low-SNR penalty weight (>= 0; REFERENCE: 100)",
                                       lo=0, hi=1e8),
        snr_lambda: float = opt_float(3.0, "--snr-lambda", help="log-SNR the penalty keeps the geodesic above "
                                                                "(REFERENCE: 3)", lo=-50, hi=50),
        avoid: Optional[str] = typer.Option(None, "--avoid", help="forbidden spacetime state 'x,y,sigma' "
                                                                  "(finite, sigma > 0)"),
        avoid_weight: float = opt_float(100.0, "--avoid-weight", help="weight of the region-avoidance penalty "
                                                                      "(>= 0)", lo=0, hi=1e8),
        data_kt: Optional[float] = opt_float(None, "--data-kt", help="temperature of the training-data Langevin "
                                                                     "(> 0; default 1)", lo=0, lo_open=True, hi=1e6),
        scheme: str = typer.Option("em", "--scheme",
                                   help="annealed-Langevin integrator: em (Euler-Maruyama, the paper's) | lm "
                                        "(Leimkuhler-Matthews: same cost, more accurate kT sampling)"),
        quick: bool = typer.Option(False, "--quick", help="tiny settings for a smoke test"),
        no_baselines: bool = typer.Option(False, "--no-baselines", help="skip the string-method baseline"),
        seed: int = opt_seed(),
        compile_geodesic: bool = typer.Option(False, "--compile",
                                              help="fuse each geodesic step with TorchInductor (about 3x faster per "
                                                   "step in 2-D; the first compile of a shape takes up to a minute)"),
        objective: str = typer.Option("abs", "--objective",
                                      help="geodesic objective: abs (sum of |segment KL|, default: better on exact "
                                           "models and alanine) | relu (per-component clamp, as the authors' code)"),
        save_states: bool = typer.Option(False, "--save-states",
                                         help="also store every Langevin state in paths.npz (all_states [P, N*K, 2]; "
                                              "P x N x K x 16 bytes)"),
        device: str = opt_device("cpu", help="device that trains the MLP denoiser: cpu (default) | auto | cuda | "
                                             "cuda:K (the geodesic and the Langevin sampling run on the CPU)"),
        kappa_scale: float = opt_float(1.0, "--kappa-scale", help="alanine-full: restraint stiffness = scale * kT / "
                                       "sigma_n^2 (kJ/mol/nm^2, sigma in nm)", lo=0, lo_open=True, hi=1e6),
        kappa_cap: Optional[float] = opt_float(None, "--kappa-cap", help="alanine-full: largest stiffness in "
                                               "kJ/mol/nm^2 (default 20000; with --anneal constant: the stiffness)",
                                               lo=0, lo_open=True, hi=1e9),
        anneal: str = typer.Option("geodesic", "--anneal", help="alanine-full restraint schedule: geodesic "
                                   "(kT / sigma_n^2 along the curve) | constant (--kappa-cap everywhere)"),
        data_frames: Optional[int] = opt_int(None, "--data-frames", help="alanine-full: MD frames per data run "
                                             "(default 4000)", lo=2, hi=10_000_000),
        data_hot_k: Optional[float] = opt_float(None, "--data-hot-k", help="alanine-full: temperature (K) of the "
                                                "extra data run covering the transition region (default 800; 0 "
                                                "= none)", lo=0, hi=5000),
        timestep_fs: Optional[float] = opt_float(None, "--timestep-fs", help="alanine-full: MD time step in fs "
                                                 "(default 1, the protocol's)", lo=0, lo_open=True, hi=4),
        md_platform: str = typer.Option("Reference", "--platform", help="alanine-full: OpenMM platform, "
                                        "Reference | CPU"),
        log_snr: Optional[float] = opt_float(None, "--log-snr", help="endpoint log-SNR of the geodesic "
                                             "(alanine-full; default 4)", lo=-20, hi=40),
        centres: str = typer.Option("curve", "--centres", help="alanine-full: restraint centres: curve (the "
                                    "geodesic's x_n, the posterior tether) | denoised (D(x_n, sigma_n); the "
                                    "straight line's centres are denoised the same way)"),
        restrain: str = typer.Option("all", "--restrain", help="alanine-full: atoms the restraint acts on: all "
                                     "(the posterior tether) | heavy"),
        reparam: Optional[str] = typer.Option(None, "--reparam", help="alanine-full: restraint centres as the "
                                              "geodesic gives them (none) or resampled at equal data-space arc "
                                              "length, sigma interpolated along (arclength)"),
        kappa_floor: Optional[float] = opt_float(None, "--kappa-floor", help="alanine-full: smallest stiffness "
                                                 "in kJ/mol/nm^2 (kT / sigma_n^2 raised to it mid-curve; default "
                                                 "none)", lo=0, lo_open=True, hi=1e9),
        committor_frames: Optional[int] = opt_int(None, "--committor-frames", help="alanine-full: paths whose "
                                                  "highest-energy frame gets a committor estimate (default 4; 0 "
                                                  "= none)", lo=0, hi=10_000),
    ) -> None:
        """Transition paths through a diffusion model's spacetime: Boltzmann data -> denoiser -> geodesic ->
        annealed Langevin; writes DIR/paths.npz ([P, N, 2] frames, radians in [-pi, pi) for alanine; max_energy
        [P] and max_states [P, 2], the Langevin state attaining each path's MaxEnergy, which re-scores to it
        exactly; all_states [P, N*K, 2] with --save-states), DIR/summary.json (with a `metrics` section for every
        method: MaxEnergy, barrier, target reach, MaxEnergy of the reaching paths, evaluations, the best path's
        MaxEnergy against evaluations), DIR/paths.png and DIR/convergence.png (those curves, sampler vs two-way
        shooting).

        alanine-full (22 atoms, OpenMM, amber99sb-ildn in vacuum): MD data -> denoiser of the aligned coordinates ->
        geodesic -> steered MD in OpenMM (restraint kT / sigma_n^2 towards x_n, --k-steps MD steps per point), plus
        the straight-line and two-way shooting baselines and a committor check; writes DIR/paths.npz (positions
        [P, T, 22, 3] nm, energies [P, T] kJ/mol), paths_straight_line.npz, paths_two_way_shooting.npz,
        topology.pdb, data.npz, summary.json (thp, rmsd_final_angstrom, ets_kj_mol, force_evaluations),
        report.png and report.html."""
        from latentgeo.errors import check_choice
        from latentgeo.molecules.run import SYSTEMS, run_tps
        from latentgeo.molecules.tps import _check_tps_settings

        check_choice(system, tuple(SYSTEMS) + ("alanine-full",), "system")
        if system == "alanine-full":
            _alanine_full(paths=paths, out=out, denoiser=denoiser, n_points=n_points, k_steps=k_steps,
                          geo_steps=geo_steps, train_steps=train_steps, snr_penalty=snr_penalty,
                          snr_lambda=snr_lambda, avoid=avoid, data_kt=data_kt, quick=quick,
                          no_baselines=no_baselines, seed=seed, compile_geodesic=compile_geodesic,
                          objective=objective, save_states=save_states, device=device, kappa_scale=kappa_scale,
                          kappa_cap=kappa_cap, anneal=anneal, data_frames=data_frames, data_hot_k=data_hot_k,
                          timestep_fs=timestep_fs, md_platform=md_platform, log_snr=log_snr,
                          committor_frames=committor_frames, restrain=restrain, centres=centres, scheme=scheme,
                          reparam=reparam, kappa_floor=kappa_floor)
            return
        if log_snr is not None:
            typer.echo("  note: --log-snr is used by alanine-full only", err=True)
        check_choice(denoiser, ("mlp", "kde"), "denoiser")
        check_choice(scheme, ("em", "lm"), "--scheme")
        check_choice(objective, ("abs", "relu"), "--objective")
        av = _avoid(avoid)
        # the run's effective N, K (quick / defaults) for the size check of --save-states, before any work
        n_eff = n_points or (64 if quick else 128)
        k_eff = k_steps or (32 if quick else 64)
        _check_tps_settings(n_paths=paths, n_chains=1, data_steps=1, train_steps=train_steps or 1, n_points=n_eff,
                            n_nodes=1, geo_steps=geo_steps or 0, k_steps=k_eff, denoiser=denoiser, scheme=scheme,
                            save_states=save_states)
        from latentgeo.train.loop import resolve_device

        dev = str(resolve_device(device))
        s = run_tps(system, paths, out, quick=quick, baselines=not no_baselines, snr_penalty=snr_penalty,
                    avoid=av, avoid_weight=avoid_weight, seed=seed,
                    progress=lambda m: typer.echo(f"  {m}", err=True), denoiser=denoiser, n_points=n_points,
                    k_steps=k_steps, geo_steps=geo_steps, train_steps=train_steps, data_kT=data_kt,
                    geo_compile=compile_geodesic, snr_lambda=snr_lambda, scheme=scheme, save_states=save_states,
                    device=dev, geo_objective=objective)
        typer.echo(f"MaxEnergy {s['max_energy_mean']:.2f} +- {s['max_energy_std']:.2f} (lower bound "
                   f"{s['lower_bound']:.2f}); {s['energy_evaluations']:,} gradient evaluations; "
                   f"{s['seconds']:.1f} s; wrote {out}/paths.npz (frames, max_energy, max_states"
                   f"{', all_states' if save_states else ''}), summary.json (metrics), paths.png, convergence.png")
        m = s["metrics"]["methods"]
        for name, label in (("spacetime_geodesic", "spacetime sampler"), ("two_way_shooting", "two-way shooting")):
            if name in m:
                v = m[name]
                etp = "-" if v["max_energy_reached_mean"] is None else f"{v['max_energy_reached_mean']:.2f}"
                typer.echo(f"  {label}: barrier {v['barrier_mean']:.2f} +- {v['barrier_std']:.2f} above the lower "
                           f"state; {100 * v['reached_fraction']:.0f}% reach the target (radius "
                           f"{v['target_radius']:g}), MaxEnergy of those {etp}; {v['n_energy_evals']:,} evaluations")
        eq = s["metrics"]["equal_evaluations"]
        if len(eq.get("at_common_budget", {})) > 1:
            typer.echo("  best path at " + f"{eq['common_budget']:,} evaluations: " + ", ".join(
                f"{k} {'-' if v is None else format(v, '.2f')}" for k, v in eq["at_common_budget"].items()))


def _alanine_full(*, paths, out, denoiser, n_points, k_steps, geo_steps, train_steps, snr_penalty, snr_lambda, avoid,
                  data_kt, quick, no_baselines, seed, compile_geodesic, objective, save_states, device, kappa_scale,
                  kappa_cap, anneal, data_frames, data_hot_k, timestep_fs, md_platform, log_snr,
                  committor_frames, restrain="all", centres="curve", scheme="em", reparam=None,
                  kappa_floor=None) -> None:
    """``latentgeo tps alanine-full``: every setting is checked before OpenMM is imported or any MD runs."""
    from latentgeo.errors import LatentgeoError, check_choice

    for flag, given in (("--denoiser kde", denoiser != "mlp"), ("--avoid", avoid is not None),
                        ("--data-kt", data_kt is not None), ("--compile", compile_geodesic),
                        ("--save-states", save_states), ("--scheme", scheme != "em")):
        if given:
            raise LatentgeoError(f"{flag} does not apply to alanine-full; drop it (alanine-full trains an MLP "
                                 "denoiser and records every MD state in paths.npz)")
    check_choice(anneal, ("geodesic", "constant"), "--anneal")
    check_choice(md_platform, ("Reference", "CPU"), "--platform")
    check_choice(restrain, ("all", "heavy"), "--restrain")
    check_choice(centres, ("curve", "denoised"), "--centres")
    if reparam is not None:
        check_choice(reparam, ("none", "arclength"), "--reparam")
    check_choice(objective, ("abs", "relu"), "--objective")
    if anneal == "constant" and kappa_cap is None:
        raise LatentgeoError("--anneal constant has no stiffness; pass --kappa-cap (the constant stiffness in "
                             "kJ/mol/nm^2)")
    from latentgeo.molecules.alanine_full import ALANINE_FULL_DEFAULTS, QUICK, _check_settings, run_alanine_full

    settings = dict(n_points=n_points, k_steps=k_steps, geo_steps=geo_steps, train_steps=train_steps,
                    snr_penalty=snr_penalty, snr_lambda=snr_lambda, objective=objective, kappa_scale=kappa_scale,
                    kappa_cap=kappa_cap, schedule=anneal, data_frames=data_frames, data_hot_k=data_hot_k,
                    timestep_fs=timestep_fs, platform=md_platform, log_snr=log_snr,
                    committor_frames=committor_frames, restrain=restrain, centres=centres, reparam=reparam,
                    kappa_floor=kappa_floor)
    kw = dict(ALANINE_FULL_DEFAULTS)
    if quick:
        kw.update(QUICK)
    kw.update({k: v for k, v in settings.items() if v is not None})
    _check_settings(paths, kw)
    from latentgeo.molecules.alanine_full import _require
    from latentgeo.train.loop import resolve_device

    _require()
    dev = str(resolve_device(device))
    s = run_alanine_full(paths, out, quick=quick, baselines=not no_baselines, seed=seed, device=dev,
                         progress=lambda m: typer.echo(f"  {m}", err=True), **settings)
    fe = s["force_evaluations"]

    def ms(d, fmt=".2f"):
        return "-" if d["mean"] is None else f"{d['mean']:{fmt}} +- {d['std']:{fmt}}"

    typer.echo(f"alanine-full, {paths} paths: THP {100 * s['thp']:.1f}%, final RMSD {ms(s['rmsd_final_angstrom'])} "
               f"A, ETS {ms(s['ets_kj_mol'], '.1f')} kJ/mol; force evaluations: data {fe['data']:,}, sampling "
               f"{fe['sampling']:,} (+ {fe['scoring']:,} energy evaluations for scoring); {s['seconds']:.1f} s; "
               f"wrote {out}/paths.npz, summary.json, report.html, report.png, topology.pdb")
    for name, m in s["methods"].items():
        if name == "spacetime_geodesic":
            continue
        if "thp" not in m:
            typer.echo(f"  {name}: {m.get('error', 'failed')}")
            continue
        typer.echo(f"  {name}: THP {100 * m['thp']:.1f}%, RMSD {ms(m['rmsd_final_angstrom'])} A, ETS "
                   f"{ms(m['ets_kj_mol'], '.1f')} kJ/mol, {m['force_evaluations']['sampling']:,} MD steps")
