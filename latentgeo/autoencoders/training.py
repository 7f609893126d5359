"""Training of GPE (encoder alone on the GME cost, then decoder on MSE with the encoder frozen) and of the
jointly trained baselines (beta-VAE, AE, VAE+MDS, AE+MDS) with the SAME architectures and optimiser.

Every stage trains through the project's one loop, :func:`latentgeo.train.train_loop`; :func:`fit` adapts it to
the stage API (``loss_fn(batch, generator)``, held-out evaluation rows, early stop at a threshold, a wall-clock or
CPU-time budget, cosine lr) and keeps each stage's run folder in ``out/<stage>/``. Its ``seconds`` column counts
training time only (evaluation and checkpointing are excluded), which is what the wall-clock benchmark compares.
"""
from __future__ import annotations

import contextlib
import math
import os
import time
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from latentgeo.checkpoint import atomic_write_json, load as ckpt_load, save as ckpt_save
from latentgeo.errors import LatentgeoError, check_choice, check_finite
from latentgeo.autoencoders.losses import gme_loss, kl_per_dim, mds_stress
from latentgeo.autoencoders.nets import Decoder, Encoder

__all__ = ["METHODS", "finalise_normalisation", "fit", "run_shared", "train_gpe_encoder", "train_decoder", "train_joint", "train_autoencoder",
           "evaluate_mse", "evaluate_gme", "save_autoencoder", "load_encoder", "load_decoder", "encode_batched",
           "run_folder_kind", "check_autoencoder_dir"]

METHODS = ("gpe", "vae", "ae", "vae-mds", "ae-mds")

Batch = Union[torch.Tensor, Tuple[torch.Tensor, ...]]


# ------------------------------------------------------------------------------------------------ training

#: Keys of a :func:`latentgeo.train.train_loop` record that are not the loss function's own metrics.
_LOOP_KEYS = frozenset({"step", "loss", "lr", "it_per_s", "time_s", "train_s", "stopped"})
_STOPPED = {"steps": "steps", "stop_fn": "threshold", "budget": "time"}


