"""Throughput of EDM training (through latentgeo.train.train_loop) and Heun sampling, MLP and U-Net.

Prints one JSON object and writes it to benchmarks/results/train_throughput.json. Samples/s for:
- train: optimiser steps x batch size / wall time, through the generic loop (EMA, grad clipping, per-step seeding)
  and, side by side, a bare PyTorch step (loss, backward, Adam) to show the loop's overhead;
- sample: generated samples / wall time for Heun with 32 steps (63 denoiser calls).
CPU always (``--threads``, default 1), CUDA when available. Usage: ``python benchmarks/train_throughput.py [--quick]``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from latentgeo.diffusion import EDMDenoiser, edm_loss, sample  # noqa: E402
from latentgeo.train import train_loop  # noqa: E402

CASES = {
    # name: (data shape, net kwargs, batch size, sample batch)
    "mlp_2d": ((2,), {"net": "mlp", "net_kwargs": {"in_dim": 2, "hidden": 256, "depth": 4}}, 512, 2048),
    "unet_28px": ((1, 28, 28), {"net": "unet", "net_kwargs": {"channels": 1, "base": 32}}, 64, 64),
}


def _sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()


def _bench_case(name, dev, steps, sample_reps):
    shape, kw, bs, sbs = CASES[name]
    torch.manual_seed(0)
    x = torch.randn(4096, *shape)
    den = EDMDenoiser(sigma_data=1.0, **kw)
    # warm-up (allocator, kernels)
    train_loop(den, edm_loss, x, steps=3, batch_size=bs, progress=False, device=dev, ema_decay=0.999)
    _sync(dev)
    t = time.perf_counter()
    train_loop(den, edm_loss, x, steps=steps, batch_size=bs, progress=False, device=dev, ema_decay=0.999,
               log_every=10 ** 9)
    _sync(dev)
    loop_sps = steps * bs / (time.perf_counter() - t)
    # bare step, same model and batch size
    den.to(dev).train()
    opt = torch.optim.Adam(den.parameters(), lr=1e-3)
    g = torch.Generator(dev).manual_seed(0)
    xb = x[:bs].to(dev)
    for _ in range(3):
        opt.zero_grad()
        edm_loss(den, xb, g).backward()
        opt.step()
    _sync(dev)
    t = time.perf_counter()
    for _ in range(steps):
        opt.zero_grad()
        edm_loss(den, xb, g).backward()
        opt.step()
    _sync(dev)
    bare_sps = steps * bs / (time.perf_counter() - t)
    den.eval()
    sample(den, (8, *shape), n_steps=2, generator=torch.Generator(dev).manual_seed(0), device=dev)
    _sync(dev)
    t = time.perf_counter()
    for r in range(sample_reps):
        sample(den, (sbs, *shape), n_steps=32, generator=torch.Generator(dev).manual_seed(r), device=dev)
    _sync(dev)
    samp_sps = sample_reps * sbs / (time.perf_counter() - t)
    n_params = sum(p.numel() for p in den.parameters())
    return {"params": n_params, "batch_size": bs, "train_steps_timed": steps,
            "train_samples_per_s": round(loop_sps, 1), "bare_step_samples_per_s": round(bare_sps, 1),
            "loop_over_bare_ratio": round(loop_sps / bare_sps, 3),
            "sample_batch": sbs, "sample_heun_steps": 32, "sample_samples_per_s": round(samp_sps, 2)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="fewer timed steps")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "train_throughput.json"))
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    steps = {"mlp_2d": 20 if a.quick else 100, "unet_28px": 3 if a.quick else 10}
    reps = {"mlp_2d": 1, "unet_28px": 1}
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    res = {}
    for dev in devices:
        res[dev.type] = {}
        for name in CASES:
            s = steps[name] * (20 if dev.type == "cuda" else 1)
            res[dev.type][name] = _bench_case(name, dev, s, reps[name])
    ratios = {"unet_over_mlp_train_samples_per_s": {d: round(r["unet_28px"]["train_samples_per_s"]
                                                             / r["mlp_2d"]["train_samples_per_s"], 5)
                                                    for d, r in res.items()}}
    if "cuda" in res:
        ratios["cuda_over_cpu"] = {n: {k: round(res["cuda"][n][k] / res["cpu"][n][k], 2)
                                       for k in ("train_samples_per_s", "sample_samples_per_s")} for n in CASES}
    out = {
        "benchmark": "train_throughput",
        "machine": {"node": platform.node(), "processor": platform.processor() or platform.machine(),
                    "cpu_count": os.cpu_count(), "torch_threads": a.threads, "torch": torch.__version__,
                    "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
                    "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
                    "note": "shared machine: other jobs were running; numbers are indicative, compare ratios"},
        "results": res,
        "ratios": ratios,
    }
    text = json.dumps(out, indent=2)
    print(text)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    from latentgeo.checkpoint import atomic_write_json

    atomic_write_json(a.out, out)


if __name__ == "__main__":
    main()
