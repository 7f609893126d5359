"""One training loop for every model in latentgeo (denoisers, flows, GPE encoders/decoders, VAEs).

API
---
``train_loop(model, loss_fn, data, *, steps, batch_size=256, lr=1e-3, out=None, resume=False, seed=0,
grad_clip=1.0, ema_decay=0.999, weight_decay=0.0, betas=(0.9, 0.999), warmup_steps=0, log_every=100,
ckpt_every=1000, progress=True, device="auto", config=None, save_extra=None, optimizer=None,
description="train", eval_fn=None, eval_every=None, stop_fn=None, budget_s=None, clock="wall",
lr_schedule=None) -> TrainResult``

- ``loss_fn(model, batch, generator) -> loss`` or ``(loss, {"name": float, ...})``: ``loss`` a scalar tensor;
  draw all randomness from ``generator`` (a ``torch.Generator`` on the training device) so runs are reproducible.
  ``model`` is the module you passed (never a wrapper), so calling its submodules / methods is fine.
- ``data``: a tensor / ndarray ``[N, ...]``, a tuple of them (same first dim; the batch is then a tuple), or a
  callable ``data(batch_size, generator) -> batch`` (tensor, tuple or dict of tensors). Batches are drawn i.i.d.
  with replacement (``torch.randint``). Floating arrays are cast to the model's dtype; NaN/inf raise.
- Optimiser: Adam(lr, betas, weight_decay) by default, or ``optimizer(params) -> torch.optim.Optimizer``.
  ``warmup_steps`` ramps the lr linearly; ``grad_clip`` clips the global grad norm (None/0 disables).
- ``lr_schedule``: ``None`` / ``"constant"``, ``"cosine"`` (factor ``(1 + cos(pi p)) / 2``, see
  :func:`cosine_schedule`) or a callable ``f(p) -> factor``, applied on top of the warmup, where the progress
  ``p`` in [0, 1] is ``step / steps`` (``step`` = updates done before this one), or with a ``budget_s``
  ``max(step / steps, train_s / budget_s)``: the schedule then ends where the run will, by steps or by time.
- Hooks: ``eval_fn(model, step) -> {"name": value}`` runs (model in eval mode, no grad; the raw model, not the
  EMA) at step 0 of a fresh run, every ``eval_every`` steps (default ``log_every``) and at the last step; its
  values join that step's ``metrics.jsonl`` record (a record is written at every evaluation). ``stop_fn(record)
  -> bool`` sees every evaluation record (every log record when there is no ``eval_fn``) and ends the run early
  when true: the record gets ``"stopped": "stop_fn"``, a checkpoint is written at that step, and resuming that
  folder trains no further (whatever ``steps``). Under torchrun ``eval_fn`` runs on every rank and rank 0's
  ``stop_fn`` decides.
- Budgets: ``budget_s`` stops the run once its training steps have used that many seconds of ``clock``:
  ``"wall"`` (``time.perf_counter``) or ``"cpu"`` (``time.process_time``, this process's CPU time: steadier on a
  loaded machine). Evaluation, logging and checkpoints are not counted. The last record gets ``"stopped":
  "budget"``; the spent time (``train_s``, in every record and in the state) carries over a resume, so resuming
  with the same budget trains no further and a larger ``budget_s`` extends the run. ``steps`` still caps the run
  (pass a large value for a budget-only run).
- ``ema_decay``: keeps an EMA copy of the weights (:class:`latentgeo.train.EMA`), returned as ``result.ema``.
- ``out``: folder receiving ``config.json`` (run settings + your ``config`` dict), ``metrics.jsonl`` (one JSON
  line per ``log_every`` steps: step, loss, lr, it_per_s, time_s, train_s, your metrics), and every ``ckpt_every`` steps
  and at the end: ``model.safetensors`` / ``ema.safetensors`` (via :func:`latentgeo.checkpoint.save`, with
  ``save_extra`` + step in their ``extra``; rebuild with :func:`latentgeo.checkpoint.load`) and
  ``state.safetensors`` (step, weights, optimiser and EMA state). All files are written atomically.
- ``resume=True`` continues from ``out/state.safetensors`` and gives bit-identical final weights to an
  uninterrupted run: each step's randomness (batch indices, ``generator``, torch's global RNG for dropout) is
  seeded from ``(seed, step, rank)``, so no RNG state has to be carried. ``steps`` is the TOTAL step count, so
  resuming with a larger ``steps`` extends a finished run. Without ``resume`` an existing run in ``out`` is an error.
  Resuming refuses changed settings (:func:`latentgeo.runfolder.check_resume_config`; ``steps`` and
  ``budget_s`` may grow). Exactness holds for step-based runs (with or without ``eval_fn`` / ``stop_fn``); a run
  with a ``budget_s`` depends on the clock (where it stops, and the lr of a time-based schedule), so it is NOT
  bit-reproducible, on resume or otherwise.
- Devices: ``device="auto"`` uses CUDA when available. Multi-process data parallel: launch the same script with
  ``torchrun --nproc_per_node=K``; the loop sees ``WORLD_SIZE > 1``, initialises torch.distributed (nccl on GPU,
  gloo on CPU), broadcasts rank 0's weights, gives each rank a ``batch_size / K`` slice of the same global batch
  and averages gradients with one all-reduce per step (what DDP does) — so K processes follow the same
  trajectory as one process on the combined batch, up to float summation order (the loss noise differs per rank).
  Only rank 0 writes files. A group created by the loop is destroyed when it returns.
- Progress: a rich bar (loss, it/s, elapsed, ETA) when ``progress=True`` on rank 0.

``TrainResult``: ``.model`` (raw weights, eval mode), ``.ema`` (EMA module or None), ``.best_model``,
``.step``, ``.metrics`` (list of dicts), ``.out``, ``.stopped`` (``"steps"`` | ``"stop_fn"`` | ``"budget"``),
``.train_s`` (training seconds on ``clock``).

Example::

    from latentgeo.train import train_loop
    res = train_loop(ae, lambda m, x, g: ((m(x) - x) ** 2).mean(), x_train, steps=5000, out="runs/ae")
    # held-out early stop, 10 CPU-minutes at most, cosine lr over whichever limit comes first
    res = train_loop(ae, loss, x_train, steps=10**9, budget_s=600, clock="cpu", lr_schedule="cosine",
                     eval_fn=lambda m, step: {"val": float(((m(x_val) - x_val) ** 2).mean())}, eval_every=200,
                     stop_fn=lambda rec: rec["val"] < 1e-3)
"""
from latentgeo.train.ema import EMA
from latentgeo.train.loop import TrainResult, cosine_schedule, dist_info, load_trained, resolve_device, train_loop

__all__ = ["train_loop", "TrainResult", "resolve_device", "dist_info", "load_trained", "EMA", "cosine_schedule"]