def fit(module: nn.Module, loss_fn: Callable, data: Batch, *, steps: int, batch_size: int = 100,
        lr: float = 1e-3, betas: Tuple[float, float] = (0.5, 0.999), seed: int = 0,
        params: Optional[Sequence[torch.nn.Parameter]] = None,
        eval_fn: Optional[Callable[[nn.Module], Dict[str, float]]] = None, eval_every: int = 100,
        stop_fn: Optional[Callable[[Dict[str, float]], bool]] = None, time_budget: Optional[float] = None,
        out: Optional[Union[str, Path]] = None, name: str = "stage", ckpt_every: int = 500,
        resume: bool = False, verbose: bool = False, clock: str = "wall",
        lr_schedule: str = "constant", device: str = "cpu",
        grad_clip: Optional[float] = None) -> Dict[str, Any]:
    """Minimise ``loss_fn(batch, generator) -> loss | (loss, metrics)`` over minibatches of ``data``, with the
    project's one training loop :func:`latentgeo.train.train_loop` (plain Adam with ``betas``, no EMA and, by
    default, no gradient clipping: the GPE anchor settings; ``grad_clip`` clips the global gradient norm).

    A run whose logged loss ends more than 10x above its best logged value has diverged (seen with Adam at lr 1e-3
    on long joint autoencoder runs: loss 0.06 -> 3e4 in 100 steps): ``diverged`` is True in the result and a
    :class:`RuntimeWarning` names the steps and the fixes (a lower ``lr``, ``grad_clip``, a cosine schedule).

    Args:
        data: ``[N, ...]`` tensor or tuple of equally long tensors; batches are drawn uniformly with replacement,
            seeded per step from ``seed`` (so ``resume`` is exact for step-based runs).
        params: the parameters to optimise (default: all of ``module``'s).
        eval_fn / eval_every / stop_fn: at step 0, every ``eval_every`` steps and at the end ``eval_fn(module)``
            (eval mode, no grad) is logged; training stops early when ``stop_fn(row)`` is true.
        time_budget: stop once this many seconds of TRAINING time (evaluation excluded) have elapsed.
        lr_schedule: ``"constant"`` (default) or ``"cosine"``: ``lr * (1 + cos(pi p)) / 2`` with ``p`` the fraction
            of the run done, in steps, or with ``time_budget`` the larger of the step and time fractions (a
            time-based schedule follows the clock, so it is not bit-reproducible on resume).
        clock: ``"wall"`` (perf_counter) or ``"cpu"`` (process CPU time: robust on a shared, loaded machine when
            running single-threaded); it times the ``seconds`` column and the budget.
        out / name / ckpt_every / resume: the stage's run folder ``out/<name>/`` (``config.json``,
            ``metrics.jsonl``, ``state.safetensors``, ``model.safetensors``: see :mod:`latentgeo.train`);
            ``resume`` continues it, and trains no further once it met its ``stop_fn``.
        verbose: the progress bar and one line per evaluation.
        device: the training device (``"auto"``: CUDA when available); the module is left there.
    Returns:
        ``{"history": [{"step", "seconds", "loss", "train_<metric>", <eval metrics>}], "steps": int,
        "seconds": float, "stopped": "steps" | "threshold" | "time", "diverged": bool}``; ``loss`` and
        ``train_*`` average the steps since the previous row.
    """
    from latentgeo.train import train_loop

    check_choice(clock, ("wall", "cpu"), "clock")
    check_choice(lr_schedule, ("constant", "cosine"), "lr schedule")
    if not (isinstance(eval_every, int) and eval_every > 0):
        raise LatentgeoError(f"eval_every must be a positive integer, got {eval_every!r}; "
                             "pass the number of steps between evaluations, e.g. 500")
    sdir = Path(out) / name if out is not None else None
    if sdir is not None and resume:
        _refuse_legacy(Path(out), (name,))
    eval_keys: set = set()

    def row_of(rec: Dict[str, Any]) -> Dict[str, Any]:
        row = {"step": rec["step"], "seconds": round(float(rec.get("train_s", 0.0)), 4),
               "loss": rec.get("loss", float("nan"))}
        row.update({(k if k in eval_keys else f"train_{k}"): v for k, v in rec.items() if k not in _LOOP_KEYS})
        return row

    def ev(m, step):
        got = {k: float(v) for k, v in eval_fn(module).items()}
        eval_keys.update(got)
        return got

    def stop(rec):
        row = row_of(rec)
        if verbose:
            print(f"[{name}] " + "  ".join(f"{k}={v:.5g}" if isinstance(v, float) else f"{k}={v}"
                                           for k, v in row.items()), flush=True)
        return bool(stop_fn(row)) if stop_fn is not None else False

    opt = None
    if params is not None:
        plist = list(params)

        def opt(_ps):
            return torch.optim.Adam(plist, lr=lr, betas=tuple(betas))

    res = train_loop(module, lambda m, b, g: loss_fn(b, g), data, steps=steps, batch_size=batch_size, lr=lr,
                     betas=tuple(betas), seed=seed, optimizer=opt, grad_clip=grad_clip, ema_decay=None, out=sdir,
                     resume=resume, log_every=eval_every, ckpt_every=ckpt_every, progress=verbose,
                     description=name, device=device, eval_fn=ev if eval_fn is not None else None,
                     eval_every=eval_every, stop_fn=stop if (stop_fn is not None or verbose) else None,
                     budget_s=time_budget, clock=clock, lr_schedule=lr_schedule)
    module.train()
    if eval_fn is not None:  # rows reloaded on resume: their evaluation keys are the ones not from the loop
        eval_keys.update(k for r in res.metrics if r.get("step") == 0 for k in r if k not in _LOOP_KEYS)
    history = [row_of(r) for r in res.metrics]
    diverged = _diverged(history, name, lr)
    return {"history": history, "steps": res.step, "seconds": res.train_s, "stopped": _STOPPED[res.stopped],
            "diverged": diverged}


def _diverged(history: Sequence[Dict[str, Any]], name: str, lr: float) -> bool:
    """True (and a warning) when the last logged training loss is > 10x the best one logged before it."""
    losses = [(r["step"], float(r["loss"])) for r in history
              if r.get("step", 0) > 0 and isinstance(r.get("loss"), (int, float)) and math.isfinite(r["loss"])]
    if len(losses) < 2:
        return False
    best_step, best = min(losses[:-1], key=lambda t: t[1])
    last_step, last = losses[-1]
    if not (best > 0 and last > 10 * best):
        return False
    import warnings

    warnings.warn(f"training stage '{name}' diverged: its loss rose from {best:.4g} (step {best_step}) to "
                  f"{last:.4g} (step {last_step}); lower the learning rate (now {lr:g}), clip gradients "
                  "(grad_clip) or use the cosine schedule", RuntimeWarning, stacklevel=3)
    return True


