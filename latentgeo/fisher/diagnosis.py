"""``diagnose``: how diffusable is an encoder's latent space, compared with diffusing the pixels, and why.

Pipeline (REFERENCE.md §2):

1. Normalise the data and each encoder's latents the same way: subtract the mean and divide by one global scale so
   that the per-coordinate RMS is 1 (``E|u|^2 = dim``). The FIR depends on scale (``Z = c X`` gives
   ``R_Z(tau) = R_X(tau/c^2)/c^4``), so both sides must be put on the same footing; the summary records the scales.
2. Train (or reuse) an EDM denoiser on the normalised pixels and one on each normalised latent set
   (:func:`latentgeo.diffusion.fit_denoiser`).
3. Estimate FI / FIR curves (:func:`fisher_curves`) and the deviations ``D_R``, ``D_I`` of each latent space from
   pixel space (:func:`fir_deviation`).
4. Measure the encoder penalties on data samples (normalised encoder map, JVPs): dimensional compression, tangential
   distortion and curvature along local-PCA tangents, each with its standard error; radially averaged power spectra
   and DCT band energies of the images and latents with their band-energy divergence; scale / flip / rot90
   equivariance errors (image-shaped latents); latent statistics (per-channel mean / std, the LDM scaling factor,
   effective dimension); neighbourhood preservation (trustworthiness, continuity, distance Spearman, k-NN overlap);
   reconstruction MSE / PSNR / SSIM when a decoder is known (:mod:`latentgeo.fisher.diffusability`).
   Generation side (issue 19, needs a decoder): FD / k-NN precision / recall of decoded neighbour slerps at
   alpha 0.5 and 0.25 (the iFID recipe) and the decoder's noise sensitivity FD(decode(z_n + s eps)) - FD(recon), in
   the feature space of latentgeo's classifier (or ``feature_fn``); with ``labels`` the class structure of the latent
   (VIV, LNC); optionally a cheap-generator reference (``reference_flow_steps``). ``latent_shape`` reshapes flattened
   spatial latents. The report shows beside each measure how well it predicted generation on latentgeo's zoo.
5. One ``score`` per encoder (higher = more diffusable, :func:`latentgeo.fisher.diffusability.diffusability_score`)
   and the ``ranking``; write ``summary.json`` (numbers + a plain-language verdict) and plots. The HTML report is
   built from the summary by :func:`latentgeo.report.diffusability.write_diagnosis_report` (product layer).

``fisher=False`` skips steps 2-3 (the denoiser training, by far the dearest part) and keeps the rest.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Union

import torch

from latentgeo.errors import LatentgeoError, check_finite
from latentgeo.fisher.curves import FisherCurves, _save_fig, default_sigmas, fir_deviation, fisher_curves
from latentgeo.fisher.diffusability import (DEFAULT_WEIGHTS, band_energy_divergence, diffusability_score,
                                            equivariance_errors, feature_frechet, knn_precision_recall,
                                            latent_neighbour_consistency, latent_statistics, neighbour_partners,
                                            neighbourhood_metrics, penalty_error_bars, rank_encoders,
                                            reconstruction_metrics, score_features, slerp, viv)
from latentgeo.fisher.penalties import (curvature_penalty, dimensional_compression, high_frequency_fraction,
                                        intrinsic_curvature, local_pca_dimension, power_spectrum, tangent_basis,
                                        tangential_distortion)

__all__ = ["diagnose", "encoder_function", "normalise"]


def normalise(x: torch.Tensor):
    """``(u, mean, scale)`` with ``u = (x - mean) / scale``, ``mean`` per coordinate, one global ``scale`` such that
    ``E|u|^2 = dim`` (per-coordinate RMS 1)."""
    xd = x.double()
    m = xd.mean(0, keepdim=True)
    sc = float(((xd - m) ** 2).mean().sqrt())
    if not math.isfinite(sc) or sc <= 0:
        raise LatentgeoError("the samples have zero spread; check the data / encoder (constant output?)")
    return ((xd - m) / sc).to(x.dtype), m[0].to(x.dtype), sc


def encoder_function(encoder: Any) -> Callable[[torch.Tensor], torch.Tensor]:
    """A plain ``x -> z`` map for latentgeo Encoders (normalised latents), diffusers AutoencoderKL (posterior mean),
    modules and callables."""
    try:
        from latentgeo.autoencoders import as_encoder_fn

        return as_encoder_fn(encoder, raw=False)
    except ImportError:  # autoencoders area missing: plain callables still work
        if isinstance(encoder, torch.nn.Module):
            encoder.eval()
        return encoder


def _load_encoder(spec: Any):
    """``(encoder, decoder or None)`` from a spec :func:`latentgeo.resolve.resolve_encoder` takes (a latentgeo
    autoencoder run, a diffusers VAE / pipeline folder, a TorchScript file, its JSON dict), or an object as it is
    (a diffusers ``AutoencoderKL`` object brings its own ``decode``)."""
    if not isinstance(spec, (str, Path, dict)):
        return spec, None
    if not isinstance(spec, dict) and not Path(spec).exists():
        raise LatentgeoError(f"encoder folder '{spec}' does not exist; train one with `latentgeo train ae --out DIR` "
                             "or pass a diffusers AutoencoderKL folder")
    from latentgeo.resolve import resolve_encoder

    enc, dec, _ = resolve_encoder(spec)
    return enc, dec


def _check_input(enc: Any, x: torch.Tensor, name: str) -> None:
    """One line when the data cannot go into encoder ``name`` (e.g. 1-channel images into a 3-channel VAE) --
    read from the encoder's config where it has one, before anything is encoded or trained."""
    if not isinstance(enc, torch.nn.Module):
        return
    from latentgeo.resolve import check_input_shape

    try:
        check_input_shape(enc, tuple(x.shape[1:]))
    except LatentgeoError as exc:
        raise LatentgeoError(f"encoder '{name}': {exc}") from None


def _given_denoiser(given: Any, device: str):
    """A reused denoiser: a spec :func:`latentgeo.resolve.resolve_denoiser` takes, or an object as it is."""
    if isinstance(given, (str, Path, dict)):
        from latentgeo.resolve import resolve_denoiser

        return resolve_denoiser(given, device=device)
    return given


def _range(den: Any):
    lo, hi = getattr(den, "sigma_min", None), getattr(den, "sigma_max", None)
    lo = float(lo) if isinstance(lo, (int, float)) and math.isfinite(lo) and lo >= 0 else 0.0
    hi = float(hi) if isinstance(hi, (int, float)) and hi > lo else math.inf
    return lo, hi


def _dtype_safe(f, enc):
    """Feed a module its own parameter dtype and return the caller's dtype (float64 data, float32 encoders)."""
    p = next(enc.parameters(), None) if isinstance(enc, torch.nn.Module) else None
    if p is None:
        return f

    def g(v):
        z = f(v.to(p.dtype))
        z = z[0] if isinstance(z, (tuple, list)) else z
        return z.to(v.dtype)

    return g


