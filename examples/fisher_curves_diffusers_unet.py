"""Fisher information, Fisher information rate and MMSE curves of a diffusers DDPM UNet pipeline.

What it shows
    ``resolve_denoiser`` turns a diffusers pipeline folder (``model_index.json`` + ``unet/`` + ``scheduler/``) into a
    VE denoiser ``D(x, sigma) -> E[x0 | x]``: the schedule and ``prediction_type`` are read from the scheduler
    config, and the adapter knows the noise range the UNet was trained on (``den.sigma_min`` / ``den.sigma_max``).
    ``fisher_curves`` then estimates FI I(sigma), FIR R(sigma) = dI/dtau and MMSE / MMSE-rate along that range,
    with Monte-Carlo standard errors (Hutchinson JVPs; through the UNet's attention blocks latentgeo falls back to a
    JVP mode that works there, reported as ``jvp_mode``).

How to run (under a minute on 2 CPU cores; nothing is downloaded)
    .venv/bin/python examples/fisher_curves_diffusers_unet.py

For a real model
    Replace ``folder`` with a local copy of a diffusers UNet2DModel pipeline, e.g. ``google/ddpm-cifar10-32`` saved
    with ``save_pretrained`` / ``huggingface-cli download`` (latentgeo never downloads), and ``x`` with your images
    [N, 3, 32, 32] scaled to [-1, 1]::

        den = resolve_denoiser("path/to/ddpm-cifar10-32")      # or a folder with unet/ + scheduler/
        curves = fisher_curves(den, x, sigmas, n_probes=8)

    A bare UNet folder without ``scheduler/`` needs ``parametrization="epsilon"`` (or ``"v"``) and ``schedule="ddpm"``
    (or ``"sd"``, ``"cosine"``, a scheduler_config.json). On a GPU pass ``device="cuda"`` and move ``x`` there.
    Use more samples (N ~ 256-1024) and probes (8) than here; the standard errors say when it is enough.
"""
import math

import torch

import _tiny_models as tiny
from latentgeo.fisher import fisher_curves
from latentgeo.resolve import resolve_denoiser

torch.set_num_threads(1)
torch.manual_seed(0)

folder = tiny.ddpm_pipeline_folder(sample_size=8, channels=1)           # <- your pipeline folder here
print("model:", tiny.describe(folder))
den = resolve_denoiser(folder)
print(f"denoiser: {type(den).__name__} ({den.info.get('prediction')}-prediction, {den.info.get('scheduler')}), "
      f"trained sigma range [{den.sigma_min:.4g}, {den.sigma_max:.4g}], sample shape {den.info.get('sample_shape')}")

n, n_sig = (6, 4) if tiny.QUICK else (32, 8)
x = tiny.digits_images(n, size=8)                                        # <- your images [N, C, H, W] in [-1, 1]
lo, hi = max(den.sigma_min, 0.02), min(den.sigma_max, 20.0)               # stay inside the trained range
sigmas = torch.logspace(math.log10(lo), math.log10(hi), n_sig)
curves = fisher_curves(den, x, sigmas, n_probes=2, generator=torch.Generator().manual_seed(0), label="tiny-ddpm")

print(f"\n{curves.n_samples} samples x {curves.n_probes} probes, data dimension n = {curves.n}, "
      f"jvp_mode = {curves.meta.get('jvp_mode')}")
print(f"{'sigma':>8} {'FI':>11} {'+-se':>9} {'FIR':>11} {'+-se':>9} {'MMSE':>9} {'MMSE rate':>10}")
for i in range(len(curves.sigma)):
    print(f"{float(curves.sigma[i]):8.4f} {float(curves.fi[i]):11.4g} {float(curves.fi_se[i]):9.2g} "
          f"{float(curves.fir[i]):11.4g} {float(curves.fir_se[i]):9.2g} {float(curves.mmse[i]):9.4g} "
          f"{float(curves.mmse_rate[i]):10.4g}")
ok = all(bool(torch.isfinite(getattr(curves, k)).all()) for k in ("fi", "fir", "mmse", "mmse_rate"))
print("all curves finite:", ok)
# curves.save("curves.json"); curves.plot("curves.png")   # JSON record and a two-panel plot
if not ok:
    raise SystemExit(1)
