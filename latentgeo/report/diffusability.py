"""The diffusability report: ``report.html`` from the summary of :func:`latentgeo.fisher.diagnosis.diagnose`.

One section per family of diagnostics, each a table with one row per encoder (a value and its standard error shown
as ``v ± se`` where the summary has ``<name>_se`` or ``se``), the plots ``diagnose`` wrote next to the summary, and
the plain-language verdict first. Product layer: it only reads the summary and the PNG files.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from latentgeo.report.html import Report, _fmt

__all__ = ["write_diagnosis_report", "SECTIONS"]

#: (title, summary key of the encoder entry, explanation) in report order
SECTIONS: Tuple[Tuple[str, str, str], ...] = (
    ("Encoder penalties: tangential distortion", "tangential",
     "How far the encoder's pull-back metric on the data tangent space is from a (conformal) isometry: anisotropy 0 "
     "for a map that stretches every data direction equally, distortion 0 for a local isometry of the normalised "
     "spaces. Means over data samples with their standard errors."),
    ("Encoder penalties: curvature", "curvature_at_scale",
     "Second derivative of the encoder along data tangents per squared stretch (relative normal curvature: the part "
     "that bends the data manifold), measured by central differences at the data's nearest-neighbour scale."),
    ("Encoder penalties: exact curvature", "curvature",
     "The same with the exact second derivative (forward-over-forward JVP): 0 for a linear encoder, and ~0 for "
     "piecewise-linear (ReLU) nets, whose bending sits in their kinks."),
    ("Intrinsic curvature: data and latent manifolds", "latent_manifold_curvature",
     "RMS normal curvature of the sample set's manifold (local quadratic fits to the neighbours; 1/R on a sphere of "
     "radius R), in normalised units; kappa h is the bending across one neighbourhood. The data's own value is the "
     "intrinsic data curvature penalty (present even for a perfect isometry); a latent set more curved than the data "
     "(ratio > 1) carries curvature the encoder added."),
    ("Encoder penalties: dimensional compression", "compression",
     "What compressing D data dimensions to d latent dimensions alone does to the FIR deviation (closed form)."),
    ("Spectra: DCT band energies", "spectrum",
     "Per-band energy of the orthonormal DCT (mean-free, normalised to sum 1) of the images and of image-shaped "
     "latents, and the band-energy divergence between them; vector latents have no spatial spectrum."),
    ("Equivariance", "equivariance",
     "Relative error |E(T x) - T E(x)| / |T E(x)| for 2x2 down-sampling (scale), horizontal / vertical flips and "
     "rotation by 90 degrees; only for image-shaped latents."),
    ("Latent statistics", "latent_stats",
     "Per-channel spread of the latents, the scaling factor a latent diffusion model applies (1 / global std) and the "
     "effective dimension (participation ratio of the covariance spectrum)."),
    ("Geometry: neighbourhoods and distances", "neighbourhood",
     "Trustworthiness (no false latent neighbours) and continuity (no lost data neighbours), Spearman correlation of "
     "pairwise distances, and the overlap of k-nearest-neighbour sets, with standard errors."),
    ("Reconstruction", "reconstruction",
     "Decoder reconstructions of the data: MSE, PSNR and SSIM (encoders without a decoder have none)."),
    ("Generation side: decoded neighbour interpolations", "interpolation",
     "For each held-out latent, one of its 10 nearest latents by cosine (drawn with probability softmax(-MSE)) is "
     "slerped with it at alpha, decoded, and the decoded set compared with other held-out images: Frechet distance "
     "(FD), k-NN precision and recall in the feature space named below; 'fd minus recon' removes the decoder's own "
     "FD(recon). The iFID recipe (arXiv 2603.05630): what a generator's in-between samples will look like. "
     "Standard errors: bootstrap over the decoded samples (FD), binomial (precision / recall)."),
    ("Generation side: decoder noise sensitivity", "noise_sensitivity",
     "FD(decode(z_n + s eps)) - FD(recon) for noise s in units of the normalised latent (per-coordinate RMS 1): how "
     "much a generator's small errors cost once decoded (a brittle decoder turns them into bad images)."),
    ("Class structure of the latent (labels given)", "class_structure",
     "VIV = (pi/2) sum sqrt(lambda) of the within-class latent covariance: the irreducible loss of a class-conditional "
     "flow-matching model (derived in latentgeo.fisher.diffusability.viv; lower = an easier target), per dimension "
     "too; LNC = fraction of the 10 nearest latents sharing the label (1 = classes separate; 'chance' for random "
     "neighbours)."),
    ("Cheap-generator reference", "reference_generator",
     "A small flow-matching model trained briefly on the latents, sampled and decoded: a REFERENCE (what a cheap "
     "generator reaches), not a diagnostic."),
)

#: where the zoo's correlations live (written by benchmarks/diffusability_zoo.py --package-data)
ZOO_VALIDATION = Path(__file__).resolve().parents[1] / "fisher" / "zoo_validation.json"


def zoo_validation(path: Optional[Union[str, Path]] = None) -> Optional[Dict[str, Any]]:
    """The zoo's correlations of each measure with generation quality, or None when the file is absent / unreadable."""
    import json

    p = Path(path) if path is not None else ZOO_VALIDATION
    try:
        d = json.loads(p.read_text())
    except (OSError, ValueError):
        return None
    return d if isinstance(d, dict) and isinstance(d.get("measures"), dict) else None


