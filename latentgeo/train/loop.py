"""The generic training loop (see the package docstring of :mod:`latentgeo.train` for the API)."""
from __future__ import annotations

import contextlib
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn

from latentgeo import checkpoint as ckpt
from latentgeo.errors import LatentgeoError, check_choice
from latentgeo.runfolder import RunLock, check_resume_config

__all__ = ["train_loop", "TrainResult", "resolve_device", "dist_info", "load_trained", "cosine_schedule"]

_STATE = "state.safetensors"


@dataclass
class TrainResult:
    """What :func:`train_loop` returns. ``model`` holds the raw (last-step) weights, ``ema`` the averaged copy."""

    model: nn.Module
    ema: Optional[nn.Module]
    step: int
    metrics: List[Dict[str, Any]] = field(default_factory=list)
    out: Optional[Path] = None
    #: why the run ended: ``"steps"`` (all steps done), ``"stop_fn"`` (early stop) or ``"budget"`` (time spent)
    stopped: str = "steps"
    #: seconds spent in training steps on the run's clock (``clock``), summed over resumes
    train_s: float = 0.0

    @property
    def best_model(self) -> nn.Module:
        """The EMA model if EMA was used, else the raw model."""
        return self.ema if self.ema is not None else self.model


def load_trained(path: Union[str, os.PathLike], ema: bool = True, device: str = "cpu",
                 command: str = "latentgeo train") -> nn.Module:
    """The model a :func:`train_loop` run saved: ``ema.safetensors`` (or ``model.safetensors`` with ``ema=False``,
    or when no EMA was kept) from a run folder, or a checkpoint file; eval mode, parameters frozen. ``command``
    names the training command in the error for an empty folder."""
    p = Path(path)
    if p.is_dir():
        cand = [p / "ema.safetensors", p / "model.safetensors"] if ema else [p / "model.safetensors"]
        f = next((c for c in cand if c.exists()), None)
        if f is None:
            raise LatentgeoError(f"'{p}' holds no trained model (no ema.safetensors or model.safetensors); "
                                 f"train one with `{command} --out DIR`")
    elif p.exists() or p.with_name(p.name + ".safetensors").exists():
        f = p
    else:
        raise LatentgeoError(f"'{p}' does not exist; pass a training folder or a .safetensors checkpoint")
    model = ckpt.load(f, map_location=device)
    if isinstance(model, nn.Module):
        model.eval()
        for q in model.parameters():
            q.requires_grad_(False)
    return model


def resolve_device(device: Union[str, torch.device, None] = "auto") -> torch.device:
    """``"auto"`` -> CUDA (the local rank's GPU under torchrun) if available, else CPU."""
    if device is None or str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        return torch.device("cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise LatentgeoError(f"device '{device}' was requested but CUDA is not available; use --device cpu")
    return dev


def dist_info() -> Tuple[int, int]:
    """``(rank, world_size)``; ``(0, 1)`` outside torch.distributed."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _maybe_init_dist(device: torch.device) -> bool:
    """Initialise torch.distributed from torchrun's env (WORLD_SIZE > 1); True if we created the group."""
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return False
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend=backend)
    return True


def _seed_for(seed: int, step: int, stream: int) -> int:
    # Counter-based seeding: every step's randomness is a pure function of (seed, step, stream), so resuming at
    # any step reproduces the uninterrupted run without storing generator states. Stream 0 = data indices
    # (shared by all ranks), 1 + rank = the rank's loss noise, 1_000_003 + rank = torch's global RNG (dropout).
    return (int(seed) * 1_000_003_339 + int(step) * 7_919 + int(stream) * 104_729) % (2 ** 63 - 1)