#: The earlier name of :func:`fit` when it ran :func:`latentgeo.train.train_loop` beside a loop of its own.
run_shared = fit

#: Training engines accepted for compatibility: both run :func:`fit`, i.e. :func:`latentgeo.train.train_loop`
#: (``"fit"`` was a separate CPU loop; it is now an alias of ``"shared"``).
ENGINES = ("shared", "fit")


def _run(engine: str, *args, **kw) -> Dict[str, Any]:
    check_choice(engine, ENGINES, "training engine")
    return fit(*args, **kw)


# ------------------------------------------------------------------------------------------------ evaluation

def _device(m: Any) -> torch.device:
    p = next(m.parameters(), None) if isinstance(m, nn.Module) else None
    if p is None and hasattr(m, "__self__") and isinstance(m.__self__, nn.Module):  # bound method
        p = next(m.__self__.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


@torch.no_grad()
def encode_batched(encoder: Callable, x: torch.Tensor, batch_size: int = 500, raw: bool = False) -> torch.Tensor:
    """Encode ``x`` in batches (eval mode for modules); ``raw`` uses ``encoder.raw`` (unnormalised T)."""
    fn = encoder.raw if raw else encoder
    was = getattr(encoder, "training", False)
    dev = _device(encoder)
    if isinstance(encoder, nn.Module):
        encoder.eval()
    z = torch.cat([fn(x[i:i + batch_size].to(dev)).cpu() for i in range(0, x.shape[0], batch_size)], 0)
    if isinstance(encoder, nn.Module):
        encoder.train(was)
    return z


@torch.no_grad()
def evaluate_gme(encoder: Encoder, x: torch.Tensor, batch_size: int = 100) -> float:
    """Held-out GME cost of ``encoder.raw`` averaged over consecutive batches of ``batch_size`` (eval mode)."""
    x = x.to(_device(encoder))
    vals = [gme_loss(encoder.raw(x[i:i + batch_size]), x[i:i + batch_size], gather=False).item()
            for i in range(0, x.shape[0] - batch_size + 1, batch_size)] or \
           [gme_loss(encoder.raw(x), x, gather=False).item()]
    return float(sum(vals) / len(vals))


@torch.no_grad()
def evaluate_mse(decoder: Callable, z: torch.Tensor, x: torch.Tensor, batch_size: int = 500) -> float:
    """Mean squared reconstruction error per pixel, ``mean |S(z) - x|^2 / numel``."""
    tot = 0.0
    dev = _device(decoder)
    for i in range(0, x.shape[0], batch_size):
        tot += float((decoder(z[i:i + batch_size].to(dev)) - x[i:i + batch_size].to(dev)).pow(2).sum())
    return tot / x.numel()


# ------------------------------------------------------------------------------------------------ stages

def _check_data(x: torch.Tensor, name: str) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim < 2:
        raise LatentgeoError(f"{name} must be a tensor of shape [N, ...] with N samples; reshape it")
    if x.shape[0] < 2:
        raise LatentgeoError(f"{name} has {x.shape[0]} sample(s); pass at least 2")
    check_finite(x, name)


def train_gpe_encoder(encoder: Encoder, x: torch.Tensor, x_val: Optional[torch.Tensor] = None, *,
                      steps: int = 2000, gme_threshold: Optional[float] = None, eval_every: int = 100,
                      engine: str = "fit", stop_fn: Optional[Callable[[Dict[str, float]], bool]] = None,
                      **kw) -> Dict[str, Any]:
    """GPE stage 1: train ``encoder`` alone on the GME cost; stop after ``steps`` or once the HELD-OUT GME cost
    (``x_val``, eval mode) falls below ``gme_threshold`` (or ``stop_fn(row)`` is true; it sees every evaluation
    row). Keyword arguments go to :func:`fit`; ``engine`` (``"fit"`` or ``"shared"``) is accepted for
    compatibility and runs the same loop."""
    _check_data(x, "training data")
    if x_val is not None:
        _check_data(x_val, "validation data")

    def loss_fn(b, g):
        loss = gme_loss(encoder.raw(b), b)
        return loss, {}

    ev = (lambda m: {"val_gme": evaluate_gme(m, x_val)}) if x_val is not None else None
    stop = (lambda r: r.get("val_gme", math.inf) < gme_threshold) if gme_threshold is not None and ev else None
    if stop_fn is not None:  # a caller's hook (e.g. snapshots at several thresholds), OR-ed with the threshold
        base = stop
        stop = (lambda r: bool(stop_fn(r)) | bool(base(r))) if base is not None else stop_fn
    return _run(engine, encoder, loss_fn, x, steps=steps, eval_fn=ev, eval_every=eval_every, stop_fn=stop,
                name=kw.pop("name", "encoder"), **kw)


def train_decoder(decoder: Decoder, encoder: Callable, x: torch.Tensor, x_val: Optional[torch.Tensor] = None, *,
                  steps: int = 2000, mse_threshold: Optional[float] = None, eval_every: int = 100,
                  cache_latents: bool = True, engine: str = "fit", **kw) -> Dict[str, Any]:
    """GPE stage 2: train ``decoder`` on ``mean |S(E(x)) - x|^2`` with the encoder FROZEN (eval mode).

    ``encoder`` is any callable returning the latents the decoder will receive (for GPE: the normalised
    :class:`Encoder`). With ``cache_latents`` the training latents are computed once (the encoder is frozen, so
    this is exact); the time it takes is added to the returned ``seconds`` and to ``encode_seconds``.
    """
    _check_data(x, "training data")
    timer = time.process_time if kw.get("clock") == "cpu" else time.perf_counter
    t0 = timer()
    if isinstance(encoder, nn.Module):
        encoder.eval()
        for p in encoder.parameters():
            p.requires_grad_(False)
    z_all = encode_batched(encoder, x) if cache_latents else None
    enc_s = timer() - t0
    zv = encode_batched(encoder, x_val) if x_val is not None else None

    if cache_latents:
        data: Batch = (x, z_all)

        def loss_fn(b, g):
            return (decoder(b[1]) - b[0]).pow(2).mean()
    else:
        data = x

        def loss_fn(b, g):
            with torch.no_grad():
                z = encoder(b)
            return (decoder(z) - b).pow(2).mean()

    ev = (lambda m: {"val_mse": evaluate_mse(m, zv, x_val)}) if x_val is not None else None
    stop = (lambda r: r.get("val_mse", math.inf) < mse_threshold) if mse_threshold is not None and ev else None
    res = _run(engine, decoder, loss_fn, data, steps=steps, eval_fn=ev, eval_every=eval_every, stop_fn=stop,
               name=kw.pop("name", "decoder"), **kw)
    res["encode_seconds"] = enc_s
    res["seconds"] += enc_s
    for row in res["history"]:
        row["seconds"] = round(row["seconds"] + enc_s, 4)
    return res


def train_joint(method: str, encoder: Encoder, decoder: Decoder, x: torch.Tensor,
                x_val: Optional[torch.Tensor] = None, *, steps: int = 2000, kl_weight: float = 0.1,
                mds_weight: float = 1.0, mse_threshold: Optional[float] = None, eval_every: int = 100,
                engine: str = "fit", **kw) -> Dict[str, Any]:
    """Joint baselines: ``vae`` (beta-VAE: MSE + kl_weight * per-dimension KL, decoder fed the reparametrised
    sample), ``ae`` (MSE), ``vae-mds`` / ``ae-mds`` (+ mds_weight * MDS stress on the encoder mean).
    Validation MSE decodes the MEAN ``T(x)``. The decoder learns on raw ``T(x)``; call
    :func:`finalise_normalisation` afterwards (``train_autoencoder`` does)."""
    check_choice(method, [m for m in METHODS if m != "gpe"], "joint method")
    _check_data(x, "training data")
    variational = method.startswith("vae")
    if encoder.variational != variational:
        raise LatentgeoError(f"method '{method}' needs an Encoder with variational={variational}; rebuild it")
    use_mds = method.endswith("mds")
    params = list(encoder.parameters()) + list(decoder.parameters())
    both = nn.ModuleDict({"encoder": encoder, "decoder": decoder})

    def loss_fn(b, g):
        mean, logvar = encoder.mean_logvar(b)
        if variational:
            t = mean + (0.5 * logvar).exp() * torch.randn(mean.shape, generator=g, dtype=mean.dtype,
                                                              device=mean.device)
        else:
            t = mean
        rec = (decoder.decode_raw(t) - b).pow(2).mean()
        loss, m = rec, {"mse": rec.detach()}
        if variational:
            kl = kl_per_dim(mean, logvar)
            loss = loss + kl_weight * kl
            m["kl"] = kl.detach()
        if use_mds:
            st = mds_stress(mean, b)
            loss = loss + mds_weight * st
            m["stress"] = st.detach()
        return loss, m

    def ev(_m):
        t = encode_batched(encoder, x_val, raw=True)
        return {"val_mse": evaluate_mse(decoder.decode_raw, t, x_val)}

    ev_fn = ev if x_val is not None else None
    stop = (lambda r: r.get("val_mse", math.inf) < mse_threshold) if mse_threshold is not None and ev_fn else None
    return _run(engine, both, loss_fn, x, steps=steps, params=params, eval_fn=ev_fn, eval_every=eval_every,
                stop_fn=stop, name=kw.pop("name", "joint"), **kw)


def finalise_normalisation(encoder: Encoder, decoder: Optional[Decoder], x: torch.Tensor,
                           decoder_on_raw: bool) -> Tuple[torch.Tensor, float]:
    """Fit ``z = C (T(x) - m)`` on ``x``; if the decoder learnt on raw ``T(x)``, fold the inverse into it."""
    m, c = encoder.fit_normalisation(x)
    if decoder is not None and decoder_on_raw:
        decoder.in_shift.copy_(m.to(decoder.in_shift.dtype))
        decoder.in_scale.fill_(c)
    return m, c


# ------------------------------------------------------------------------------------------------ end to end + I/O

def train_autoencoder(method: str, x: torch.Tensor, x_val: Optional[torch.Tensor] = None, *,
                      latent_dim: int = 30, arch: str = "auto", enc_width: int = 0, dec_width: int = 0,
                      steps: int = 2000, decoder_steps: Optional[int] = None,
                      gme_threshold: Optional[float] = None, kl_weight: float = 0.1, mds_weight: float = 1.0,
                      batch_size: int = 100, lr: float = 1e-3, seed: int = 0,
                      out: Optional[Union[str, Path]] = None, resume: bool = False, verbose: bool = False,
                      extra: Optional[Dict[str, Any]] = None, engine: str = "fit",
                      device: str = "cpu", decoder: str = "wide",
                      lr_schedule: str = "constant",
                      grad_clip: Optional[float] = None) -> Tuple[Encoder, Decoder, Dict[str, Any]]:
    """Build and train an encoder/decoder pair with ``method`` in :data:`METHODS`; save it to ``out`` if given.

    GPE: ``steps`` encoder steps (early stop at ``gme_threshold`` on ``x_val``), normalisation fitted on ``x``,
    then ``decoder_steps`` (default ``steps``) decoder steps on the normalised latents. Baselines: ``steps``
    joint steps, then the normalisation. Every stage runs :func:`latentgeo.train.train_loop` (stage folders
    ``out/encoder``, ``out/decoder``, ``out/joint``) on ``device``; ``engine`` is accepted for compatibility:
    ``"fit"`` (once a separate CPU loop) is now an alias of ``"shared"``, and the run records ``"shared"``.
    ``decoder``: ``"wide"`` or ``"lean"`` conv decoder for images (see :class:`Decoder`). ``lr_schedule``:
    ``"constant"`` or ``"cosine"`` (to 0 over each stage's steps). ``grad_clip``: clip each step's gradient norm
    (default off, the anchor settings). A stage whose loss diverged says so (``info[<stage>]["diverged"]`` and a
    warning). Returns ``(encoder, decoder, info)`` on the CPU.

    With ``out``: the process holds :class:`latentgeo.runfolder.RunLock` on ``out`` for the whole run (a second
    writer is refused), ``out/config.json`` records the settings (``kind: "autoencoder"``) before training, and a
    folder that already holds a run is refused unless ``resume``; ``resume`` refuses changed settings (only
    ``steps`` / ``decoder_steps`` may grow, recorded in ``resume_history``).
    """
    check_choice(method, METHODS, "method")
    check_choice(engine, ENGINES, "training engine")
    engine = "shared"  # "fit" is an alias: one loop, one folder layout, one record
    _check_data(x, "training data")
    if out is None:
        return _train_autoencoder(method, x, x_val, latent_dim=latent_dim, arch=arch, enc_width=enc_width,
                                  dec_width=dec_width, steps=steps, decoder_steps=decoder_steps,
                                  gme_threshold=gme_threshold, kl_weight=kl_weight, mds_weight=mds_weight,
                                  batch_size=batch_size, lr=lr, seed=seed, out=None, resume=resume,
                                  verbose=verbose, extra=extra, engine=engine, device=device, decoder=decoder,
                                  lr_schedule=lr_schedule, grad_clip=grad_clip)
    from latentgeo.data import content_hash
    from latentgeo.runfolder import RunLock

    gpe = method == "gpe"
    record: Dict[str, Any] = {
        "kind": "autoencoder", "method": method, "latent_dim": latent_dim, "arch": arch, "enc_width": enc_width,
        "dec_width": dec_width, "decoder": decoder, "steps": steps,
        "decoder_steps": (decoder_steps if decoder_steps is not None else steps) if gpe else None,
        "batch_size": batch_size, "lr": lr, "lr_schedule": lr_schedule, "seed": seed, "engine": engine,
        "device": str(device), "data_shape": list(x.shape[1:]), "n_train": int(x.shape[0]),
        "n_val": None if x_val is None else int(x_val.shape[0]), "data_hash": content_hash(x)}
    if grad_clip is not None:  # recorded only when set: earlier runs' records stay valid for --resume
        record["grad_clip"] = grad_clip
    if gpe:
        record["gme_threshold"] = gme_threshold
    else:
        record.update(kl_weight=kl_weight, mds_weight=mds_weight)
    record.update({k: v for k, v in (extra or {}).items() if k not in record})
    outp = Path(out)
    # One writer per folder; under torchrun only rank 0 writes (and checks), the other ranks follow it.
    rank0 = int(os.environ.get("RANK", "0")) == 0
    with (RunLock(outp) if rank0 else contextlib.nullcontext()):
        if rank0:
            _check_ae_folder(outp, record, resume, gpe, steps)
        return _train_autoencoder(method, x, x_val, latent_dim=latent_dim, arch=arch, enc_width=enc_width,
                                  dec_width=dec_width, steps=steps, decoder_steps=decoder_steps,
                                  gme_threshold=gme_threshold, kl_weight=kl_weight, mds_weight=mds_weight,
                                  batch_size=batch_size, lr=lr, seed=seed, out=outp, resume=resume,
                                  verbose=verbose, extra=extra, engine=engine, device=device, decoder=decoder,
                                  lr_schedule=lr_schedule, grad_clip=grad_clip)


def _check_ae_folder(outp: Path, record: Dict[str, Any], resume: bool, gpe: bool, steps: int) -> None:
    """Refuse a folder that holds another run, a started run without ``resume``, or changed settings on resume;
    then record the settings in ``outp/config.json``."""
    from latentgeo.runfolder import check_resume_config

    cfg_file = outp / "config.json"
    old = _read_json(cfg_file, "run record") if cfg_file.exists() else None
    if old is not None and old.get("kind") != "autoencoder":
        raise LatentgeoError(f"'{outp}' holds a {run_folder_kind(outp)} run, not an autoencoder run; choose "
                             "another output folder (--out)")
    if old is None and run_folder_kind(outp) not in ("empty", "autoencoder"):
        raise LatentgeoError(f"'{outp}' holds a {run_folder_kind(outp)} run, not an autoencoder run; choose "
                             "another output folder (--out)")
    started = old is not None or _has_ae_stages(outp) or (outp / "autoencoder.json").exists()
    if started and not resume:
        what = "a trained autoencoder" if (outp / "autoencoder.json").exists() else "an unfinished autoencoder run"
        raise LatentgeoError(f"'{outp}' already holds {what}; pass --resume (resume=True) to continue it or "
                             "choose another output folder (--out)")
    if resume:
        _refuse_legacy(outp)
    if resume and old is not None:
        old_dec, new_dec = old.get("decoder_steps"), record.get("decoder_steps")
        if (gpe and old.get("steps") is not None and steps > int(old["steps"]) and _decoder_started(outp)
                and old_dec is not None and new_dec is not None and new_dec <= old_dec):
            raise LatentgeoError(f"growing --steps of '{outp}' to {steps} changes its encoder, but its decoder "
                                 f"already ran its {old_dec} steps on the {old['steps']}-step encoder and would not "
                                 "be trained on the new one; grow --decoder-steps too (or leave it unset) or choose "
                                 "a new --out")
        record = check_resume_config(old, record, outp, extendable=("steps", "decoder_steps"))
    atomic_write_json(cfg_file, record)


def _refuse_legacy(out: Path, stages: Sequence[str] = ("encoder", "decoder", "joint")) -> None:
    """Stage files of the loops this version no longer has (``state_<stage>.safetensors`` of the built-in ``fit``
    loop, ``<stage>/stopped.json`` of the chunked shared loop) cannot be resumed: one line saying so."""
    legacy = [p for s in stages for p in (out / f"state_{s}.safetensors", out / s / "stopped.json") if p.exists()]
    if legacy:
        raise LatentgeoError(f"'{legacy[0]}' was written by an earlier latentgeo training loop, which this version "
                             "cannot resume; start a new --out (or finish the run with the version that started it)")


def _has_ae_stages(out: Path) -> bool:
    """True when ``out`` holds a stage of an autoencoder run (either engine)."""
    return any((out / f"state_{s}.safetensors").exists() or (out / s / "state.safetensors").exists()
               or (out / s / "stopped.json").exists() for s in ("encoder", "decoder", "joint"))


def _decoder_started(out: Path) -> bool:
    return any((out / p).exists() for p in ("state_decoder.safetensors", "decoder/state.safetensors",
                                            "decoder/stopped.json", "autoencoder.json"))


def _train_autoencoder(method: str, x: torch.Tensor, x_val: Optional[torch.Tensor], *, latent_dim: int, arch: str,
                       enc_width: int, dec_width: int, steps: int, decoder_steps: Optional[int],
                       gme_threshold: Optional[float], kl_weight: float, mds_weight: float, batch_size: int,
                       lr: float, seed: int, out: Optional[Path], resume: bool, verbose: bool,
                       extra: Optional[Dict[str, Any]], engine: str, device: str, decoder: str,
                       lr_schedule: str, grad_clip: Optional[float] = None
                       ) -> Tuple[Encoder, Decoder, Dict[str, Any]]:
    torch.manual_seed(seed)  # initial weights
    shape = list(x.shape[1:])
    enc = Encoder(shape, latent_dim, arch=arch, width=enc_width, variational=method.startswith("vae"))
    dec = Decoder(shape, latent_dim, arch=arch, width=dec_width, decoder=decoder)
    common = dict(batch_size=batch_size, lr=lr, seed=seed, out=out, resume=resume, verbose=verbose, engine=engine,
                  lr_schedule=lr_schedule, device=device, grad_clip=grad_clip)
    info: Dict[str, Any] = {"method": method, "latent_dim": latent_dim, "data_shape": shape, "lr": lr,
                            "lr_schedule": lr_schedule,
                            "batch_size": batch_size, "seed": seed}
    if out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)
    if method == "gpe":
        r1 = train_gpe_encoder(enc, x, x_val, steps=steps, gme_threshold=gme_threshold, **common)
        m, c = finalise_normalisation(enc, None, x, decoder_on_raw=False)
        r2 = train_decoder(dec, enc, x, x_val, steps=decoder_steps if decoder_steps is not None else steps,
                           **common)
        info.update(encoder_stage=_summary(r1), decoder_stage=_summary(r2),
                    seconds=r1["seconds"] + r2["seconds"])
    else:
        r = train_joint(method, enc, dec, x, x_val, steps=steps, kl_weight=kl_weight, mds_weight=mds_weight,
                        **common)
        m, c = finalise_normalisation(enc, dec, x, decoder_on_raw=True)
        info.update(joint_stage=_summary(r), seconds=r["seconds"], kl_weight=kl_weight, mds_weight=mds_weight)
    enc, dec = enc.cpu(), dec.cpu()
    info["normalisation"] = {"scale": c}
    info["engine"] = engine
    if x_val is not None:
        zv = encode_batched(enc, x_val)
        info["val_mse"] = evaluate_mse(dec, zv, x_val)
        info["val_gme"] = evaluate_gme(enc, x_val)
    info.update(extra or {})
    if out is not None and int(os.environ.get("RANK", "0")) == 0:
        save_autoencoder(out, enc, dec, info)
    return enc, dec, info