def _batch_for(numel: int, cap: int = 256) -> int:
    """Samples per batch so that one batch holds about 1M input / output values (large images: a few per batch,
    which keeps a 256x256 VAE's activations within a few GB; small data: ``cap``)."""
    return max(1, min(int(cap), (1 << 20) // max(1, int(numel))))


class _Ticker:
    """Progress of a slow stage whose total is unknown: counts the model calls through ``wrap`` and prints one line
    at most every ``every`` seconds (only when ``enabled``)."""

    def __init__(self, what: str, enabled: bool, every: float = 10.0):
        self.what, self.enabled, self.every = what, enabled, every
        self.t0 = self.last = time.perf_counter()
        self.calls = 0

    def wrap(self, fn):
        if not self.enabled:
            return fn

        def g(*a, **k):
            out = fn(*a, **k)
            self.calls += 1
            now = time.perf_counter()
            if now - self.last >= self.every:
                self.last = now
                print(f"[diagnose] {self.what}: {self.calls} model calls, {now - self.t0:.0f}s", flush=True)
            return out
        return g


def _encode(f, x, batch_size=None, progress: bool = False, what: str = "encoding"):
    outs = []
    bs = int(batch_size or _batch_for(x[0].numel()))
    nb = -(-x.shape[0] // bs)
    t0 = time.perf_counter()
    with torch.no_grad():
        for j, i in enumerate(range(0, x.shape[0], bs)):
            z = f(x[i:i + bs])
            if isinstance(z, (tuple, list)):
                z = z[0]
            outs.append(z.detach())
            if nb > 1:
                _bar(j + 1, nb, what, progress, t0)
    z = torch.cat(outs)
    check_finite(z, "latents")
    return z


def _read_key(meta_file: Path) -> dict:
    from latentgeo.runfolder import read_json

    return read_json(meta_file, want_object=True, fix="delete it (the cached denoiser next to it is then re-trained)")


def _check_cache(cache: Optional[Path]) -> None:
    """Read every cached denoiser key up front: a corrupt one fails now, not after the first denoiser is trained."""
    if cache is None or not cache.is_dir():
        return
    for meta_file in sorted(cache.glob("*.key.json")):
        _read_key(meta_file)


def _fit_or_load(u: torch.Tensor, tag: str, cache: Optional[Path], steps: int, net: str, net_kwargs, seed, progress,
                 given=None, device: str = "cpu"):
    if given is not None:
        if isinstance(given, (str, Path, dict)):
            return _given_denoiser(given, device), "loaded"
        return given, "given"
    from latentgeo.diffusion import fit_denoiser, load_denoiser

    f = cache / f"{tag}.safetensors" if cache is not None else None
    key = {"shape": list(u.shape), "steps": steps, "net": net, "net_kwargs": net_kwargs, "seed": seed,
           "checksum": float(u.double().sum()), "sq": float((u.double() ** 2).sum())}
    if f is not None and f.exists():
        import json

        meta_file = f.with_suffix(".key.json")
        if meta_file.exists() and _read_key(meta_file) == json.loads(json.dumps(key)):
            return load_denoiser(f, device=device), "reused"
    den = fit_denoiser(u, net=net, steps=steps, batch_size=256, net_kwargs=net_kwargs, seed=seed, progress=progress,
                       device=device)
    if f is not None:
        from latentgeo.checkpoint import atomic_write_json, save

        save(den, f)
        atomic_write_json(f.with_suffix(".key.json"), key)
    return den, "trained"


def diagnose(encoders: Union[Mapping[str, Any], Sequence[Any]], x: torch.Tensor, *, out: Optional[str] = None,
             data_name: str = "data", sigmas: Optional[Sequence[float]] = None, n_sigmas: int = 14,
             n_eval: int = 256, n_probes: int = 4, steps: int = 2000, latent_steps: Optional[int] = None,
             net: str = "mlp", net_kwargs: Optional[Dict[str, Any]] = None, pixel_denoiser: Any = None,
             latent_denoisers: Optional[Mapping[str, Any]] = None, n_penalty: int = 128,
             tangent_dim: Optional[int] = None, n_neighbors: int = 16, seed: int = 0, progress: bool = False,
             device: str = "cpu", decoders: Optional[Mapping[str, Any]] = None, fisher: bool = True,
             n_geometry: int = 1000, n_equivariance: int = 128, n_bands: int = 8,
             score_weights: Optional[Mapping[str, float]] = None, labels: Any = None,
             latent_shape: Any = None, feature_fn: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
             feature_name: Optional[str] = None, generation: bool = True, n_generation: int = 500,
             interp_alphas: Sequence[float] = (0.5, 0.25), noise_scales: Sequence[float] = (0.1, 0.3),
             interp_k: int = 10, interp_temperature: float = 1.0, classifier_steps: int = 300, reference_flow_steps: Optional[int] = None,
             n_boot: int = 20) -> Dict[str, Any]:
    """Compare diffusing the data with diffusing each encoder's latents; return (and write) a summary.

    Args:
        encoders: ``{name: encoder}`` or a list (named ``encoder0``...); an encoder is a latentgeo ``Encoder``, a
            diffusers ``AutoencoderKL``, any module / callable ``x -> z``, or any spec
            :func:`latentgeo.resolve.resolve_encoder` takes (a latentgeo run, a diffusers VAE / pipeline folder, a
            TorchScript file). Data and encoder are checked against each other first
            (:func:`latentgeo.resolve.check_input_shape`): diffusers VAEs take images in [-1, 1], latentgeo's
            image contract.
        x: data [N, ...] (images [N, C, H, W] or vectors [N, D]); the denoisers train on all of it.
        out: folder for ``summary.json``, curve JSONs, plots and cached denoisers (reused when the inputs match).
        sigmas: noise levels (default ``n_sigmas`` log-spaced in [0.01, 80], narrowed to the trained noise range
            of any reused denoiser).
        n_eval / n_probes: Monte-Carlo sizes of the Fisher curves; n_penalty: samples for the encoder penalties.
        steps / latent_steps: denoiser training steps on pixels / latents (latent default = steps).
        net / net_kwargs: denoiser network (``"mlp"`` default; ``"unet"`` for images if time allows).
        pixel_denoiser: a trained pixel-space denoiser (object, or any spec
            :func:`latentgeo.resolve.resolve_denoiser` takes) to reuse, trained on the SAME normalisation.
        latent_denoisers: ``{name: denoiser or spec}`` to reuse for some encoders' normalised latents.
        tangent_dim: data tangent dimension for the penalties (default: local-PCA estimate, capped at 8).
        device: where the denoisers train and the Fisher curves are estimated (encoders and penalties: CPU).
        decoders: ``{name: decoder z -> x}`` for the reconstruction metrics (default: the decoder a latentgeo run or
            a diffusers VAE brings; none for bare encoders). Decoders take the encoder's latents as it gives them.
        fisher: train / reuse the denoisers and compute the Fisher curves and D_R (default); False skips them.
        n_geometry: samples for the neighbourhood and reconstruction metrics; n_equivariance: samples for the
            equivariance errors; n_bands: DCT frequency bands of the band-energy divergence.
        score_weights: weights of the score's features (default
            :data:`latentgeo.fisher.diffusability.DEFAULT_WEIGHTS`).
        labels: ``[N]`` integer class labels of ``x`` (optional): they train the feature classifier of the
            generation measures and give the class-structure measures VIV and LNC
            (:func:`latentgeo.fisher.diffusability.viv`, :func:`latentgeo.fisher.diffusability.latent_neighbour_consistency`).
        latent_shape: ``(C, h, w)`` of flattened spatial latents (one shape for every encoder whose flat latent has
            that size, or ``{name: shape}``): the latents are reshaped so the equivariance and spatial measures
            apply; decoders still receive the latents as the encoder gives them.
        feature_fn / feature_name: the image feature map of the generation measures (e.g. an Inception network);
            default: latentgeo's classifier trained on ``x`` and ``labels`` (images, ``classifier_steps`` steps,
            images average-pooled to at most 32 px), the flattened data themselves for vector data, and an untrained
            (random-init, seeded) classifier for unlabelled images -- a weaker space, said in the summary.
        generation: the decoded-sample measures (needs a decoder): FD / precision / recall of decoded neighbour
            slerps at each ``interp_alphas`` (the iFID recipe: ``interp_k`` cosine neighbours, one drawn with
            probability softmax(-MSE)), and the decoder's noise sensitivity FD(decode(z_n + s eps)) - FD(recon) at
            each ``noise_scales`` (``z_n`` the normalised latent); ``n_generation`` held-out images (the last
            ``n_generation`` of ``x`` are the FD reference, the ``n_generation`` before them are interpolated,
            noised and reconstructed); ``n_boot`` bootstrap draws for the FD standard errors;
            ``interp_temperature`` the softmax temperature of the partner draw (1 as in iFID).
        reference_flow_steps: also train a flow-matching MLP on the normalised latents for this many steps, sample,
            decode and report its FD (``reference_generator``): a cheap-generator REFERENCE, not a diagnostic
            (default None: off).

    Every encoder is loaded and applied to the data, and every setting checked, BEFORE the first denoiser is
    trained, so a missing or broken encoder, or a bad setting, fails at once.
    Returns:
        the summary dict written to ``summary.json``: ``encoders[name]`` holds every number of that encoder
        (``d_r*``, ``tangential``, ``curvature*``, ``compression``, ``spectrum``, ``equivariance``, ``latent_stats``,
        ``neighbourhood``, ``reconstruction``, ``interpolation``, ``noise_sensitivity``, ``class_structure``,
        ``reference_generator``, ``features``, ``score``, ``timing_s`` in CPU seconds), ``ranking``
        lists the encoders best first, ``verdict`` is the plain-language reading.
    """
    x = torch.as_tensor(x)
    if x.ndim < 2 or x.shape[0] < max(8, n_neighbors + 2):
        raise LatentgeoError(f"need at least {max(8, n_neighbors + 2)} data samples [N, ...], got shape "
                             f"{tuple(x.shape)}; load more data")
    check_finite(x, "data")
    x = x if x.is_floating_point() else x.float()
    for v, nm, lo in ((steps, "steps", 1), (n_eval, "n_eval", 2), (n_probes, "n_probes", 1),
                      (n_penalty, "n_penalty", 3), (n_sigmas, "n_sigmas", 1), (n_geometry, "n_geometry", 8),
                      (n_equivariance, "n_equivariance", 1), (n_bands, "n_bands", 2)):
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise LatentgeoError(f"{nm} must be an integer >= {lo}, got {v!r} (untrained or unmeasured denoisers "
                                 f"give a meaningless verdict); pass {nm}={lo} or more")
    if latent_steps is not None and (isinstance(latent_steps, bool) or not isinstance(latent_steps, int)
                                     or latent_steps < 1):
        raise LatentgeoError(f"latent_steps must be an integer >= 1, got {latent_steps!r}; pass e.g. "
                             "latent_steps=2000")
    if not isinstance(fisher, bool):
        raise LatentgeoError(f"fisher must be True or False, got {fisher!r}; pass a bool")
    y_lab = _check_labels(labels, x.shape[0])
    gen_cfg = _check_generation(generation, n_generation, interp_alphas, noise_scales, interp_k, classifier_steps,
                                reference_flow_steps, n_boot, x.shape[0], feature_fn, interp_temperature)
    if isinstance(encoders, Mapping):
        items = list(encoders.items())
    else:
        items = [(Path(e).name if isinstance(e, (str, Path)) else f"encoder{i}", e) for i, e in enumerate(encoders)]
    if not items:
        raise LatentgeoError("no encoder given; pass at least one --encoder DIR")
    names = [n for n, _ in items]
    if len(set(names)) != len(names):
        items = [(f"{n}_{i}", e) for i, (n, e) in enumerate(items)]
    outp = Path(out) if out is not None else None
    if outp is not None:
        from latentgeo.runfolder import check_output_dir

        check_output_dir(outp, "out")
    cache = outp / "denoisers" if outp is not None else None
    _check_cache(cache)
    # reused denoisers are loaded now (a bad one fails before any training); their trained noise ranges bound the
    # default grid, and explicit sigmas outside a range are refused here instead of after the training
    if latent_denoisers:
        unknown = [k for k in latent_denoisers if k not in dict(items)]
        if unknown:
            raise LatentgeoError(f"latent_denoisers names encoder '{unknown[0]}', which is not among the encoders "
                                 f"({', '.join(n for n, _ in items)}); use one of those names")
    pixel_denoiser = _given_denoiser(pixel_denoiser, device) if pixel_denoiser is not None else None
    latent_denoisers = {k: _given_denoiser(v, device) for k, v in (latent_denoisers or {}).items()}
    given = [("the pixel denoiser", pixel_denoiser)] if pixel_denoiser is not None else []
    given += [(f"the latent denoiser of '{k}'", v) for k, v in latent_denoisers.items()]
    lo = max([0.01] + [_range(d)[0] for _, d in given])
    hi = min([80.0] + [_range(d)[1] for _, d in given])
    if sigmas is None and not lo < hi:
        raise LatentgeoError(f"the reused denoisers' noise ranges leave no grid inside [0.01, 80] (common range "
                             f"[{lo:.4g}, {hi:.4g}]); pass sigmas explicitly or other denoisers")
    sig = torch.as_tensor(sigmas, dtype=torch.float64) if sigmas is not None else default_sigmas(n_sigmas, lo, hi)
    if sig.ndim != 1 or sig.numel() == 0 or not bool(torch.isfinite(sig).all()) or bool((sig <= 0).any()):
        raise LatentgeoError(f"sigmas must be a non-empty list of positive finite noise levels, got {sigmas!r}; "
                             "pass e.g. sigmas=[0.05, 0.2, 1.0] or None for the default grid")
    from latentgeo.diffusion.wrappers import RANGE_RTOL

    for what, d in given:
        a, b = _range(d)
        bad = [float(v) for v in sig if float(v) < a * (1 - RANGE_RTOL) or float(v) > b * (1 + RANGE_RTOL)]
        if bad and not getattr(d, "extrapolate", False):
            raise LatentgeoError(f"sigma {bad[0]:g} lies outside the noise range {what} was trained on, "
                                 f"[{a:.4g}, {b:.4g}]; choose sigmas in that range (or reuse it with extrapolate)")
    net_kwargs = dict(net_kwargs or {"hidden": 256, "depth": 3})
    latent_steps = int(latent_steps or steps)
    g = lambda k: torch.Generator().manual_seed(seed + k)  # noqa: E731

    def log(msg):
        if progress:
            print(f"[diagnose] {msg}", flush=True)

    D = int(x[0].numel())
    u, x_mean, x_scale = normalise(x)
    n_ev = min(int(n_eval), x.shape[0])
    if net == "unet" and x.ndim != 4:
        raise LatentgeoError(f"net='unet' needs images [N, C, H, W] but the data have shape {tuple(x.shape)}; use "
                             "net='mlp'")
    decoders = dict(decoders or {})
    unknown = [k for k in decoders if k not in dict(items)]
    if unknown:
        raise LatentgeoError(f"decoders names encoder '{unknown[0]}', which is not among the encoders "
                             f"({', '.join(n for n, _ in items)}); use one of those names")
    # load and apply every encoder first: a missing / broken encoder fails before any training
    encoded = []
    for name, spec in items:
        enc, dec = _load_encoder(spec)
        _check_input(enc, x, name)
        f = _dtype_safe(encoder_function(enc), enc)
        z = _encode(f, x, progress=progress, what=f"{name}: encoding")
        dec = decoders.get(name, dec)
        shp = latent_shape.get(name) if isinstance(latent_shape, Mapping) else latent_shape
        if shp is not None:
            f, z, dec = _with_latent_shape(f, z, dec, shp, name, explicit=isinstance(latent_shape, Mapping))
        zu, z_mean, z_scale = normalise(z)
        if net == "unet" and z.ndim != 4 and fisher:
            raise LatentgeoError(f"net='unet' needs image-shaped latents but encoder '{name}' gives shape "
                                 f"{tuple(z.shape[1:])}; use net='mlp'")
        if dec is None and hasattr(enc, "decode") and callable(getattr(enc, "decode")) \
                and not isinstance(spec, (str, Path, dict)):
            dec = _diffusers_decode(enc)
        encoded.append((name, f, z, zu, z_mean, z_scale, dec))

    def on_dev(den, v):
        p = next(den.parameters(), None) if isinstance(den, torch.nn.Module) else None
        return v.to(p.device) if p is not None else v

    curves: Dict[str, FisherCurves] = {}
    den_info: Dict[str, Any] = {}
    timing: Dict[str, Dict[str, float]] = {"pixels": {}}
    if fisher:
        log(f"pixel-space denoiser on {tuple(x.shape)}")
        t0 = _clock()
        pden, how = _fit_or_load(u, "pixels", cache, steps, net, net_kwargs, seed, progress, pixel_denoiser, device)
        timing["pixels"]["denoiser"] = _clock() - t0
        t0 = _clock()
        curves["pixels"] = fisher_curves(pden, on_dev(pden, u[:n_ev]), sig, n_probes=n_probes, generator=g(1),
                                         label="pixels")
        timing["pixels"]["fisher_curves"] = _clock() - t0
        den_info["pixels"] = {"dim": D, "how": how, "scale": x_scale}

    # data tangents (shared by all encoders), in normalised pixel units
    t0 = _clock()
    n_pen = min(int(n_penalty), x.shape[0])
    xp = u[:n_pen]
    k_est = local_pca_dimension(xp, min(n_neighbors, n_pen - 1))
    k = int(tangent_dim) if tangent_dim else max(1, min(8, k_est))
    T = tangent_basis(xp, k, min(n_neighbors, n_pen - 1)).to(x.dtype)
    # finite-difference scale for the curvature: half the median nearest-neighbour distance (normalised units)
    dd = torch.cdist(xp.reshape(n_pen, -1).double(), xp.reshape(n_pen, -1).double())
    dd.fill_diagonal_(float("inf"))
    h_curv = 0.5 * float(dd.min(1).values.median())
    timing["pixels"]["tangents"] = _clock() - t0
    # the data manifold's own curvature (present even for a perfect isometry), and below the latent set's
    t0 = _clock()
    nb_curv = min(n_pen - 1, max(24, k + k * (k + 1) // 2 + 4))
    k_curv = min(k, D - 1)
    data_curv = _safe_curvature(xp, k_curv, nb_curv)
    timing["pixels"]["intrinsic_curvature"] = _clock() - t0

    f_spec, p_spec = power_spectrum(x[: min(512, x.shape[0])])
    spectra = {"pixels": (f_spec, p_spec)}
    n_geo = min(int(n_geometry), x.shape[0])
    x_geo = x[:n_geo]
    data_range = float(x.max() - x.min())
    feats = None
    if gen_cfg["on"] and any(e[-1] is not None for e in encoded):
        t0 = _clock()
        feats, feat_desc = _feature_space(x, y_lab, feature_fn, feature_name, classifier_steps, seed, outp, log)
        timing["pixels"]["feature_space"] = _clock() - t0
    results: Dict[str, Any] = {}
    for name, f, z, zu, z_mean, z_scale, dec in encoded:
        d = int(z[0].numel())
        tm: Dict[str, float] = {}
        timing[name] = tm
        entry: Dict[str, Any] = {"latent_dim": d, "latent_shape": list(z.shape[1:]), "latent_scale": z_scale}
        den_info[name] = {"dim": d, "scale": z_scale, "latent_shape": list(z.shape[1:])}
        if fisher:
            log(f"{name}: latents {tuple(z.shape)}, denoiser")
            t0 = _clock()
            lden, how = _fit_or_load(zu, f"latent_{name}", cache, latent_steps, net, net_kwargs, seed, progress,
                                     latent_denoisers.get(name), device)
            tm["denoiser"] = _clock() - t0
            t0 = _clock()
            curves[name] = fisher_curves(lden, on_dev(lden, zu[:n_ev]), sig, n_probes=n_probes, generator=g(1),
                                         label=name)
            tm["fisher_curves"] = _clock() - t0
            den_info[name]["how"] = how
            dev = fir_deviation(curves["pixels"], curves[name])
            mid = (sig >= 0.05) & (sig <= 5.0)
            entry.update({
                "d_r": dev.d_r.tolist(), "d_r_se": dev.d_r_se.tolist(), "d_i": dev.d_i.tolist(),
                "d_r_small_sigma": float(dev.d_r[0]),
                "d_r_median_mid": float(dev.d_r[mid].median()) if mid.any() else None,
                "d_i_median_mid": float(dev.d_i[mid].median()) if mid.any() else None,
                "d_r_se_median_mid": float(dev.d_r_se[mid].median()) if mid.any() else None})
        else:
            entry.update({"d_r": None, "d_r_se": None, "d_i": None, "d_r_small_sigma": None,
                          "d_r_median_mid": None, "d_i_median_mid": None, "d_r_se_median_mid": None})

        # the encoder as a map between the two normalised spaces (what the two denoisers see)
        def enc_n(v, f=f, z_mean=z_mean, z_scale=z_scale):
            return (f(v * x_scale + x_mean) - z_mean) / z_scale

        log(f"{name}: penalties on {n_pen} samples, {k} tangent directions")
        t0 = _clock()
        # JVP rows per batch: forward-over-forward through a 256x256 conv VAE holds ~7 GB per row, so large
        # images go one row at a time (28x28: 167 rows)
        pen_bs = max(1, min(2048, (1 << 17) // max(1, D)))
        tick = _Ticker(f"{name}: penalties", progress)
        enc_t = tick.wrap(enc_n)
        tan = tangential_distortion(enc_t, xp, tangents=T, batch_size=pen_bs)
        curv = curvature_penalty(enc_t, xp, tangents=T, batch_size=pen_bs)
        curv_h = curvature_penalty(enc_t, xp, tangents=T, step=h_curv, batch_size=pen_bs)
        comp = dimensional_compression(D, d, intrinsic_dim=max(0, min(k_est, d - 1, D - 1)))
        lat_curv = _safe_curvature(zu[:n_pen], min(k_curv, d - 1), nb_curv) if d > 1 else None
        if lat_curv is not None and data_curv is not None and data_curv["kappa_h"] > 0:
            lat_curv["ratio_to_data"] = lat_curv["kappa_h"] / data_curv["kappa_h"]
        tm["penalties"] = _clock() - t0
        t0 = _clock()
        spectra[name] = power_spectrum(z[: min(512, z.shape[0])])
        fz, pz = spectra[name]
        band = band_energy_divergence(x[: min(512, x.shape[0])], z[: min(512, z.shape[0])], n_bands=n_bands)
        tm["spectrum"] = _clock() - t0
        t0 = _clock()
        equi = equivariance_errors(_Ticker(f"{name}: equivariance", progress).wrap(f), x,
                                   n=min(n_equivariance, x.shape[0]), batch_size=_batch_for(D))
        tm["equivariance"] = _clock() - t0
        t0 = _clock()
        stats = latent_statistics(z)
        tm["latent_stats"] = _clock() - t0
        t0 = _clock()
        neigh = neighbourhood_metrics(x_geo, z[:n_geo], k=min(10, (n_geo - 1) // 2), seed=seed)
        tm["neighbourhood"] = _clock() - t0
        rec = None
        if dec is not None:
            t0 = _clock()
            x_hat = _decode(dec, z[:n_geo], x_geo, progress=progress, what=f"{name}: reconstructions")
            rec = reconstruction_metrics(x_geo, x_hat, data_range=data_range)
            tm["reconstruction"] = _clock() - t0
        gen = {"interpolation": None, "noise_sensitivity": None, "reference_generator": None}
        if feats is not None and dec is not None:
            t0 = _clock()
            gen = _generation_measures(dec, z, zu, z_mean, z_scale, x, feats, gen_cfg, seed, log, name,
                                       reference_flow_steps, progress)
            tm["generation"] = _clock() - t0 - gen.pop("_reference_cpu_s", 0.0)
            if gen.get("reference_generator"):
                tm["reference_generator"] = gen["reference_generator"]["cpu_s"]
            gen["interpolation"]["feature_space"] = feat_desc
        cls = None
        if y_lab is not None:
            t0 = _clock()
            nc = min(zu.shape[0], 4000)
            cls = {**viv(zu[:nc], y_lab[:nc], seed=seed),
                   **latent_neighbour_consistency(zu[:nc], y_lab[:nc], k=min(10, nc - 1)),
                   "n": int(nc), "space": "normalised latent (per-coordinate RMS 1)"}
            tm["class_structure"] = _clock() - t0
        entry.update({
            "interpolation": gen["interpolation"], "noise_sensitivity": gen["noise_sensitivity"],
            "reference_generator": gen["reference_generator"], "class_structure": cls,
            "compression": comp,
            "tangential": _with_se(tan),
            "curvature": _with_se(curv),
            "curvature_at_scale": _with_se(curv_h),
            "latent_manifold_curvature": lat_curv,
            "spectrum_high_frequency_fraction": high_frequency_fraction(fz, pz),
            "spectrum_kind": "2-D radial" if z.ndim == 4 else "1-D over latent coordinates (no spatial layout)",
            "spectrum": band, "equivariance": equi, "latent_stats": stats, "neighbourhood": neigh,
            "reconstruction": rec,
        })
        entry["features"] = score_features(entry)
        entry["score"] = diffusability_score(entry, weights=score_weights)
        tm["total"] = float(sum(v for kk, v in tm.items()))
        entry["timing_s"] = dict(tm)
        results[name] = entry
    pix_hf = high_frequency_fraction(*spectra["pixels"]) if x.ndim >= 3 else None
    ranking = rank_encoders(results, weights=score_weights)
    summary = {
        "data": data_name, "data_shape": list(x.shape[1:]), "n_train": int(x.shape[0]), "n_eval": n_ev,
        "n_probes": int(n_probes), "sigma": sig.tolist() if fisher else None, "fisher": bool(fisher),
        "tangent_dim": k, "intrinsic_dim_local_pca": k_est,
        "normalisation": "both spaces: subtract the per-coordinate mean, divide by one global scale so the "
                         "per-coordinate RMS is 1 (E|u|^2 = dim)",
        "denoisers": den_info, "pixels_spectrum_high_frequency_fraction": pix_hf,
        "intrinsic_data_curvature": data_curv,
        "encoders": results, "ranking": ranking,
        "score": {"definition": "score = -sum_i w_i f_i over the available badness features f_i (higher = more "
                                "diffusable); weights renormalised over the features present",
                  "weights": dict(score_weights or DEFAULT_WEIGHTS)},
        "verdict": _verdict(results, D, pix_hf, ranking),
        "timing_s": timing,
        "settings": {"steps": steps, "latent_steps": latent_steps, "net": net, "net_kwargs": net_kwargs,
                     "seed": seed, "n_penalty": n_pen, "n_geometry": n_geo, "n_equivariance": n_equivariance,
                     "n_bands": n_bands, "labels": y_lab is not None,
                     "generation": {k: v for k, v in gen_cfg.items() if k != "on"} if gen_cfg["on"] else None,
                     "reference_flow_steps": reference_flow_steps},
    }
    if outp is not None:
        from latentgeo.checkpoint import atomic_write_json

        outp.mkdir(parents=True, exist_ok=True)
        for nm, c in curves.items():
            c.save(outp / f"curves_{nm}.json")
        atomic_write_json(outp / "summary.json", summary)
        _plots(outp, curves, results, spectra, sig, D)
    return summary


# ---------------------------------------------------------------------------------------- issue 19: generation side
def _check_labels(labels: Any, n: int) -> Optional[torch.Tensor]:
    if labels is None:
        return None
    try:
        y = torch.as_tensor(labels)
    except Exception:  # noqa: BLE001 - anything not array-like
        raise LatentgeoError(f"labels is not an array ({type(labels).__name__}); pass one integer label per "
                             "sample") from None
    y = y.reshape(-1)
    if y.numel() != n:
        raise LatentgeoError(f"labels has {y.numel()} entries but the data have {n} samples; pass one label per "
                             "sample (in the same order)")
    if y.is_floating_point():
        if not bool(torch.isfinite(y).all()) or bool((y != y.round()).any()):
            raise LatentgeoError("labels must be integers (class ids); remap them to 0..K-1")
        y = y.long()
    if int(y.min()) < 0:
        raise LatentgeoError("labels must be non-negative integers; remap them to 0..K-1")
    if torch.unique(y).numel() < 2:
        raise LatentgeoError("labels hold a single class; class measures need at least 2 classes")
    return y.long()


def _check_generation(generation, n_generation, alphas, scales, k, clf_steps, ref_steps, n_boot, n, feature_fn,
                      temperature):
    if not isinstance(generation, bool):
        raise LatentgeoError(f"generation must be True or False, got {generation!r}; pass a bool")
    for v, nm, lo in ((n_generation, "n_generation", 4), (k, "interp_k", 1), (clf_steps, "classifier_steps", 1),
                      (n_boot, "n_boot", 2)):
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise LatentgeoError(f"{nm} must be an integer >= {lo}, got {v!r}; pass {nm}={lo} or more")
    if ref_steps is not None and (isinstance(ref_steps, bool) or not isinstance(ref_steps, int) or ref_steps < 1):
        raise LatentgeoError(f"reference_flow_steps must be an integer >= 1 or None, got {ref_steps!r}; "
                             "pass None to skip the reference generator")
    try:
        al = [float(a) for a in alphas]
        sc = [float(v) for v in scales]
    except (TypeError, ValueError):
        raise LatentgeoError("interp_alphas and noise_scales must be lists of numbers; e.g. (0.5, 0.25)") from None
    if any(not 0 < a <= 1 for a in al):
        raise LatentgeoError(f"interp_alphas must lie in (0, 1], got {al}; pass e.g. (0.5, 0.25)")
    if any(not (math.isfinite(v) and v > 0) for v in sc):
        raise LatentgeoError(f"noise_scales must be positive finite numbers, got {sc}; pass e.g. (0.1, 0.3)")
    if feature_fn is not None and not callable(feature_fn):
        raise LatentgeoError(f"feature_fn must be a callable images -> features, got {type(feature_fn).__name__}; "
                             "pass a function or None for latentgeo's classifier")
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature > 0 \
            or not math.isfinite(temperature):
        raise LatentgeoError(f"interp_temperature must be a positive finite number, got {temperature!r}; pass e.g. "
                             "1.0")
    ng = min(int(n_generation), n // 2)
    return {"on": bool(generation), "n_generation": ng, "interp_alphas": al, "noise_scales": sc, "interp_k": int(k),
            "n_boot": int(n_boot), "temperature": float(temperature)}


def _with_latent_shape(f, z, dec, shape, name, explicit):
    """Reshape flat latents ``[N, d]`` to ``[N, *shape]`` (the encoder map too); the decoder gets them flat again."""
    try:
        shp = tuple(int(v) for v in shape)
    except (TypeError, ValueError):
        raise LatentgeoError(f"latent_shape must be a tuple like (4, 7, 7), got {shape!r}; pass the latent's "
                             "[C, H, W]") from None
    if not shp or any(v < 1 for v in shp):
        raise LatentgeoError(f"latent_shape must hold positive sizes, got {shp}; pass the latent's [C, H, W]")
    d = int(z[0].numel())
    if math.prod(shp) != d:
        if not explicit and z.ndim != 2:
            return f, z, dec
        raise LatentgeoError(f"encoder '{name}' gives {d} latent values per sample, latent_shape {shp} holds "
                             f"{math.prod(shp)}; pass the shape its latents really have")
    if tuple(z.shape[1:]) == shp:
        return f, z, dec
    flat_shape = tuple(z.shape[1:])

    def f2(v, f=f):
        out = f(v)
        out = out[0] if isinstance(out, (tuple, list)) else out
        m = int(out[0].numel())
        if m == d or len(shp) != 3:
            return out.reshape(out.shape[0], *shp)
        # a resized input (the scale-equivariance check): the same channels on a grid scaled like the image
        r = math.sqrt(m / d)
        h, w = round(shp[1] * r), round(shp[2] * r)
        if shp[0] * h * w != m:
            raise LatentgeoError(f"encoder '{name}' gives {m} values for a resized input, which does not fit "
                                 f"{shp[0]} channels on a scaled grid; pass latent_shape only for spatial latents")
        return out.reshape(out.shape[0], shp[0], h, w)

    dec2 = None
    if dec is not None:
        def dec2(zz, dec=dec):
            return dec(zz.reshape(zz.shape[0], *flat_shape))
    return f2, z.reshape(z.shape[0], *shp), dec2


def _bar(i: int, n: int, what: str, enabled: bool, t0: float) -> None:
    """A text progress bar on stdout (one line per ~10%, and the last)."""
    if not enabled or n <= 0:
        return
    step = max(1, n // 10)
    if i % step and i != n:
        return
    w = 20
    k = int(w * i / n)
    print(f"[diagnose] {what} [{'#' * k}{'.' * (w - k)}] {i}/{n} {time.perf_counter() - t0:.0f}s", flush=True)


def _feature_space(x, y, feature_fn, feature_name, steps, seed, outp, log):
    """``(callable images -> [n, F] float64 features, description)`` for the generation measures."""
    if feature_fn is not None:
        def ff(v):
            with torch.no_grad():
                out = feature_fn(v)
            return out.reshape(out.shape[0], -1).double()
        return ff, feature_name or "user feature map"
    if x.ndim != 4:
        return (lambda v: v.reshape(v.shape[0], -1).double()), "the data coordinates (vector data)"
    import torch.nn.functional as Fn

    from latentgeo.metrics.classifier import FeatureClassifier, fit_feature_classifier

    H = int(x.shape[-1])
    pool = max(1, math.ceil(H / 32))

    def small(v):
        v = v.reshape(v.shape[0], *x.shape[1:]).float()
        return Fn.avg_pool2d(v, pool, ceil_mode=True) if pool > 1 else v

    with torch.no_grad():
        xs = torch.cat([small(x[i:i + 256]) for i in range(0, x.shape[0], 256)])
    if y is not None:
        log(f"feature classifier: {steps} steps on {tuple(xs.shape)} ({int(y.max()) + 1} classes)")
        clf, info = fit_feature_classifier(xs.cpu(), y.cpu(), steps=steps, seed=seed)
        desc = (f"latentgeo's classifier trained on the data ({steps} steps, held-out accuracy "
                f"{info.get('val_accuracy', float('nan')):.3f}; images pooled {pool}x)")
    else:
        torch.manual_seed(seed)
        clf = FeatureClassifier(int(xs.shape[1]), list(xs.shape[2:]), 10).eval()
        clf.in_mean.fill_(float(xs.mean()))
        clf.in_std.fill_(float(xs.std().clamp_min(1e-6)))
        desc = ("an UNTRAINED (random-init, seeded) classifier: no labels were given, so these features are weaker "
                "than a trained network's; pass labels or feature_fn")
    clf = clf.to(x.device)

    def ff(v):
        with torch.no_grad():
            return torch.cat([clf.features(small(v[i:i + 256]).to(x.device)).double()
                              for i in range(0, v.shape[0], 256)])
    return ff, desc


def _generation_measures(dec, z, zu, z_mean, z_scale, x, feats, cfg, seed, log, name, ref_steps, progress):
    """Interpolation FD / precision / recall, decoder noise sensitivity and the optional cheap-generator reference
    of one encoder (see :func:`diagnose`); every number with its standard error."""
    ng = cfg["n_generation"]
    N = x.shape[0]
    ref_idx = torch.arange(N - ng, N)
    q_idx = torch.arange(N - 2 * ng, N - ng)
    lo, hi = float(x.min()), float(x.max())
    t_start = time.perf_counter()
    jobs = 1 + len(cfg["interp_alphas"]) + len(cfg["noise_scales"])
    done = [0]

    def decoded_features(zn):  # normalised latents [n, ...] -> features of the decoded, clamped images
        zr = zn * z_scale + z_mean
        xh = _decode(dec, zr.to(z.dtype), torch.empty((zn.shape[0],) + tuple(x.shape[1:]), dtype=x.dtype,
                                                    device=x.device), progress=progress,
                     what=f"{name}: decoding set {done[0] + 1}/{jobs}")
        out = feats(xh.clamp(lo, hi))
        done[0] += 1
        _bar(done[0], jobs, f"{name}: decode + features", progress, t_start)
        return out

    fr = feats(x[ref_idx])
    zq = zu[q_idx]
    f_rec = decoded_features(zq)
    rec = feature_frechet(f_rec, fr, cfg["n_boot"], seed)
    pr_rec = knn_precision_recall(fr, f_rec)
    base = {"fd_recon": rec["fd"], "fd_recon_se": rec["fd_se"], "precision_recon": pr_rec["precision"],
            "precision_recon_se": pr_rec["precision_se"], "recall_recon": pr_rec["recall"],
            "recall_recon_se": pr_rec["recall_se"], "n": int(ng)}
    # partners: top-k cosine neighbours among all normalised latents (self excluded), drawn by softmax(-MSE)
    flat = zu.reshape(N, -1)
    part = neighbour_partners(flat[q_idx], flat, k=cfg["interp_k"], temperature=cfg["temperature"],
                              self_index=q_idx.to(flat.device), seed=seed)
    interp: Dict[str, Any] = dict(base)
    for a in cfg["interp_alphas"]:
        zi = slerp(flat[q_idx].double(), flat[part].double(), a).reshape(zq.shape)
        fi = decoded_features(zi.to(zu.dtype))
        r = feature_frechet(fi, fr, cfg["n_boot"], seed)
        pr = knn_precision_recall(fr, fi)
        interp[f"alpha_{a:g}"] = {
            "fd": r["fd"], "fd_se": r["fd_se"], "fd_minus_recon": r["fd"] - rec["fd"],
            "fd_minus_recon_se": math.hypot(r["fd_se"] or 0.0, rec["fd_se"] or 0.0),
            "precision": pr["precision"], "precision_se": pr["precision_se"], "recall": pr["recall"],
            "recall_se": pr["recall_se"]}
    interp["recipe"] = (f"for each of {ng} held-out latents (normalised), one of its {cfg['interp_k']} nearest "
                        "latents by cosine drawn with probability softmax(-MSE), slerp at alpha, decode; FD / k-NN "
                        f"precision / recall (k=3) against {ng} other held-out images")
    g = torch.Generator(device="cpu").manual_seed(int(seed) + 7)
    eps = torch.randn(zq.shape, generator=g, dtype=zq.dtype).to(zq.device)
    noise: Dict[str, Any] = {"fd_recon": rec["fd"], "fd_recon_se": rec["fd_se"]}
    for s_ in cfg["noise_scales"]:
        fn_ = decoded_features(zq + s_ * eps)
        r = feature_frechet(fn_, fr, cfg["n_boot"], seed)
        noise[f"s_{s_:g}"] = {"fd": r["fd"], "fd_se": r["fd_se"], "fd_minus_recon": r["fd"] - rec["fd"],
                              "fd_minus_recon_se": math.hypot(r["fd_se"] or 0.0, rec["fd_se"] or 0.0)}
    out = {"interpolation": interp, "noise_sensitivity": noise, "reference_generator": None}
    if ref_steps is not None:
        from latentgeo.flows import fit_flow, flow_sample

        log(f"{name}: cheap-generator reference, flow matching {ref_steps} steps")
        c0 = _clock()
        zf = flat.float()
        model = fit_flow(zf, steps=ref_steps, batch_size=min(256, zf.shape[0]), seed=seed, progress=progress,
                         net_kwargs={"hidden": 256, "depth": 3}, device=str(zf.device))
        gz = torch.Generator(device="cpu").manual_seed(int(seed) + 11)
        zs = flow_sample(model, torch.randn(ng, zf.shape[1], generator=gz).to(zf.device), steps=16,
                         method="heun").reshape(zq.shape).to(zu.dtype)
        fg = decoded_features(zs)
        r = feature_frechet(fg, fr, cfg["n_boot"], seed)
        cpu = _clock() - c0
        out["reference_generator"] = {
            "fd_gen": r["fd"], "fd_gen_se": r["fd_se"], "gap": r["fd"] - rec["fd"],
            "gap_se": math.hypot(r["fd_se"] or 0.0, rec["fd_se"] or 0.0), "steps": int(ref_steps),
            "cpu_s": cpu, "note": "a cheap flow-matching MLP trained on the normalised latents and sampled (16 Heun "
                                  "steps): a REFERENCE generator, not a diagnostic"}
        out["_reference_cpu_s"] = cpu
    return out


def _safe_curvature(v: torch.Tensor, k: int, n_neighbors: int) -> Optional[Dict[str, Any]]:
    """:func:`intrinsic_curvature` with its error bar, or None when the sample is too small for the quadratic fit."""
    if k < 1 or n_neighbors >= v.shape[0] or n_neighbors < k + k * (k + 1) // 2 + 2:
        return None
    return _with_se(intrinsic_curvature(v, k, n_neighbors))


def _clock() -> float:
    """Process CPU seconds (robust on a shared machine; the benchmarks compare costs in CPU time)."""
    return time.process_time()


def _with_se(pen: Dict[str, Any]) -> Dict[str, Any]:
    """A penalty's scalar entries plus the standard errors of its per-sample means (``<name>_se``)."""
    out = {kk: v for kk, v in pen.items() if not kk.startswith("per_sample")}
    for kk, v in pen.items():
        if kk.startswith("per_sample_") and isinstance(v, torch.Tensor):
            eb = penalty_error_bars(v)
            out[kk[len("per_sample_"):] + "_se"] = eb["se"]
    return out


def _diffusers_decode(vae: Any) -> Callable[[torch.Tensor], torch.Tensor]:
    """``z -> x`` for an object with ``decode`` (diffusers ``AutoencoderKL``: ``.decode(z).sample``)."""
    def dec(z):
        out = vae.decode(z)
        return getattr(out, "sample", out[0] if isinstance(out, (tuple, list)) else out)
    return dec


def _decode(dec: Any, z: torch.Tensor, like: torch.Tensor, batch_size: Optional[int] = None,
            progress: bool = False, what: str = "decoding") -> torch.Tensor:
    """Decoded reconstructions ``[N, ...]`` shaped and typed like ``like`` (decoders run in their own dtype)."""
    p = next(dec.parameters(), None) if isinstance(dec, torch.nn.Module) else None
    if isinstance(dec, torch.nn.Module):
        dec.eval()
    outs = []
    batch_size = int(batch_size or _batch_for(like[0].numel() if like.shape[0] else 1))
    nb = -(-z.shape[0] // batch_size)
    t0 = time.perf_counter()
    with torch.no_grad():
        for j, i in enumerate(range(0, z.shape[0], batch_size)):
            if nb > 1:
                _bar(j, nb, what, progress and j > 0, t0)
            zb = z[i:i + batch_size]
            if p is not None:
                zb = zb.to(device=p.device, dtype=p.dtype)
            xb = dec(zb)
            xb = xb[0] if isinstance(xb, (tuple, list)) else xb
            outs.append(xb.detach().to(device=like.device, dtype=like.dtype))
    xh = torch.cat(outs)
    if xh.numel() != like.numel():
        raise LatentgeoError(f"the decoder gives samples of shape {tuple(xh.shape[1:])} for data of shape "
                             f"{tuple(like.shape[1:])}; pass the decoder that belongs to this encoder")
    check_finite(xh, "reconstructions")
    return xh.reshape(like.shape)


def _verdict(results: Dict[str, Any], D: int, pix_hf: Optional[float], ranking: Sequence[str]) -> Dict[str, Any]:
    """Plain-language reading of the numbers (the thresholds are rules of thumb, stated in the text)."""
    lines = []
    for name, r in results.items():
        med = r["d_r_median_mid"]
        why = []
        pred = r["compression"]["predicted_dr_small_tau"]
        if r["d_r_small_sigma"] is not None:
            why.append(f"compression {D}->{r['latent_dim']} alone predicts D_R ~ {pred:.2f} at small noise "
                       f"(measured {r['d_r_small_sigma']:.2f})")
        an, an_se = r["tangential"]["anisotropy"], r["tangential"].get("anisotropy_se")
        pm = f" +- {an_se:.2f}" if an_se is not None else ""
        if an > 0.5:
            why.append(f"strong tangential distortion (metric anisotropy {an:.2f}{pm} > 0.5: the encoder stretches "
                       "some data directions much more than others)")
        elif an > 0.2:
            why.append(f"moderate tangential distortion (anisotropy {an:.2f}{pm})")
        else:
            why.append(f"little tangential distortion (anisotropy {an:.2f}{pm})")
        cv, ch = r["curvature"], r["curvature_at_scale"]
        which = "relative_normal_curvature" if cv["normal_defined"] else "relative_curvature"
        rc, rh = cv[which], ch[which]
        note = (" (exact second derivative ~0: a piecewise-linear encoder, whose bending sits in its kinks)"
                if rc < 1e-3 * max(rh, 1e-12) else "")
        why.append(f"{'notable' if max(rc, rh) > 1.0 else 'mild'} injected curvature ({which.replace('_', ' ')} "
                   f"{rc:.2f} exact, {rh:.2f} at data scale h={ch['step']:.3g}; second derivative along data "
                   f"tangents per squared stretch){note}")
        nb = r.get("neighbourhood") or {}
        if nb.get("trustworthiness") is not None:
            why.append(f"neighbourhoods: trustworthiness {nb['trustworthiness']:.3f}, continuity "
                       f"{nb['continuity']:.3f}")
        sp = r.get("spectrum") or {}
        if sp.get("divergence") is not None:
            why.append(f"band-energy divergence from the images {sp['divergence']:.3g}")
        hf = r["spectrum_high_frequency_fraction"]
        if pix_hf is not None and r["spectrum_kind"].startswith("2-D") and hf > 1.5 * pix_hf:
            why.append(f"latents carry more high-frequency power than the images ({hf:.2f} vs {pix_hf:.2f})")
        rec = r.get("reconstruction")
        if rec and rec.get("psnr") is not None:
            why.append(f"reconstruction PSNR {rec['psnr']:.1f} dB")
        it, ns = r.get("interpolation") or {}, r.get("noise_sensitivity") or {}
        a5, s3 = it.get("alpha_0.5") or {}, ns.get("s_0.3") or {}
        if a5.get("fd") is not None:
            why.append(f"decoded neighbour slerps at alpha 0.5: FD {a5['fd']:.3g} +- {a5['fd_se'] or 0:.2g} "
                       f"(reconstructions {it['fd_recon']:.3g})")
        if s3.get("fd_minus_recon") is not None:
            why.append(f"latent noise 0.3 adds {s3['fd_minus_recon']:.3g} +- {s3['fd_minus_recon_se']:.2g} to the "
                       "decoded FD")
        cs = r.get("class_structure") or {}
        if cs.get("lnc") is not None:
            why.append(f"LNC {cs['lnc']:.3f} (chance {cs['chance']:.3f}), VIV per dimension {cs['viv_per_dim']:.3g}")
        sc = r.get("score")
        head_n = f"{name}: score {sc:.3f}" if sc is not None else f"{name}: no score"
        if med is not None:
            head_n += f", median FIR deviation from pixel space over sigma in [0.05, 5] = {med:.3f}"
        lines.append(head_n + "; " + "; ".join(why) + ".")
    best = ranking[0] if ranking else None
    tie = ""
    fis = [n for n in ranking if results[n]["d_r_median_mid"] is not None]
    if len(fis) > 1 and all(results[n]["d_r_se_median_mid"] is not None for n in fis):
        by_dr = sorted(fis, key=lambda n: results[n]["d_r_median_mid"])
        n1, n2 = by_dr[:2]
        m1, m2 = results[n1]["d_r_median_mid"], results[n2]["d_r_median_mid"]
        se = math.hypot(results[n1]["d_r_se_median_mid"], results[n2]["d_r_se_median_mid"])
        if m2 - m1 < 2 * se:
            tie = (f" By D_R alone '{n1}' and '{n2}' are statistically indistinguishable here (difference "
                   f"{m2 - m1:.4f} < 2 SE = {2 * se:.4f}); use more samples/probes or better-trained denoisers to "
                   "separate them.")
    head = (f"Most diffusable: '{best}' (highest diffusability score; ranking {', '.join(ranking)}).{tie} "
            "The score combines the encoder's distortion of the data geometry (tangential anisotropy, injected "
            "curvature, lost neighbourhoods) and, where measured, the FIR deviation D_R from pixel space; see the "
            "report's 'Which numbers to trust' section (the zoo's correlations) for which of these predicted "
            "generation quality. D_R near 0 means a "
            "diffusion model sees the same Fisher-information dynamics as in pixel space; at small noise D_R is "
            "dominated by dimensional compression, which is expected for any d < D and not by itself a defect.")
    return {"best": best, "ranking": list(ranking), "tie": bool(tie), "summary": head, "details": lines}


def _plots(out: Path, curves, results, spectra, sig, D) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from latentgeo.fisher.curves import plot_curves

    if curves:
        plot_curves(list(curves.values()), path=out / "fisher_curves.png", labels=list(curves.keys()),
                    title="Fisher information and its rate: pixels vs latents (normalised)")
        _deviation_plot(out, results, sig)
    _penalty_plots(out, results, spectra, D)


def _deviation_plot(out: Path, results, sig) -> None:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    s = sig.numpy()
    for name, r in results.items():
        (ln,) = axes[0].semilogx(s, r["d_r"], "o-", ms=3, label=name)
        axes[0].axhline(r["compression"]["predicted_dr_small_tau"], color=ln.get_color(), ls=":", lw=1)
        axes[0].axhline(r["compression"]["predicted_dr_large_tau"], color=ln.get_color(), ls="--", lw=0.8)
        axes[1].semilogx(s, r["d_i"], "o-", ms=3, label=name)
    axes[0].set(xlabel="sigma", ylabel="D_R = |R_pix - R_lat| / |R_pix|",
                title="FIR deviation; compression-only limits: dotted small, dashed large sigma")
    axes[1].set(xlabel="sigma", ylabel="D_I = |I_pix - I_lat| / |I_pix|", title="FI deviation")
    for ax in axes:
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    _save_fig(fig, out / "deviation.png")


def _penalty_plots(out: Path, results, spectra, D) -> None:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    names = list(results)
    axes[0].bar(names, [r["tangential"]["anisotropy"] for r in results.values()],
                yerr=[r["tangential"].get("anisotropy_se") or 0 for r in results.values()], capsize=3)
    axes[0].set(title="tangential anisotropy |G/(trG/k) - I|/sqrt(k)")
    axes[1].bar(names, [r["curvature_at_scale"]["relative_normal_curvature" if r["curvature"]["normal_defined"]
                                                  else "relative_curvature"] for r in results.values()])
    axes[1].set(title="relative (normal) curvature at data scale")
    axes[2].bar(names, [r["compression"]["predicted_dr_small_tau"] for r in results.values()])
    axes[2].set(title=f"compression D={D} -> d: predicted small-tau D_R")
    for ax in axes:
        ax.tick_params(axis="x", rotation=20)
    _save_fig(fig, out / "penalties.png")

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, (f, p) in spectra.items():
        m = f > 0
        ax.loglog(f[m].numpy(), (p[m] / p[m].sum()).numpy(), label=name)
    ax.set(xlabel="frequency (cycles / pixel or / coordinate)", ylabel="normalised power",
           title="radially averaged power spectra")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    _save_fig(fig, out / "spectra.png")
