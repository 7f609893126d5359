"""Cost of a full FI/FIR/MMSE-rate curve relative to plain denoiser forward passes.

For a curve over S noise levels, N samples and P probes, ``fisher_curves`` makes S x N x P JVP rows. The baseline is
the same number of plain forward passes (``torch.no_grad``, same batch size): the ratio is the price of the JVPs and
the bookkeeping (goal <= 3). Denoisers: EDM-preconditioned MLP (vectors) and the project's UNet (images), CPU always,
CUDA when available. Prints JSON and writes ``benchmarks/results/fisher_cost.json`` (or ``--out``).

    OMP_NUM_THREADS=1 python benchmarks/fisher_cost.py [--quick] [--device cpu|cuda|all] [--out PATH]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch


def _machine(device: str) -> dict:
    info = {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "device": device}
    try:
        with open("/proc/cpuinfo") as f:
            info["cpu"] = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "?")
    except OSError:
        pass
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def _time(fn, device, repeats):
    fn()  # warm-up (allocations, cudnn autotune)
    _sync(device)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - t)
    return best


def bench_case(name, den, x0, sigmas, n_probes, batch_size, device, repeats, dtype=None):
    from latentgeo.fisher import fisher_curves

    import copy

    den = copy.deepcopy(den).to(device=device, dtype=dtype or torch.float32).eval()
    x0 = x0.to(device=device, dtype=dtype or torch.float32)  # the baseline forwards run in the same dtype
    N, P, S = x0.shape[0], n_probes, len(sigmas)
    rows = N * P

    def curve(use_score="auto"):
        return fisher_curves(den, x0, sigmas, n_probes=P, batch_size=batch_size, generator=None,
                             use_score=use_score, dtype=dtype)

    xs = x0.repeat(P, *([1] * (x0.ndim - 1)))

    def forwards():
        with torch.no_grad():
            for s in sigmas:
                for b in range(0, rows, batch_size):
                    xb = xs[b:b + batch_size]
                    den(xb + s * torch.randn_like(xb), torch.full((xb.shape[0],), float(s), device=device))

    t_fwd = _time(forwards, device, repeats)
    t_curve = _time(curve, device, repeats)
    t_plain = _time(lambda: curve(False), device, repeats)
    t_stack = _time(lambda: fisher_curves(den, x0, sigmas, n_probes=P, batch_size=batch_size, probe_batching="stack"),
                    device, repeats)
    return {"case": name, "device": device, "n_samples": N, "n_probes": P, "n_sigmas": S, "batch_size": batch_size,
            "dim": int(x0[0].numel()), "dtype": str(dtype or x0.dtype).replace("torch.", ""),
            "forward_passes": S * rows, "t_forward_s": t_fwd, "t_curve_s": t_curve, "t_curve_plain_jvp_s": t_plain,
            "t_curve_stacked_probes_s": t_stack,
            "ratio_curve_over_forward": t_curve / t_fwd, "ratio_plain_jvp_over_forward": t_plain / t_fwd,
            "ratio_stacked_probes_over_forward": t_stack / t_fwd}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller sizes (smoke run)")
    ap.add_argument("--device", default="all", choices=["cpu", "cuda", "all"])
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "fisher_cost.json"))
    args = ap.parse_args(argv)
    if "OMP_NUM_THREADS" in os.environ:
        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    from latentgeo.diffusion import EDMDenoiser

    devices = ["cpu"] if args.device == "cpu" else (["cuda"] if args.device == "cuda" else ["cpu"])
    if args.device == "all" and torch.cuda.is_available():
        devices.append("cuda")
    if "cuda" in devices and not torch.cuda.is_available():
        raise SystemExit("CUDA requested but not available")
    q = args.quick
    results = []
    for dev in devices:
        big = dev == "cuda"
        torch.manual_seed(0)
        sig = torch.logspace(-2, 1.9, 4 if q else 8).tolist()
        mlp = EDMDenoiser("mlp", sigma_data=0.5, net_kwargs={"in_dim": 64, "hidden": 256, "depth": 3})
        n = 64 if q else (1024 if big else 256)
        results.append(bench_case("edm-mlp D=64 (digits size)", mlp, torch.randn(n, 64), sig, 4, 512 if not big else 4096,
                                  dev, 2 if q else 3))
        results.append(bench_case("edm-mlp D=64 float64", mlp, torch.randn(n, 64), sig, 4, 512 if not big else 4096,
                                  dev, 1 if q else 2, dtype=torch.float64))
        try:
            unet = EDMDenoiser("unet", sigma_data=0.5, net_kwargs={"channels": 1})
            n = 8 if q else (256 if big else 32)
            results.append(bench_case("edm-unet 1x28x28 (Fashion-MNIST size)", unet, torch.randn(n, 1, 28, 28), sig[:4], 4,
                                      64 if not big else 512, dev, 1 if q else 2))
        except Exception as exc:  # the UNet may not accept this config in every version: record why
            results.append({"case": "edm-unet 1x28x28", "device": dev, "skipped": f"{type(exc).__name__}: {exc}"})
    report = {"benchmark": "fisher_cost", "goal": "ratio_curve_over_forward <= 3",
              "machine": _machine(devices[-1]),
              "note": "CPU numbers measured on a shared machine (2 cores, several other jobs running); timings are "
                      "best-of-N wall clock and the ratios are more reliable than the absolute times. "
                      "'curve': default path (probes vmapped over one primal pass, analytic EDM residual JVP); "
                      "'plain_jvp': JVP of D only; 'stacked_probes': probes stacked into the batch (no vmap).",
              "results": results}
    text = json.dumps(report, indent=2)
    print(text)
    out = Path(args.out)
    try:
        from latentgeo.checkpoint import atomic_write_json

        atomic_write_json(out, report)
    except ImportError:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")


if __name__ == "__main__":
    main()