class _Data:
    """Uniform access to a tensor / tuple of tensors / callable data source; draws GLOBAL batches."""

    def __init__(self, data: Any, device: torch.device, dtype: torch.dtype):
        self.fn = None
        if callable(data) and not isinstance(data, (torch.Tensor, np.ndarray)):
            self.fn = data
            self.arrays = None
            return
        arrays = list(data) if isinstance(data, (tuple, list)) else [data]
        out = []
        for a in arrays:
            t = torch.as_tensor(a)
            if t.is_floating_point():
                if not bool(torch.isfinite(t).all()):
                    raise LatentgeoError("training data contains NaN or inf values; clean the data before training")
                t = t.to(dtype)
            # Keep the data on the accelerator when it is small enough: indexing there avoids a host copy per step.
            if device.type != "cpu" and t.numel() * t.element_size() < 2 ** 30:
                t = t.to(device)
            out.append(t)
        if not out or out[0].ndim == 0 or out[0].shape[0] == 0:
            raise LatentgeoError("training data is empty; pass at least one sample")
        n = out[0].shape[0]
        if any(t.shape[0] != n for t in out):
            raise LatentgeoError(f"all training arrays must have the same number of samples (first dimension), got "
                                 f"{[int(t.shape[0]) for t in out]}; pass arrays with one row per sample each")
        self.arrays = out
        self.n = n
        self.single = not isinstance(data, (tuple, list))

    def batch(self, batch_size: int, gen: torch.Generator, rank: int, world: int, device: torch.device):
        bl = batch_size // world
        if self.fn is not None:
            b = self.fn(batch_size, gen)
            return _slice_to(b, rank * bl, (rank + 1) * bl, device)
        idx = torch.randint(self.n, (batch_size,), generator=gen)[rank * bl:(rank + 1) * bl]
        parts = [t[idx.to(t.device)].to(device, non_blocking=True) for t in self.arrays]
        return parts[0] if self.single else tuple(parts)


def _slice_to(b: Any, lo: int, hi: int, device: torch.device) -> Any:
    if isinstance(b, torch.Tensor):
        return b[lo:hi].to(device)
    if isinstance(b, (tuple, list)):
        return type(b)(_slice_to(v, lo, hi, device) for v in b)
    if isinstance(b, dict):
        return {k: _slice_to(v, lo, hi, device) for k, v in b.items()}
    return b


def _allreduce_grads(params: Sequence[nn.Parameter], world: int) -> None:
    """Average gradients over ranks (what DDP does), with one flat all-reduce."""
    import torch.distributed as dist

    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= world
    off = 0
    for p, g in zip(params, grads):
        n = g.numel()
        p.grad = flat[off:off + n].view_as(p).clone()
        off += n


def _broadcast_module(model: nn.Module) -> None:
    import torch.distributed as dist

    with torch.no_grad():
        for t in list(model.parameters()) + list(model.buffers()):
            dist.broadcast(t.data, src=0)


def _save_weights(module: nn.Module, path: Path, extra: Dict[str, Any]) -> None:
    try:
        cfg = ckpt.module_config(module)
    except LatentgeoError:
        cfg = {}  # unregistered user module: weights still saved; rebuilding needs the class registered
    ckpt.save(module, path, config=cfg, extra=extra)


def _jsonable(d: Dict[str, Any]) -> Dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, torch.Tensor) and v.numel() == 1:
            v = v.item()
        if isinstance(v, (np.floating, np.integer)):
            v = v.item()
        out[k] = v
    return out