def _zoo_rows(zoo: Optional[Mapping[str, Any]], key: str) -> List[List[Any]]:
    if not zoo:
        return []
    rows = []
    for m, v in zoo["measures"].items():
        if m.split(".")[0] != key:
            continue
        ci = v.get("ci95") or [None, None]
        wf = v.get("within_family") or {}
        rows.append([m[len(key) + 1:] if "." in m else m, v.get("spearman_fd_gen"),
                     f"[{_fmt(ci[0])}, {_fmt(ci[1])}]",
                     ", ".join(f"{f} {_fmt(r)}" for f, r in wf.items()), v.get("reading")])
    return rows


_ZOO_HEADER = ["measure", "Spearman with FD(gen) on the zoo", "95% CI", "within family", "reading"]


def _scalars(d: Any, prefix: str = "") -> Dict[str, Any]:
    """Scalar leaves of a nested dict as ``{dotted.name: value}`` (lists and strings left out)."""
    out: Dict[str, Any] = {}
    if not isinstance(d, Mapping):
        return out
    for k, v in d.items():
        name = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_scalars(v, name + "."))
        elif isinstance(v, bool) or v is None:
            continue
        elif isinstance(v, (int, float)):
            out[name] = v
    return out


def _se_of(name: str, vals: Mapping[str, Any]) -> Optional[float]:
    """The standard error stored for ``name``: ``name_se``, or ``<parent>.se`` for ``<parent>.error`` style."""
    for cand in (f"{name}_se", name.rsplit(".", 1)[0] + ".se" if "." in name else None,
                 "se" if name in ("divergence", "error") else None):
        if cand and cand in vals and isinstance(vals[cand], (int, float)):
            return float(vals[cand])
    return None


def _is_se(name: str) -> bool:
    leaf = name.rsplit(".", 1)[-1]
    return leaf == "se" or leaf.endswith("_se")


def _cell(v: Any, se: Optional[float]) -> str:
    if se is None or not isinstance(v, float) or not math.isfinite(se):
        return _fmt(v)
    return f"{_fmt(v)} ± {_fmt(float(se))}"


def _family_table(rep: Report, encoders: Mapping[str, Any], key: str, max_cols: int = 9) -> bool:
    """A table of one family of diagnostics (rows: encoders); False when no encoder has a number for it."""
    per = {n: _scalars(e.get(key)) for n, e in encoders.items()}
    cols: List[str] = []
    for vals in per.values():
        for c in vals:
            if c not in cols and not _is_se(c) and c not in ("k", "n", "dim") and not c.endswith(".n"):
                cols.append(c)
    if not cols:
        return False
    for i in range(0, len(cols), max_cols):  # wide families wrap into several tables
        part = cols[i:i + max_cols]
        rows = [[n] + [_cell(vals.get(c), _se_of(c, vals)) if c in vals else "" for c in part]
                for n, vals in per.items()]
        rep.table(rows, header=["encoder"] + [c.replace("_", " ") for c in part])
    return True


