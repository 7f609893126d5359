"""Every capability on one device with tiny models: pass/fail, seconds, and no hidden CPU work.

Run it whenever a session has a GPU (it takes a few minutes; the budget is 8) and keep its JSON::

    .venv/bin/python benchmarks/gpu_check.py                       # --device cuda when available
    .venv/bin/python benchmarks/gpu_check.py --device cpu --quick  # CPU smoke run (about 2 minutes on 2 cores)
    .venv/bin/python benchmarks/gpu_check.py --only fisher_curves,geodesic_eager

Each check runs in its own try/except and is timed with ``torch.cuda.synchronize`` around it. A check passes when
it finishes, its outputs are finite, the tensors it returns live on the device, and the models it hands to
latentgeo were only ever called with inputs on the device: a forward pre-hook on every module (and its direct
children) records the device of each tensor argument, so a silent CPU fallback inside an estimator fails the check
(``calls`` in the details counts the guarded calls, so a check that never reached the model fails too). Where
latentgeo returns CPU summaries by design (``FisherCurves`` per-sample accumulators, ``geometry_report`` floats,
``transition_paths``'s float64 Langevin stage, ``diagnose``'s encoder penalties) the details say so.

Output: a table on stdout and JSON (machine: GPU name, torch / CUDA / cuDNN versions; per check: status
pass / fail / skip, seconds, the error's first line, details) written to ``benchmarks/results/gpu_check.json``
for a CUDA run, ``benchmarks/results/gpu_check_cpu_smoke.json`` for a CPU run (``--out`` overrides). Exit code 1
when any check failed.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


class Skip(Exception):
    """A check that cannot run here (a missing optional package, a failed prerequisite)."""


class DeviceError(AssertionError):
    pass


# ------------------------------------------------------------------------------------------------ context
class Ctx:
    def __init__(self, device: torch.device, quick: bool, tmp: Path):
        self.device, self.quick, self.tmp = device, quick, tmp
        self.state: Dict[str, Any] = {}
        self.failed: set = set()

    def q(self, quick_value, full_value):
        return quick_value if self.quick else full_value

    def need(self, key: str, producer: str):
        if key not in self.state:
            raise Skip(f"needs the result of '{producer}', which " +
                       ("failed" if producer in self.failed else "did not run"))
        return self.state[key]

    def sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def on_device(ctx: Ctx, t: Any, what: str) -> None:
    """``t`` (a tensor, or a list / tuple / dict of them) is finite and on ctx.device."""
    if isinstance(t, dict):
        for k, v in t.items():
            on_device(ctx, v, f"{what}[{k}]")
        return
    if isinstance(t, (list, tuple)):
        for i, v in enumerate(t):
            on_device(ctx, v, f"{what}[{i}]")
        return
    if not isinstance(t, torch.Tensor):
        raise DeviceError(f"{what} is a {type(t).__name__}, not a tensor")
    if t.device.type != ctx.device.type:
        raise DeviceError(f"{what} is on {t.device}, expected {ctx.device}")
    if t.is_floating_point() and not bool(torch.isfinite(t).all()):
        raise DeviceError(f"{what} has NaN/inf entries")


def finite(v: Any, what: str) -> None:
    vals = v.detach().double().reshape(-1).cpu().tolist() if isinstance(v, torch.Tensor) else \
        ([float(x) for x in v] if isinstance(v, (list, tuple)) else [float(v)])
    if not all(math.isfinite(x) for x in vals):
        raise AssertionError(f"{what} is not finite: {vals[:6]}")


class Guard:
    """Forward pre-hooks on a module and its direct children: every tensor argument must be on the device."""

    def __init__(self, ctx: Ctx, module: torch.nn.Module, name: str):
        self.ctx, self.name, self.calls, self.bad = ctx, name, 0, []
        self.handles = []
        mods = [module] + [m for m in module.children() if isinstance(m, torch.nn.Module)]
        for m in mods:
            self.handles.append(m.register_forward_pre_hook(self._hook, with_kwargs=True))

    def _hook(self, mod, args, kwargs):
        self.calls += 1
        for a in list(args) + list(kwargs.values()):
            if isinstance(a, torch.Tensor) and a.device.type != self.ctx.device.type and len(self.bad) < 3:
                self.bad.append(f"{type(mod).__name__} got a {tuple(a.shape)} tensor on {a.device}")

    def close(self) -> Dict[str, Any]:
        for h in self.handles:
            h.remove()
        if self.bad:
            raise DeviceError(f"{self.name}: hidden CPU work: " + "; ".join(self.bad))
        if self.calls == 0:
            raise AssertionError(f"{self.name}: the model was never called")
        return {f"{self.name}_calls": self.calls}


CHECKS: List[tuple] = []


def check(name: str, note: str = ""):
    def deco(fn: Callable[[Ctx], Dict[str, Any]]):
        CHECKS.append((name, fn, note))
        return fn
    return deco


# ------------------------------------------------------------------------------------------------ data
def moons(ctx: Ctx, n: int = 2048) -> torch.Tensor:
    from latentgeo.data import load

    return load("moons", n=n, seed=0)


def digits(n: int, split: str = "train") -> torch.Tensor:
    from latentgeo.data import load

    return load("digits", split=split, n=n)


# ------------------------------------------------------------------------------------------------ checks
@check("train_denoiser", "EDM MLP on 2-D moons, fit_denoiser(device=...)")
def c_train_denoiser(ctx: Ctx):
    from latentgeo.diffusion import fit_denoiser

    steps = ctx.q(150, 400)
    den = fit_denoiser(moons(ctx), net="mlp", steps=steps, batch_size=256, device=str(ctx.device), progress=False,
                       net_kwargs={"hidden": 64, "depth": 2})
    on_device(ctx, list(den.parameters()), "denoiser parameters")
    g = Guard(ctx, den, "denoiser")
    x = torch.randn(64, 2, device=ctx.device)
    with torch.no_grad():
        y = den(x, torch.full((64,), 0.5, device=ctx.device))
    on_device(ctx, y, "D(x, sigma)")
    ctx.state["den2d"] = den
    return {"steps": steps, **g.close()}


@check("sample", "latentgeo.sample (Heun PF-ODE and Euler-Maruyama) on the trained denoiser")
def c_sample(ctx: Ctx):
    import latentgeo

    den = ctx.need("den2d", "train_denoiser")
    g = Guard(ctx, den, "denoiser")
    out = {}
    for sampler in ("heun", "euler_maruyama"):
        x = latentgeo.sample(den, (256, 2), n_steps=ctx.q(8, 32), sampler=sampler, device=ctx.device,
                             generator=torch.Generator(ctx.device).manual_seed(0))
        on_device(ctx, x, f"{sampler} samples")
        out[f"{sampler}_std"] = round(float(x.std()), 4)
    return {**out, **g.close()}


@check("train_flow_and_sample", "fit_flow on moons, flow_sample (Heun) from device noise")
def c_flow(ctx: Ctx):
    from latentgeo.flows import fit_flow, flow_sample

    flow = fit_flow(moons(ctx), steps=ctx.q(150, 400), device=str(ctx.device), net_kwargs={"hidden": 64, "depth": 2})
    on_device(ctx, list(flow.parameters()), "flow parameters")
    g = Guard(ctx, flow, "flow")
    z = flow_sample(flow, torch.randn(256, 2, device=ctx.device), steps=ctx.q(8, 32), method="heun")
    on_device(ctx, z, "flow samples")
    return {"sample_std": round(float(z.std()), 4), **g.close()}


def _autoencoder(ctx: Ctx, method: str):
    from latentgeo.autoencoders import train_autoencoder

    x, xv = digits(ctx.q(256, 1024)), digits(128, "test")
    kw = dict(latent_dim=8, steps=ctx.q(40, 300), batch_size=64, engine="shared", device=str(ctx.device))
    if method == "gpe":
        kw["decoder_steps"] = ctx.q(40, 300)
    enc, dec, info = train_autoencoder(method, x, xv, **kw)
    # train_autoencoder hands the models back on the CPU by design; check they work on the device
    enc, dec = enc.to(ctx.device), dec.to(ctx.device)
    g = Guard(ctx, enc, "encoder")
    with torch.no_grad():
        z = enc(xv.to(ctx.device))
        xr = dec(z)
    on_device(ctx, z, "latents")
    on_device(ctx, xr, "reconstructions")
    mse = float((xr - xv.to(ctx.device)).pow(2).mean())
    ctx.state[f"{method}_encoder"] = enc
    return {"val_mse": round(mse, 4), "note": "models returned on the CPU by design, moved back for the check",
            **g.close()}


@check("train_gpe", "GPE encoder + decoder, train_autoencoder('gpe', engine='shared')")
def c_gpe(ctx: Ctx):
    return _autoencoder(ctx, "gpe")


@check("train_vae", "VAE baseline, train_autoencoder('vae', engine='shared')")
def c_vae(ctx: Ctx):
    return _autoencoder(ctx, "vae")


@check("geometry_report", "held-out geometry metrics of the GPE encoder (floats, by design)")
def c_geometry(ctx: Ctx):
    from latentgeo.autoencoders import geometry_report

    enc = ctx.need("gpe_encoder", "train_gpe")
    g = Guard(ctx, enc, "encoder")
    r = geometry_report(enc, digits(200, "test").to(ctx.device), gw_points=100)
    for k in ("gme", "spearman", "knn_overlap", "trimmed_bilipschitz", "gw"):
        finite(r[k], k)
    return {"gme": round(r["gme"], 5), "spearman": round(r["spearman"], 4), **g.close()}


@check("fisher_curves", "FI/FIR/MMSE curves of the trained denoiser (CPU float64 accumulators by design)")
def c_fisher(ctx: Ctx):
    from latentgeo.fisher import fisher_curves

    den = ctx.need("den2d", "train_denoiser")
    g = Guard(ctx, den, "denoiser")
    x = moons(ctx, 512).to(ctx.device)
    c = fisher_curves(den, x, torch.logspace(-2, 1, ctx.q(6, 16)), n_probes=4,
                      generator=torch.Generator(ctx.device).manual_seed(0))
    for k in ("fi", "fir", "mmse", "mmse_rate"):
        finite(getattr(c, k), k)
    return {"fi_first": round(float(c.fi[0]), 4), "jvp_mode": c.meta.get("jvp_mode"), **g.close()}


@check("diagnose", "diagnose() with a tiny pixel and latent denoiser (encoder penalties on the CPU by design)")
def c_diagnose(ctx: Ctx):
    from latentgeo.fisher.diagnosis import diagnose

    x = digits(ctx.q(96, 256))
    torch.manual_seed(0)
    proj = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 12)).eval()
    s = diagnose({"linear12": proj}, x, steps=ctx.q(30, 200), n_sigmas=ctx.q(5, 8), n_eval=64, n_probes=2,
                 n_penalty=32, n_neighbors=8, net_kwargs={"hidden": 64, "depth": 2}, device=str(ctx.device))
    r = s["encoders"]["linear12"]
    finite(r["d_r"], "D_R")
    return {"d_r_median_mid": round(r["d_r_median_mid"], 4)}


def _geo_endpoints(ctx):
    a = torch.tensor([-1.0, 0.0], device=ctx.device)
    b = torch.tensor([2.0, 0.5], device=ctx.device)
    return a, b


@check("curve_energy", "simulation-free curve energy and length of a straight line, with gradients")
def c_energy(ctx: Ctx):
    from latentgeo.spacetime import curve_energy, curve_length

    den = ctx.need("den2d", "train_denoiser")
    g = Guard(ctx, den, "denoiser")
    a, b = _geo_endpoints(ctx)
    s = torch.linspace(0, 1, 32, device=ctx.device)[:, None]
    xs = ((1 - s) * a + s * b).requires_grad_(True)
    sig = torch.full((32,), 0.3, device=ctx.device)
    e = curve_energy(den, xs, sig, n_probes=None)
    e.backward()
    on_device(ctx, e, "energy")
    on_device(ctx, xs.grad, "d energy / d xs")
    ln = curve_length(den, xs.detach(), sig, n_probes=2, generator=torch.Generator(ctx.device).manual_seed(0))
    on_device(ctx, ln, "length")
    return {"energy": round(float(e.detach()), 4), "length": round(float(ln), 4), **g.close()}


def _geodesic(ctx: Ctx, compile_mode):
    from latentgeo.spacetime import geodesic

    den = ctx.need("den2d", "train_denoiser")
    a, b = _geo_endpoints(ctx)
    g = Guard(ctx, den, "denoiser") if not compile_mode else None
    steps = ctx.q(30, 200)
    geo = geodesic(den, start=(a, 0.14), end=(b, 0.14), n_points=64, n_nodes=8, steps=steps, n_probes=None,
                   compile=compile_mode)
    on_device(ctx, geo.xs, "geodesic xs")
    on_device(ctx, geo.sigmas, "geodesic sigmas")
    finite(geo.energy, "energy")
    h = geo.history["energy"]
    out = {"steps": steps, "energy_first": round(h[0], 4), "energy_last": round(h[-1], 4),
           "ms_per_step": round(1e3 * geo.seconds_per_step, 3), "compile_seconds": round(geo.compile_seconds, 2)}
    if g is not None:
        out.update(g.close())
    return out


@check("geodesic_eager", "spacetime geodesic, N = 64, exact divergence, eager")
def c_geo_eager(ctx: Ctx):
    return _geodesic(ctx, False)


@check("geodesic_compiled", "the same with geodesic(compile=True) (Inductor; --quick on CPU: compile='fx')")
def c_geo_compiled(ctx: Ctx):
    mode = "fx" if (ctx.quick and ctx.device.type == "cpu") else True
    out = _geodesic(ctx, mode)
    out["compile"] = str(mode)
    return out


@check("edit_distance_matrix", "DiffED matrix of 4 points (6 batched geodesics)")
def c_diffed(ctx: Ctx):
    from latentgeo.spacetime import edit_distance_matrix

    den = ctx.need("den2d", "train_denoiser")
    g = Guard(ctx, den, "denoiser")
    X = moons(ctx, 4).to(ctx.device)
    M = edit_distance_matrix(den, X, sigma_min=0.14, n_points=32, n_nodes=6, steps=ctx.q(15, 100), n_probes=None)
    on_device(ctx, M, "DiffED matrix")
    if not torch.allclose(M, M.T) or float(M.diagonal().abs().max()) != 0.0:
        raise AssertionError("the DiffED matrix is not symmetric with a zero diagonal")
    return {"mean_offdiag": round(float(M.sum() / 12), 4), **g.close()}


@check("transition_paths", "alanine TPS, tiny (MLP on the device; geodesic + Langevin on the CPU by design)")
def c_tps(ctx: Ctx):
    import numpy as np

    from latentgeo.molecules import ALANINE_END, ALANINE_START, AlanineTable, transition_paths

    res = transition_paths(AlanineTable(), ALANINE_START, ALANINE_END, n_paths=ctx.q(8, 64), n_chains=ctx.q(200, 500),
                           data_steps=ctx.q(100, 400), train_steps=ctx.q(60, 400), n_points=ctx.q(16, 64),
                           n_nodes=ctx.q(4, 8), geo_steps=ctx.q(20, 200), k_steps=ctx.q(8, 32), seed=0,
                           device=str(ctx.device))
    if not np.isfinite(res.max_energy).all():
        raise AssertionError("non-finite MaxEnergy")
    return {"max_energy_mean": round(float(res.max_energy.mean()), 3), "reached": float(res.reached.mean())}


def _tiny_pipeline(ctx: Ctx) -> Path:
    import diffusers

    folder = ctx.tmp / "ddpm"
    if not (folder / "model_index.json").exists():
        torch.manual_seed(0)
        unet = diffusers.UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16),
                                     layers_per_block=1, down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                                     up_block_types=("AttnUpBlock2D", "UpBlock2D"), norm_num_groups=4,
                                     attention_head_dim=8).eval()
        sched = diffusers.DDPMScheduler(prediction_type="epsilon")
        diffusers.DDPMPipeline(unet=unet, scheduler=sched).save_pretrained(folder)
    return folder


def _need_diffusers():
    try:
        import diffusers  # noqa: F401
    except ImportError:
        raise Skip("diffusers is not installed (pip install 'latentgeo[interop]')") from None


@check("diffusers_unet", "DDPM UNet2DModel (attention) via resolve_denoiser: forward, sample, fisher_curves, "
                         "curve_energy")
def c_unet(ctx: Ctx):
    _need_diffusers()
    import latentgeo
    from latentgeo.fisher import fisher_curves
    from latentgeo.resolve import resolve_denoiser
    from latentgeo.spacetime import curve_energy

    den = resolve_denoiser(_tiny_pipeline(ctx), device=ctx.device)
    on_device(ctx, list(den.parameters()), "UNet parameters")
    g = Guard(ctx, den.model, "unet")
    x0 = digits(8).to(ctx.device)
    with torch.no_grad():
        y = den(x0 + 0.5 * torch.randn_like(x0), torch.full((8,), 0.5, device=ctx.device))
    on_device(ctx, y, "D(x, sigma)")
    xs = latentgeo.sample(den, (4, 1, 8, 8), n_steps=ctx.q(4, 16), sigma_min=den.sigma_min, sigma_max=80.0,
                          device=ctx.device, generator=torch.Generator(ctx.device).manual_seed(0))
    on_device(ctx, xs, "samples")
    c = fisher_curves(den, x0, [0.05, 0.5, 5.0], n_probes=2, generator=torch.Generator(ctx.device).manual_seed(0))
    for k in ("fi", "fir", "mmse"):
        finite(getattr(c, k), k)
    s = torch.linspace(0, 1, 8, device=ctx.device).view(-1, 1, 1, 1)
    e = curve_energy(den, (1 - s) * x0[0] + s * x0[1], torch.full((8,), 0.1, device=ctx.device), n_probes=1,
                     generator=torch.Generator(ctx.device).manual_seed(0))
    on_device(ctx, e, "curve energy")
    return {"sigma_range": [round(den.sigma_min, 4), round(den.sigma_max, 2)], "jvp_mode": c.meta.get("jvp_mode"),
            "fi": [round(float(v), 3) for v in c.fi], **g.close()}


@check("diffusers_vae", "AutoencoderKL via resolve_encoder: encode / decode, check_input_shape, geometry_report")
def c_vae_diffusers(ctx: Ctx):
    _need_diffusers()
    import diffusers

    from latentgeo.autoencoders import geometry_report
    from latentgeo.resolve import check_input_shape, resolve_encoder

    folder = ctx.tmp / "vae"
    if not (folder / "config.json").exists():
        torch.manual_seed(1)
        diffusers.AutoencoderKL(in_channels=3, out_channels=3, block_out_channels=(8, 16),
                                down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                                latent_channels=4, norm_num_groups=4, layers_per_block=1, sample_size=16,
                                scaling_factor=0.5).eval().save_pretrained(folder)
    enc, dec, info = resolve_encoder(folder, device=ctx.device)
    g = Guard(ctx, enc.vae, "vae")
    x = torch.nn.functional.pad(digits(64), (4, 4, 4, 4), value=-1.0).repeat(1, 3, 1, 1).to(ctx.device)
    if check_input_shape(enc, x.shape[1:]) != (4, 8, 8):
        raise AssertionError("unexpected latent shape")
    with torch.no_grad():
        z = enc(x)
        xr = dec(z)
    on_device(ctx, z, "latents")
    on_device(ctx, xr, "decoded images")
    r = geometry_report(enc, x, gw=False)
    finite(r["gme"], "gme")
    return {"latent_shape": list(z.shape[1:]), "gme": round(r["gme"], 5), **g.close()}


@check("torchscript_flow", "rectified-flow TorchScript velocity via resolve_flow + resolve_denoiser (FlowToVE)")
def c_ts_flow(ctx: Ctx):
    from latentgeo.fisher import fisher_curves
    from latentgeo.flows import flow_sample
    from latentgeo.resolve import resolve_denoiser, resolve_flow

    class Vel(torch.nn.Module):  # exact velocity of N(0, s^2 I) data, SD3 convention, timestep = 1000 t
        def forward(self, x: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
            t = (timestep / 1000.0).reshape(-1, 1).to(x.dtype)
            a = 1.0 - t
            var = a * a * 0.25 + t * t
            return (t / var) * x - (a * 0.25 / var) * x

    path = ctx.tmp / "vel.pt"
    torch.jit.script(Vel()).save(str(path))
    flow = resolve_flow(path, parametrization="velocity", time_scale=1000, device=ctx.device)
    z = flow_sample(flow, torch.randn(512, 4, device=ctx.device), steps=ctx.q(8, 32))
    on_device(ctx, z, "flow samples")
    den = resolve_denoiser(path, parametrization="velocity", time_scale=1000, device=ctx.device)
    c = fisher_curves(den, 0.5 * torch.randn(1024, 4, device=ctx.device), [0.5, 2.0], n_probes=2,
                      generator=torch.Generator(ctx.device).manual_seed(0))
    exact = [4 / (0.25 + s ** 2) for s in (0.5, 2.0)]
    rel = max(abs(float(c.fi[i]) / exact[i] - 1) for i in range(2))
    if rel > 0.1:
        raise AssertionError(f"FI off the closed form by {rel:.1%}")
    return {"sample_std": round(float(z.std()), 3), "fi_rel_err": round(rel, 4)}


# ------------------------------------------------------------------------------------------------ driver
def machine(device: torch.device) -> Dict[str, Any]:
    info: Dict[str, Any] = {"platform": platform.platform(), "python": platform.python_version(),
                            "torch": torch.__version__, "cuda": torch.version.cuda,
                            "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
                            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                            "device": str(device)}
    if hasattr(os, "getloadavg"):
        info["load_average_1min"] = round(os.getloadavg()[0], 2)  # shared machines: timings are pessimistic
    try:
        import diffusers

        info["diffusers"] = diffusers.__version__
    except ImportError:
        info["diffusers"] = None
    try:
        import latentgeo

        info["latentgeo"] = latentgeo.__version__
    except Exception:  # pragma: no cover
        pass
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        info.update(gpu=p.name, gpu_memory_gib=round(p.total_memory / 2 ** 30, 1),
                    capability=f"{p.major}.{p.minor}")
    else:
        try:
            with open("/proc/cpuinfo") as f:
                info["cpu"] = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "?")
        except OSError:
            pass
    return info


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default=None, help="cuda, cuda:N or cpu (default: cuda if available, else cpu)")
    ap.add_argument("--quick", action="store_true", help="smaller settings (CPU smoke run)")
    ap.add_argument("--only", default=None, help="comma-separated check names (default: all)")
    ap.add_argument("--out", default=None, help="JSON path (default: benchmarks/results/gpu_check.json on CUDA, "
                                                "gpu_check_cpu_smoke.json on CPU)")
    ap.add_argument("--list", action="store_true", help="list the checks and exit")
    args = ap.parse_args(argv)
    if args.list:
        for name, _, note in CHECKS:
            print(f"{name:<24} {note}")
        return 0
    if args.device is None:
        if torch.cuda.is_available():
            dev = torch.device("cuda")
        else:
            dev = torch.device("cpu")
            print("note: CUDA is not available, running every check on the CPU (this is not a GPU check)")
    else:
        dev = torch.device(args.device)
        if dev.type == "cuda" and not torch.cuda.is_available():
            print("error: --device cuda was requested but CUDA is not available; use --device cpu", file=sys.stderr)
            return 2
    if dev.type == "cpu":
        torch.set_num_threads(min(2, os.cpu_count() or 1))
    names = [n for n, _, _ in CHECKS]
    only = [s.strip() for s in args.only.split(",")] if args.only else names
    unknown = [s for s in only if s not in names]
    if unknown:
        print(f"error: unknown check(s) {', '.join(unknown)}; choose from {', '.join(names)}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else RESULTS / ("gpu_check.json" if dev.type == "cuda" else
                                                     "gpu_check_cpu_smoke.json")
    info = machine(dev)
    print(f"device {dev} ({info.get('gpu') or info.get('cpu', '?')}), torch {info['torch']}, CUDA {info['cuda']}, "
          f"{'quick' if args.quick else 'full'} settings")
    results = []
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="latentgeo-gpu-check-") as tmp:
        ctx = Ctx(dev, args.quick, Path(tmp))
        for name, fn, note in CHECKS:
            if name not in only:
                continue
            rec: Dict[str, Any] = {"check": name, "what": note}
            ctx.sync()
            t0 = time.perf_counter()
            try:
                details = fn(ctx)
                ctx.sync()
                rec.update(status="pass", details=details)
            except Skip as exc:
                rec.update(status="skip", error=str(exc))
            except Exception as exc:  # noqa: BLE001 - every failure is recorded, the run goes on
                ctx.failed.add(name)
                line = (str(exc).strip().splitlines() or [""])[0][:300]
                rec.update(status="fail", error=f"{type(exc).__name__}: {line}",
                           where=traceback.format_exc().strip().splitlines()[-3:-1])
                try:
                    ctx.sync()
                except Exception:  # noqa: BLE001 - a CUDA error can make the sync fail too
                    pass
            rec["seconds"] = round(time.perf_counter() - t0, 3)
            if dev.type == "cuda":
                rec["max_memory_mib"] = round(torch.cuda.max_memory_allocated(dev) / 2 ** 20, 1)
                torch.cuda.reset_peak_memory_stats(dev)
            results.append(rec)
            msg = rec.get("error") or ", ".join(f"{k}={v}" for k, v in rec["details"].items()
                                                if not isinstance(v, (list, dict)) and k != "note")
            print(f"{name:<24} {rec['status']:<5} {rec['seconds']:8.2f} s  {msg[:150]}", flush=True)
    total = time.perf_counter() - t_all
    counts = {s: sum(r["status"] == s for r in results) for s in ("pass", "fail", "skip")}
    print(f"\n{counts['pass']} passed, {counts['fail']} failed, {counts['skip']} skipped in {total:.1f} s "
          f"on {dev}")
    record = {"machine": info, "quick": args.quick, "total_seconds": round(total, 2), "counts": counts,
              "checks": results, "when": time.strftime("%Y-%m-%d %H:%M:%S %z")}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2, default=str) + "\n")
    print(f"wrote {out}")
    return 1 if counts["fail"] else 0


if __name__ == "__main__":
    sys.exit(main())