def train_loop(model: nn.Module, loss_fn: Callable, data: Any, *, steps: int, batch_size: int = 256,
               lr: float = 1e-3, out: Union[str, os.PathLike, None] = None, resume: bool = False, seed: int = 0,
               grad_clip: Optional[float] = 1.0, ema_decay: Optional[float] = 0.999, weight_decay: float = 0.0,
               betas: Tuple[float, float] = (0.9, 0.999), warmup_steps: int = 0, log_every: int = 100,
               ckpt_every: int = 1000, progress: bool = True, device: Union[str, torch.device, None] = "auto",
               config: Optional[Dict[str, Any]] = None, save_extra: Optional[Dict[str, Any]] = None,
               optimizer: Optional[Callable[[Sequence[nn.Parameter]], torch.optim.Optimizer]] = None,
               description: str = "train",
               eval_fn: Optional[Callable[[nn.Module, int], Dict[str, Any]]] = None, eval_every: Optional[int] = None,
               stop_fn: Optional[Callable[[Dict[str, Any]], bool]] = None, budget_s: Optional[float] = None,
               clock: str = "wall", lr_schedule: Union[None, str, Callable[[float], float]] = None) -> TrainResult:
    """Train ``model`` by minimising ``loss_fn(model, batch, generator)``; see :mod:`latentgeo.train`."""
    if not (isinstance(steps, int) and steps >= 0):
        raise LatentgeoError(f"steps must be a non-negative integer, got {steps!r}; pass a whole number >= 0")
    if not (isinstance(batch_size, int) and batch_size > 0):
        raise LatentgeoError(f"batch size must be a positive integer, got {batch_size!r}; pass e.g. 256")
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise LatentgeoError(f"learning rate must be positive and finite, got {lr!r}; pass e.g. 1e-3")
    check_choice(clock, ("wall", "cpu"), "clock")
    if budget_s is not None and not (isinstance(budget_s, (int, float)) and not isinstance(budget_s, bool)
                                     and math.isfinite(budget_s) and budget_s > 0):
        raise LatentgeoError(f"time budget must be a positive number of seconds, got {budget_s!r}; "
                             "pass e.g. 60, or None for no limit")
    if eval_every is not None and not (isinstance(eval_every, int) and eval_every > 0):
        raise LatentgeoError(f"eval_every must be a positive integer, got {eval_every!r}; "
                             "pass the number of steps between evaluations, or None")
    sched = _schedule(lr_schedule)
    hooks = _Hooks(eval_fn, eval_every or max(1, int(log_every)), stop_fn, budget_s, clock, sched,
                   _schedule_name(lr_schedule))
    dev = resolve_device(device)
    created = _maybe_init_dist(dev)
    rank, world = dist_info()
    try:
        if batch_size % world:
            raise LatentgeoError(f"batch size {batch_size} is not divisible by the {world} processes; "
                                 f"use a multiple of {world}")
        # One writer per run folder: rank 0 holds the folder's lock for the whole run (re-entrant, so a command
        # that already holds it can call this).
        lock = RunLock(out) if (out is not None and rank == 0) else contextlib.nullcontext()
        with lock:
            res = _run(model, loss_fn, data, steps, batch_size, lr, out, resume, seed, grad_clip, ema_decay,
                       weight_decay, betas, warmup_steps, max(1, int(log_every)), max(1, int(ckpt_every)), progress,
                       dev, config, save_extra, optimizer, description, rank, world, hooks)
        if world > 1:  # every rank waits for rank 0's last checkpoint before returning / tearing down
            import torch.distributed as dist

            dist.barrier()
        return res
    finally:
        if created:
            import torch.distributed as dist

            dist.destroy_process_group()


def cosine_schedule(progress: float) -> float:
    """The ``"cosine"`` learning-rate factor: ``(1 + cos(pi p)) / 2`` for progress ``p`` clamped to [0, 1]."""
    p = min(1.0, max(0.0, float(progress)))
    return 0.5 * (1.0 + math.cos(math.pi * p))


def _schedule(s: Union[None, str, Callable[[float], float]]) -> Optional[Callable[[float], float]]:
    if s is None or callable(s):
        return s
    if not isinstance(s, str):
        raise LatentgeoError(f"lr schedule must be None, 'constant', 'cosine' or a callable, got {s!r}; "
                             "pass e.g. 'cosine'")
    check_choice(s, ("constant", "cosine"), "lr schedule")
    return cosine_schedule if s == "cosine" else None


def _schedule_name(s: Any) -> Optional[str]:
    if s is None or s == "constant":
        return None
    return s if isinstance(s, str) else f"callable:{getattr(s, '__qualname__', type(s).__qualname__)}"


def _timer(clock: str) -> Callable[[], float]:
    """The clock of the budget and of ``train_s``: wall (perf_counter) or this process's CPU time."""
    return time.process_time if clock == "cpu" else time.perf_counter


@dataclass
class _Hooks:
    eval_fn: Optional[Callable[[nn.Module, int], Dict[str, Any]]]
    eval_every: int
    stop_fn: Optional[Callable[[Dict[str, Any]], bool]]
    budget_s: Optional[float]
    clock: str
    sched: Optional[Callable[[float], float]]
    sched_name: Optional[str]