def _figure(rep: Report, out: Path, name: str, caption: str) -> None:
    p = out / name
    if p.is_file():
        rep.figure(p, caption)


def write_diagnosis_report(out: Union[str, Path], summary: Optional[Mapping[str, Any]] = None,
                           path: Optional[Union[str, Path]] = None) -> Path:
    """Write ``report.html`` (self-contained) for a ``diagnose`` run.

    Args:
        out: the run's output folder (holds ``summary.json`` and the PNGs ``diagnose`` wrote).
        summary: the summary dict (default: read ``out/summary.json``).
        path: where to write (default ``out/report.html``).
    Returns:
        the path written.
    """
    out = Path(out)
    if summary is None:
        from latentgeo.runfolder import read_json

        summary = read_json(out / "summary.json", want_object=True, fix="re-run `latentgeo diagnose`")
    enc: Mapping[str, Any] = summary.get("encoders", {})
    ranking: Sequence[str] = summary.get("ranking") or list(enc)
    rep = Report("How diffusable is each latent space?",
                 subtitle=f"latentgeo diagnose on {summary.get('data', 'data')} "
                          f"{tuple(summary.get('data_shape', ()))}, {summary.get('n_train', '?')} samples; "
                          f"{len(enc)} encoder(s)")
    verdict = summary.get("verdict", {})
    rep.section("Verdict", verdict.get("summary", ""))
    rows = []
    for i, n in enumerate(ranking, 1):
        e = enc[n]
        rows.append([i, n, e.get("score"), e.get("latent_dim"), e.get("d_r_median_mid"),
                     (e.get("timing_s") or {}).get("total")])
    rep.table(rows, header=["rank", "encoder", "score (higher = more diffusable)", "latent dim",
                            "median D_R, sigma in [0.05, 5]", "CPU s"])
    feats = {n: e.get("features") or {} for n, e in enc.items()}
    fcols = sorted({c for f in feats.values() for c, v in f.items() if isinstance(v, (int, float))})
    if fcols:
        rep.text("The score's features (each a 'badness': higher = worse) and the weights used: "
                 + ", ".join(f"{c} {_fmt(w)}" for c, w in (summary.get("score", {}).get("weights") or {}).items())
                 + ".")
        rep.table([[n] + [feats[n].get(c) for c in fcols] for n in ranking], header=["encoder"] + fcols)
    for line in verdict.get("details", []):
        rep.text(line)

    rep.section("Fisher information along the noise schedule")
    if summary.get("fisher", True) and any(enc[n].get("d_r") for n in enc):
        rep.text("Fisher information I and its rate R of the normalised data and of each normalised latent set "
                 "(Hutchinson estimates from the denoisers), and the deviations D_R = |R_pix - R_lat| / |R_pix| and "
                 "D_I per noise level. Dotted / dashed lines: what dimensional compression alone predicts.")
        _figure(rep, out, "fisher_curves.png", "Fisher information and its rate: pixels vs latents")
        _figure(rep, out, "deviation.png", "FIR and FI deviation from pixel space")
        rep.table([[n, enc[n].get("d_r_small_sigma"), _cell(enc[n].get("d_r_median_mid"),
                                                             enc[n].get("d_r_se_median_mid")),
                    enc[n].get("d_i_median_mid")] for n in ranking],
                  header=["encoder", "D_R at smallest sigma", "median D_R (mid)", "median D_I (mid)"])
    else:
        rep.note("The Fisher part was skipped (diagnose with fisher=False / --no-fisher): no denoisers were trained.")

    zoo = zoo_validation()
    rep.section("Which numbers to trust",
                "How well each measure predicted generation quality (FD of a flow-matching generator's decoded "
                "samples, averaged over training and sampling seeds) on latentgeo's diffusability zoo: Spearman "
                "correlation with a 95% bootstrap interval, pooled and within each family (A spatial conv "
                "autoencoders, B exact-decoder transforms, C vector latents). 'predictive': the interval stays beyond "
                "+-0.3; 'weak': it excludes 0 only; 'no evidence': it includes 0. A positive rho means that larger "
                "values went with worse generation.")
    if zoo:
        val = zoo.get("validation") or {}
        if val:
            rep.text(f"Zoo: {val.get('n_encoders')} encoders in {val.get('n_families')} families. Seed ceiling "
                     f"(agreement of two training seeds' ground truths) {_fmt(val.get('seed_ceiling_spearman'))}; "
                     f"the fixed score ({val.get('score')}) reached {_fmt(val.get('pooled_spearman_fd_gen'))} pooled "
                     f"and {_fmt(val.get('held_out_family_spearman_fd_gen'))} on average within a family. "
                     + (zoo.get("scale") or ""))
        allrows = [[m] + r[1:] for m, v in zoo["measures"].items() for r in [_zoo_rows({"measures": {m: v}},
                                                                                      m.split(".")[0])[0]]]
        rep.table(allrows, header=_ZOO_HEADER)
        ctl = zoo.get("controls") or {}
        if ctl:
            rep.text("Controls (exact-decoder transforms of a base encoder; generator FD change vs the fixed score, "
                     "and the measures that moved beyond 2 standard errors, i.e. the ones that detect the change):")
            rep.table([[k, ", ".join(v.get("fd_gen_verdict") or []), ", ".join(v.get("score_verdict") or []),
                        ", ".join(v.get("explained_by") or []) or "none"] for k, v in ctl.items()],
                      header=["transform", "FD(gen) vs base", "score vs base", "measures that moved"])
    else:
        rep.note("No zoo validation data is installed with this latentgeo (latentgeo/fisher/zoo_validation.json); "
                 "run benchmarks/diffusability_zoo.py --package-data.")
    for title, key, text in SECTIONS:
        rep.section(title, text)
        if not _family_table(rep, enc, key):
            rep.note("No encoder has a value here (see the explanation above).")
        zr = _zoo_rows(zoo, key)
        if zr:
            rep.text("How these numbers predicted generation on the zoo:")
            rep.table(zr, header=_ZOO_HEADER)
        if key == "interpolation":
            for n in enc:
                fs = (enc[n].get("interpolation") or {}).get("feature_space")
                if fs:
                    rep.text(f"{n}: features: {fs}.")
        if key == "latent_manifold_curvature" and summary.get("intrinsic_data_curvature"):
            dc = summary["intrinsic_data_curvature"]
            rep.text(f"The data: kappa rms {_cell(dc.get('kappa_rms'), None)}, kappa h "
                     f"{_cell(dc.get('kappa_h'), None)} (k = {dc.get('k')}, "
                     f"{dc.get('n_neighbors')} neighbours).")
        if key == "tangential":
            _figure(rep, out, "penalties.png", "Penalties per encoder (bars: standard errors where measured)")
        if key == "spectrum":
            _figure(rep, out, "spectra.png", "Radially averaged power spectra")
            reasons = {n: (enc[n].get("spectrum") or {}).get("reason") for n in enc}
            for n, r in reasons.items():
                if r:
                    rep.text(f"{n}: {r}")
        if key == "equivariance":
            for n in enc:
                eq = enc[n].get("equivariance") or {}
                why = sorted({v.get("reason") for v in eq.values() if isinstance(v, Mapping) and v.get("reason")})
                if why:
                    rep.text(f"{n}: " + "; ".join(why))

    rep.section("Cost", "CPU seconds of each part of the diagnosis per encoder (process time).")
    tim = {n: enc[n].get("timing_s") or {} for n in enc}
    tcols = sorted({c for t in tim.values() for c in t})
    if tcols:
        rep.table([[n] + [tim[n].get(c) for c in tcols] for n in ranking], header=["encoder"] + tcols)
    st = summary.get("settings")
    if st:
        rep.text("Settings: " + ", ".join(f"{k} {v}" for k, v in st.items()) + ".")
    return rep.write(path if path is not None else out / "report.html")
