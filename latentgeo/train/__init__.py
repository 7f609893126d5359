"""One training loop for every model in latentgeo (denoisers, flows, GPE encoders/decoders, VAEs).

API
---
``train_loop(model, loss_fn, data, *, steps, batch_size=256, lr=1e-3, out=None, resume=False, seed=0,
grad_clip=1.0, ema_decay=0.999, weight_decay=0.0, betas=(0.9, 0.999), warmup_steps=0, log_every=100,
ckpt_every=1000, progress=True, device="auto", config=None, save_extra=None, optimizer=None,
description="train") -> TrainResult``

- ``loss_fn(model, batch, generator) -> loss`` or ``(loss, {"name": float, ...})``: ``loss`` a scalar tensor;
  draw all randomness from ``generator`` (a ``torch.Generator`` on the training device) so runs are reproducible.
  ``model`` is the module you passed (never a wrapper), so calling its submodules / methods is fine.
- ``data``: a tensor / ndarray ``[N, ...]``, a tuple of them (same first dim; the batch is then a tuple), or a
  callable ``data(batch_size, generator) -> batch`` (tensor, tuple or dict of tensors). Batches are drawn i.i.d.
  with replacement (``torch.randint``). Floating arrays are cast to the model's dtype; NaN/inf raise.
- Optimiser: Adam(lr, betas, weight_decay) by default, or ``optimizer(params) -> torch.optim.Optimizer``.
  ``warmup_steps`` ramps the lr linearly; ``grad_clip`` clips the global grad norm (None/0 disables).
- ``ema_decay``: keeps an EMA copy of the weights (:class:`latentgeo.train.EMA`), returned as ``result.ema``.
- ``out``: folder receiving ``config.json`` (run settings + your ``config`` dict), ``metrics.jsonl`` (one JSON
  line per ``log_every`` steps: step, loss, lr, it_per_s, time_s, your metrics), and every ``ckpt_every`` steps
  and at the end: ``model.safetensors`` / ``ema.safetensors`` (via :func:`latentgeo.checkpoint.save`, with
  ``save_extra`` + step in their ``extra``; rebuild with :func:`latentgeo.checkpoint.load`) and
  ``state.safetensors`` (step, weights, optimiser and EMA state). All files are written atomically.
- ``resume=True`` continues from ``out/state.safetensors`` and gives bit-identical final weights to an
  uninterrupted run: each step's randomness (batch indices, ``generator``, torch's global RNG for dropout) is
  seeded from ``(seed, step, rank)``, so no RNG state has to be carried. ``steps`` is the TOTAL step count, so
  resuming with a larger ``steps`` extends a finished run. Without ``resume`` an existing run in ``out`` is an error.
- Devices: ``device="auto"`` uses CUDA when available. Multi-process data parallel: launch the same script with
  ``torchrun --nproc_per_node=K``; the loop sees ``WORLD_SIZE > 1``, initialises torch.distributed (nccl on GPU,
  gloo on CPU), broadcasts rank 0's weights, gives each rank a ``batch_size / K`` slice of the same global batch
  and averages gradients with one all-reduce per step (what DDP does) — so K processes follow the same
  trajectory as one process on the combined batch, up to float summation order (the loss noise differs per rank).
  Only rank 0 writes files. A group created by the loop is destroyed when it returns.
- Progress: a rich bar (loss, it/s, elapsed, ETA) when ``progress=True`` on rank 0.

``TrainResult``: ``.model`` (raw weights, eval mode), ``.ema`` (EMA module or None), ``.best_model``,
``.step``, ``.metrics`` (list of dicts), ``.out``.

Example::

    from latentgeo.train import train_loop
    res = train_loop(ae, lambda m, x, g: ((m(x) - x) ** 2).mean(), x_train, steps=5000, out="runs/ae")
"""
from latentgeo.train.ema import EMA
from latentgeo.train.loop import TrainResult, dist_info, load_trained, resolve_device, train_loop

__all__ = ["train_loop", "TrainResult", "resolve_device", "dist_info", "load_trained", "EMA"]