def _run(model, loss_fn, data, steps, batch_size, lr, out, resume, seed, grad_clip, ema_decay, weight_decay,
         betas, warmup_steps, log_every, ckpt_every, progress, dev, config, save_extra, optimizer, description,
         rank, world, hooks: _Hooks) -> TrainResult:
    from latentgeo.train.ema import EMA

    model.to(dev).train()
    p0 = next(model.parameters(), None)
    if p0 is None:
        raise LatentgeoError("the model has no parameters to train; pass an nn.Module with trainable weights")
    src = _Data(data, dev, p0.dtype)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = optimizer(params) if optimizer is not None else torch.optim.Adam(
        params, lr=lr, betas=tuple(betas), weight_decay=weight_decay)
    ema = EMA(model, ema_decay) if ema_decay else None
    out_p = Path(out) if out is not None else None
    start = 0
    train_s = 0.0  # seconds of training steps on hooks.clock (evaluation, logging and checkpoints excluded)
    stopped = ""  # "" while running; "steps" | "stop_fn" | "budget" once finished
    metrics: List[Dict[str, Any]] = []
    run_cfg = {"steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed, "grad_clip": grad_clip,
               "ema_decay": ema_decay, "weight_decay": weight_decay, "betas": list(betas),
               "warmup_steps": warmup_steps, "log_every": log_every, "ckpt_every": ckpt_every,
               "world_size": world, "device": str(dev), "model_class": type(model).__qualname__,
               "user": config or {}}
    # The hook settings are recorded only when used, so run folders written before they existed still resume.
    if hooks.eval_fn is not None:
        run_cfg["eval_every"] = hooks.eval_every
    if hooks.budget_s is not None:
        run_cfg.update(budget_s=hooks.budget_s, clock=hooks.clock)
    if hooks.sched_name is not None:
        run_cfg["lr_schedule"] = hooks.sched_name
    if out_p is not None:
        state_file = out_p / _STATE
        cfg_file = out_p / "config.json"
        if state_file.exists() and not resume:
            raise LatentgeoError(f"'{out_p}' already holds a training run; pass --resume (resume=True) to continue "
                                 "it or choose a new output folder")
        if cfg_file.exists() and not state_file.exists():  # a record without a checkpoint: only ours may be replaced
            old_cfg = ckpt.read_json(cfg_file, "run record")
            if isinstance(old_cfg, dict) and old_cfg.get("kind") not in (None, (config or {}).get("kind")):
                raise LatentgeoError(f"'{out_p}' holds a {old_cfg.get('kind')} run; choose a new --out (its "
                                     "config.json would be overwritten)")
            if isinstance(old_cfg, dict):
                _check_same_kind(old_cfg, run_cfg, out_p)
        if resume and state_file.exists():
            if cfg_file.exists():  # refuse before anything is loaded or written: the record must not change
                old_cfg = ckpt.read_json(cfg_file, "run record")
                if not isinstance(old_cfg, dict):
                    raise LatentgeoError(f"run record '{cfg_file}' is not a JSON object; restore it or start a new "
                                         "run folder")
                _check_same_kind(old_cfg, run_cfg, out_p)
                run_cfg = check_resume_config(old_cfg, run_cfg, out_p, extendable=("steps", "budget_s"))
            st = ckpt.load_state(state_file)
            try:
                model.load_state_dict(st["model"])
                opt.load_state_dict(st["optimizer"])
                if ema is not None and st.get("ema") is not None:
                    ema.load_state_dict(st["ema"])
            except (RuntimeError, KeyError, ValueError) as exc:
                raise LatentgeoError(f"cannot resume from '{state_file}': it was written for a different model or "
                                     f"optimiser ({str(exc).splitlines()[0]}); use a new output folder") from exc
            start = int(st["step"])
            train_s = float(st.get("train_s", 0.0))
            if st.get("stopped") == "stop_fn":  # an early-stopped run is finished: resuming trains no further
                stopped = "stop_fn"
            mfile = out_p / "metrics.jsonl"
            if mfile.exists():  # drop lines logged after the checkpoint: they will be logged again
                for i, line in enumerate(mfile.read_text(errors="replace").splitlines()):
                    if not line.strip():
                        continue
                    try:
                        rec = json.loads(line)
                    except (json.JSONDecodeError, RecursionError):
                        raise LatentgeoError(f"'{mfile}' line {i + 1} is not valid JSON; delete the damaged lines "
                                             "(or the file: it is only the log) and resume again") from None
                    if isinstance(rec, dict) and isinstance(rec.get("step", 0), (int, float)) \
                            and rec.get("step", 0) <= start:
                        metrics.append(rec)
        if rank == 0:
            ckpt.atomic_write_json(out_p / "config.json", run_cfg)
    if world > 1:
        _broadcast_module(model)
        if ema is not None:
            _broadcast_module(ema.module)

    data_gen = torch.Generator("cpu")
    noise_gen = torch.Generator(dev)
    timer = _timer(hooks.clock)
    t0 = time.perf_counter()
    t_last, s_last = t0, start
    acc_loss = torch.zeros((), device=dev, dtype=torch.float64)
    acc_extra: Dict[str, float] = {}
    n_acc = 0
    budget = hooks.budget_s
    bar = _Bar(progress and rank == 0, description, steps, start, budget, train_s)

    def checkpoint(step: int) -> None:
        if out_p is None or rank != 0:
            return
        extra = dict(save_extra or {}, step=step)
        ckpt.save_state(out_p / _STATE, {
            "step": step, "model": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
            "optimizer": opt.state_dict(), "ema": ema.state_dict() if ema is not None else None,
            "train_s": train_s, "stopped": stopped})
        _save_weights(model, out_p / "model.safetensors", extra)
        if ema is not None:
            _save_weights(ema.module, out_p / "ema.safetensors", extra)

    def write_metrics() -> None:
        if out_p is not None and rank == 0:
            text = "".join(json.dumps(m) + "\n" for m in metrics)
            ckpt.atomic_write_bytes(out_p / "metrics.jsonl", text.encode())

    def evaluate(step: int) -> Dict[str, Any]:
        was = model.training
        model.eval()
        try:
            with torch.no_grad():
                got = hooks.eval_fn(model, step)
        finally:
            model.train(was)
        if not isinstance(got, dict):
            raise LatentgeoError(f"eval_fn must return a dict of metrics, got {type(got).__name__}; "
                             "make it return e.g. {'loss': value}")
        return _jsonable(got)

    def wants_stop(rec: Dict[str, Any]) -> bool:
        """``stop_fn(rec)``, decided by rank 0 for every rank."""
        flag = bool(hooks.stop_fn(rec)) if hooks.stop_fn is not None else False
        if world > 1:
            import torch.distributed as dist

            t = torch.tensor([1.0 if flag else 0.0], device=dev)
            dist.broadcast(t, src=0)
            flag = bool(t.item() > 0.5)
        return flag

    def lr_factor(step: int) -> float:
        f = min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0
        if hooks.sched is not None:
            # progress of the run: its step fraction, or (with a budget) its time fraction if that is further on
            prog = step / steps if steps > 0 else 1.0
            if budget is not None:
                prog = max(prog, train_s / budget)
            g = float(hooks.sched(min(1.0, max(0.0, prog))))
            if not (math.isfinite(g) and g >= 0):
                raise LatentgeoError(f"the lr schedule returned {g!r} at progress {prog:.4g}; it must return a "
                                     "finite factor >= 0")
            f *= g
        return f

    if stopped:
        pass
    elif budget is not None and train_s >= budget:  # the budget was spent before this resume: nothing to do
        stopped = "budget"
    elif hooks.eval_fn is not None and start == 0 and not any(m.get("step") == 0 for m in metrics):
        rec = {"step": 0, "train_s": 0.0}
        rec.update(evaluate(0))
        metrics.append(rec)
        if wants_stop(rec):
            stopped = rec["stopped"] = "stop_fn"
        write_metrics()
        if stopped:
            checkpoint(0)
    step, factor = start, 1.0
    with bar:
        while not stopped and step < steps:
            t_step = timer()
            data_gen.manual_seed(_seed_for(seed, step, 0))
            noise_gen.manual_seed(_seed_for(seed, step, 1 + rank))
            torch.manual_seed(_seed_for(seed, step, 1_000_003 + rank))
            factor = lr_factor(step)
            for g in opt.param_groups:
                g["lr"] = lr * factor
            batch = src.batch(batch_size, data_gen, rank, world, dev)
            if world > 1 and any(True for _ in model.buffers()):
                _broadcast_buffers(model)
            res = loss_fn(model, batch, noise_gen)
            loss, extra = (res if isinstance(res, tuple) else (res, {}))
            if not isinstance(loss, torch.Tensor) or loss.ndim != 0:
                raise LatentgeoError("loss_fn must return a scalar tensor (or (scalar, dict)); reduce it with .mean()")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if world > 1:
                _allreduce_grads(params, world)
            if grad_clip:
                torch.nn.utils.clip_grad_norm_(params, grad_clip)
            opt.step()
            if ema is not None:
                ema.update(model)
            acc_loss += loss.detach().double()
            for k, v in extra.items():
                acc_extra[k] = acc_extra.get(k, 0.0) + float(v)
            n_acc += 1
            train_s += timer() - t_step
            if world > 1 and budget is not None:  # rank 0's clock decides the schedule and the stop for all ranks
                import torch.distributed as dist

                t = torch.tensor([train_s], device=dev, dtype=torch.float64)
                dist.broadcast(t, src=0)
                train_s = float(t.item())
            step += 1
            done = step
            out_of_time = budget is not None and train_s >= budget
            final = done == steps or out_of_time
            at_eval = hooks.eval_fn is not None and (done % hooks.eval_every == 0 or final)
            if done % log_every == 0 or final or at_eval:
                tot = acc_loss.clone()
                if world > 1:
                    import torch.distributed as dist

                    dist.all_reduce(tot)
                    tot /= world
                mean_loss = float(tot) / n_acc
                if not math.isfinite(mean_loss):
                    raise LatentgeoError(f"training loss became {mean_loss} by step {done}; lower the learning rate, "
                                         "check the data for outliers, or use gradient clipping")
                now = time.perf_counter()
                rec = {"step": done, "loss": mean_loss, "lr": lr * factor,
                       "it_per_s": (done - s_last) / max(now - t_last, 1e-9), "time_s": now - t0,
                       "train_s": train_s}
                rec.update(_jsonable({k: v / n_acc for k, v in acc_extra.items()}))
                if at_eval:
                    rec.update(evaluate(done))
                if (at_eval or hooks.eval_fn is None) and hooks.stop_fn is not None and wants_stop(rec):
                    stopped = rec["stopped"] = "stop_fn"
                elif out_of_time and done < steps:
                    stopped = rec["stopped"] = "budget"
                metrics.append(rec)
                write_metrics()
                bar.set_loss(mean_loss)
                acc_loss.zero_()
                acc_extra.clear()
                n_acc = 0
                t_last, s_last = time.perf_counter(), done
            if done % ckpt_every == 0 or final or stopped:
                checkpoint(done)
            bar.advance(train_s)
    if not stopped:
        stopped = "steps"
    if steps <= start and out_p is not None and rank == 0 and not (out_p / _STATE).exists():
        checkpoint(start)
    model.eval()
    return TrainResult(model=model, ema=ema.module.eval() if ema is not None else None, step=max(start, step),
                       metrics=metrics, out=out_p, stopped=stopped, train_s=train_s)


