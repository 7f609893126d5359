"""Cost of the reverse-mode (double-VJP) JVP fallback relative to forward-mode JVP, measured side by side.

:func:`latentgeo.autodiff.jvp` falls back to ``J v = d/du <J^T u, v>`` (two reverse passes) where forward-mode AD is
missing (diffusers attention, ...). This measures, in one run and interleaved (so load changes hit both alike),
the time of the fallback and of ``torch.func.jvp`` on denoisers where both work, as a ratio (goal <= 2):

- ``jvp``: one JVP of a batch of rows (the penalties' pattern; the fallback runs on ``torch.autograd.grad``);
- ``vmap_probes``: P tangents per row under ``torch.func.vmap`` (the Fisher curves' pattern; ``torch.func.vjp``);
- ``fisher_curves``: a whole curve, ``latentgeo.autodiff.use_mode("reverse")`` against the default forward mode.

Denoisers: EDM-preconditioned MLP (vectors) and a tiny diffusers ``UNet2DModel`` with attention blocks, wrapped by
``DiffusersUNet`` (math attention processor, so forward mode works). A last row times the same UNet with diffusers'
default fused attention, where only the fallback runs, against the math-processor forward mode.
Prints JSON and writes ``benchmarks/results/ad_fallback_cost.json`` (or ``--out``).

    OMP_NUM_THREADS=1 python benchmarks/ad_fallback_cost.py [--quick] [--device cpu|cuda] [--out PATH]
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch


def _machine(device: str) -> dict:
    info = {"platform": platform.platform(), "node": platform.node(), "python": platform.python_version(),
            "torch": torch.__version__, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "device": device}
    try:
        import diffusers

        info["diffusers"] = diffusers.__version__
    except ImportError:  # pragma: no cover
        pass
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


def _side_by_side(fns: dict, device: str, repeats: int) -> dict:
    """Median seconds of each callable, measured in alternation (each warmed up first)."""
    for fn in fns.values():
        fn()
    _sync(device)
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            _sync(device)
            times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def _row(name, med, base="forward", other="reverse", **extra):
    r = {"case": name, "forward_s": med[base], "fallback_s": med[other], "ratio": med[other] / med[base]}
    r.update(extra)
    return r


def _mlp(device, dtype):
    from latentgeo.diffusion import EDMDenoiser
    from latentgeo.nets import MLP

    torch.manual_seed(0)
    return EDMDenoiser(MLP(16, hidden=128, depth=3), sigma_data=0.5).to(device=device, dtype=dtype).eval()


def _unet(device, dtype, math_attention=True, size=16):
    from diffusers import UNet2DModel

    from latentgeo.diffusion import EDMDenoiser
    from latentgeo.nets import DiffusersUNet

    torch.manual_seed(0)
    u = UNet2DModel(sample_size=size, in_channels=3, out_channels=3, layers_per_block=1, block_out_channels=(16, 32),
                    down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
                    norm_num_groups=8, attention_head_dim=8)
    return EDMDenoiser(DiffusersUNet(u, math_attention=math_attention), sigma_data=0.5).to(device=device,
                                                                                          dtype=dtype).eval()


def bench_denoiser(name, den, shape, rows, probes, device, dtype, repeats, curve_samples):
    from latentgeo import autodiff
    from latentgeo.fisher import fisher_curves

    g = torch.Generator(device="cpu").manual_seed(1)
    x = torch.randn(rows, *shape, generator=g).to(device=device, dtype=dtype)
    v = torch.randn(rows, *shape, generator=g).to(device=device, dtype=dtype)
    V = torch.randn(probes, rows, *shape, generator=g).to(device=device, dtype=dtype)
    s = torch.full((rows,), 0.5, device=device, dtype=dtype)

    def f(y):
        return den(y, s)

    out = []
    with torch.no_grad():
        agree = float((autodiff.jvp(f, (x,), (v,), mode="reverse")[1] - torch.func.jvp(f, (x,), (v,))[1]).abs().max()
                      / torch.func.jvp(f, (x,), (v,))[1].abs().max())
        med = _side_by_side({"forward": lambda: torch.func.jvp(f, (x,), (v,)),
                             "reverse": lambda: autodiff.jvp(f, (x,), (v,), mode="reverse")}, device, repeats)
    out.append(_row(f"{name}/jvp", med, rows=rows, max_rel_diff=agree))

    def vm(mode):
        return torch.func.vmap(lambda t: autodiff.jvp(f, (x,), (t,), mode=mode))(V)

    with torch.no_grad():
        med = _side_by_side({"forward": lambda: vm("forward"), "reverse": lambda: vm("reverse")}, device, repeats)
    out.append(_row(f"{name}/vmap_probes", med, rows=rows, probes=probes))

    x0 = torch.randn(curve_samples, *shape, generator=g).to(device=device, dtype=dtype)

    def curve(mode):
        with autodiff.use_mode(mode):
            return fisher_curves(den, x0, [0.1, 1.0], n_probes=probes, generator=torch.Generator().manual_seed(2))

    a, b = curve("forward"), curve("reverse")
    agree = max(float(((getattr(a, k) - getattr(b, k)).abs() / getattr(a, k).abs()).max())
                for k in ("fi", "fir", "mmse_rate"))
    med = _side_by_side({"forward": lambda: curve("forward"), "reverse": lambda: curve("reverse")}, device,
                        max(3, repeats // 3))
    out.append(_row(f"{name}/fisher_curves", med, samples=curve_samples, probes=probes, sigmas=2,
                    max_rel_diff=agree))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats and rows (a smoke run)")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "ad_fallback_cost.json"))
    args = ap.parse_args(argv)
    device = args.device
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device; run with --device cpu")
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(1)
    reps = 5 if args.quick else 15
    dt = torch.float32
    rows_mlp, rows_img = (256, 8) if args.quick else (1024, 16)
    results = []
    results += bench_denoiser("mlp16", _mlp(device, dt), (16,), rows_mlp, 4, device, dt, reps, 256)
    results += bench_denoiser("unet16_attn_math", _unet(device, dt), (3, 16, 16), rows_img, 4, device, dt, reps, 8)

    # what a model with diffusers' default fused attention costs: only the fallback works there
    from latentgeo import autodiff

    fused, mathp = _unet(device, dt, math_attention=False), _unet(device, dt)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(rows_img, 3, 16, 16, generator=g).to(device=device, dtype=dt)
    v = torch.randn_like(x)
    s = torch.full((rows_img,), 0.5, device=device, dtype=dt)
    with torch.no_grad():
        med = _side_by_side({"forward": lambda: torch.func.jvp(lambda y: mathp(y, s), (x,), (v,)),
                             "reverse": lambda: autodiff.jvp(lambda y: fused(y, s), (x,), (v,), key=fused)},
                            device, reps)
    results.append(_row("unet16_attn_fused_fallback_vs_math_forward/jvp", med, rows=rows_img,
                        fallback_mode=autodiff.ad_mode(fused)))
    worst = max(r["ratio"] for r in results if "fused" not in r["case"])
    report = {"benchmark": "ad_fallback_cost", "goal": "fallback / forward-mode JVP <= 2", "machine": _machine(device),
              "dtype": str(dt).replace("torch.", ""), "repeats": reps, "quick": bool(args.quick),
              "worst_ratio": worst, "meets_goal": worst <= 2.0, "results": results}
    text = json.dumps(report, indent=2)
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text + "\n")
    return report


if __name__ == "__main__":
    main()