def _summary(r: Dict[str, Any]) -> Dict[str, Any]:
    last = r["history"][-1] if r["history"] else {}
    return {"steps": r["steps"], "seconds": r["seconds"], "stopped": r["stopped"], "diverged": r.get("diverged", False),
            **{k: v for k, v in last.items() if k.startswith("val_")}}


def save_autoencoder(out: Union[str, Path], encoder: Encoder, decoder: Optional[Decoder],
                     info: Dict[str, Any]) -> Path:
    """Write ``out/encoder.safetensors`` (with its normalisation buffers), ``out/decoder.safetensors`` and
    ``out/autoencoder.json`` (method, data, training summary)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_save(encoder, out / "encoder.safetensors", extra={"scale": float(encoder.scale)})
    if decoder is not None:
        ckpt_save(decoder, out / "decoder.safetensors")
    atomic_write_json(out / "autoencoder.json", info)
    return out


def _read_json(path: Union[str, Path], what: str) -> Dict[str, Any]:
    """The JSON object in ``path`` (``what`` names its role), or one line naming the damaged file and the fix."""
    from latentgeo.runfolder import read_json

    return read_json(path, what, want_object=True)


def run_folder_kind(directory: Union[str, Path]) -> str:
    """What a folder holds: ``"autoencoder"`` (``latentgeo train ae``), ``"diffusion"`` / ``"flow"`` (``train
    diffusion`` / ``train flow``), ``"training"`` (another :func:`latentgeo.train.train_loop` run), ``"empty"``
    (nothing latentgeo wrote) or ``"missing"`` / ``"file"``. A corrupt ``config.json`` raises one line."""
    d = Path(directory)
    if not d.exists():
        return "missing"
    if not d.is_dir():
        return "file"
    if (d / "encoder.safetensors").exists() or (d / "autoencoder.json").exists() or _has_ae_stages(d):
        return "autoencoder"
    if (d / "config.json").exists():
        cfg = _read_json(d / "config.json", "run record")
        if cfg.get("kind") == "autoencoder":
            return "autoencoder"
        user = cfg.get("user") if isinstance(cfg.get("user"), dict) else {}
        return {"denoiser": "diffusion", "flow": "flow"}.get(user.get("kind"), "training")
    if any((d / f).exists() for f in ("ema.safetensors", "model.safetensors", "state.safetensors")):
        return "training"
    return "empty"


def check_autoencoder_dir(directory: Union[str, Path], what: str = "--encoder", allow_file: bool = False) -> Path:
    """``directory`` if it holds a trained autoencoder (``encoder.safetensors``; with ``allow_file`` an encoder
    ``.safetensors`` file also passes), else one line saying what it is and what to pass instead."""
    d = Path(directory)
    kind = run_folder_kind(d)
    fix = "pass the --out folder of `latentgeo train ae`"
    what = f"{what} " if what else ""
    if kind == "missing":
        raise LatentgeoError(f"{what}'{d}' does not exist; {fix}")
    if kind == "file":
        if allow_file and d.suffix == ".safetensors":
            return d
        raise LatentgeoError(f"{what}'{d}' is not a folder; {fix}")
    if (d / "encoder.safetensors").exists():
        return d
    if kind == "autoencoder":
        raise LatentgeoError(f"{what}'{d}' holds an unfinished `latentgeo train ae` run (no encoder.safetensors "
                             "yet); finish it with `latentgeo train ae ... --resume` (same settings and --out) or "
                             f"{fix}")
    if kind in ("diffusion", "flow"):
        raise LatentgeoError(f"{what}'{d}' is a {kind} run, not an autoencoder; {fix}")
    if kind == "training":
        raise LatentgeoError(f"{what}'{d}' is a training run of another kind, not an autoencoder; {fix}")
    raise LatentgeoError(f"{what}'{d}' holds no autoencoder (no encoder.safetensors); {fix}")


def _ckpt_path(d: Union[str, Path], stem: str) -> Path:
    d = Path(d)
    if d.is_file():
        return d
    p = d / f"{stem}.safetensors"
    if not p.exists():
        kind = run_folder_kind(d)
        if kind in ("diffusion", "flow"):
            raise LatentgeoError(f"'{d}' is a {kind} run, not an autoencoder (no {p.name}); pass the --out folder "
                                 "of `latentgeo train ae`")
        raise LatentgeoError(f"no {stem} checkpoint in '{d}' (expected {p.name}); train one with "
                             "`latentgeo train ae --out DIR` or pass the right folder")
    return p


def load_encoder(directory: Union[str, Path]) -> Encoder:
    """The trained encoder in ``directory`` (eval mode): ``enc(x) -> z = C (T(x) - m)``; ``enc.raw(x) -> T(x)``."""
    enc = ckpt_load(_ckpt_path(directory, "encoder"))
    if not isinstance(enc, Encoder):
        raise LatentgeoError(f"'{directory}' holds a {type(enc).__name__}, not a latentgeo Encoder; pass an "
                             "autoencoder folder")
    return enc.eval()


def load_decoder(directory: Union[str, Path]) -> Decoder:
    """The trained decoder in ``directory`` (eval mode), taking normalised latents."""
    dec = ckpt_load(_ckpt_path(directory, "decoder"))
    return dec.eval()