def _check_same_kind(old: Dict[str, Any], new: Dict[str, Any], where: Path) -> None:
    """A resume must continue the same kind of model (a flow never overwrites a diffusion run, or the reverse)."""
    ok, nk = (old.get("user") or {}).get("kind"), (new.get("user") or {}).get("kind")
    oc, nc = old.get("model_class"), new.get("model_class")
    if (ok and nk and ok != nk) or (oc and nc and oc != nc):
        raise LatentgeoError(f"'{where}' holds a {ok or oc} run, not a {nk or nc}; resume it with the command that "
                             f"started it, or choose a new --out for the {nk or nc}")


def _broadcast_buffers(model: nn.Module) -> None:
    import torch.distributed as dist

    with torch.no_grad():
        for b in model.buffers():
            dist.broadcast(b.data, src=0)


class _Bar:
    """A rich progress bar (loss, it/s, ETA), or nothing. With a time budget it counts seconds of the budget."""

    def __init__(self, enabled: bool, description: str, total: int, start: int,
                 budget: Optional[float] = None, spent: float = 0.0):
        self.enabled = enabled
        self.budget = budget
        if enabled:
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                       TimeRemainingColumn)

            self.p = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                              TextColumn("loss {task.fields[loss]}"),
                              TextColumn("{task.fields[its]} it/s"), TimeElapsedColumn(), TextColumn("ETA"),
                              TimeRemainingColumn(), transient=False)
            if budget is not None:
                self.task = self.p.add_task(f"{description} (s of budget)", total=float(budget),
                                            completed=min(spent, budget), loss="-", its="-")
            else:
                self.task = self.p.add_task(description, total=total, completed=start, loss="-", its="-")
            self._t = time.perf_counter()
            self._n = 0

    def __enter__(self):
        if self.enabled:
            self.p.__enter__()
        return self

    def __exit__(self, *a):
        if self.enabled:
            self.p.__exit__(*a)

    def advance(self, spent: float = 0.0) -> None:
        if self.enabled:
            self._n += 1
            now = time.perf_counter()
            if now - self._t > 0.5:
                self.p.update(self.task, its=f"{self._n / (now - self._t):.1f}")
                self._t, self._n = now, 0
            if self.budget is not None:
                self.p.update(self.task, completed=min(spent, self.budget))
            else:
                self.p.advance(self.task)

    def set_loss(self, v: float) -> None:
        if self.enabled:
            self.p.update(self.task, loss=f"{v:.4g}")
