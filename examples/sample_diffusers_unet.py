"""Sampling a diffusers DDPM UNet with latentgeo's samplers, through the VE adapter (``VPToVE``).

What it shows
    ``resolve_denoiser`` wraps the UNet as a VE denoiser ``D(x, sigma)``; any latentgeo sampler then runs on it
    (``latentgeo.sample``: Heun / Euler PF-ODE, Euler-Maruyama, EDM stochastic), inside the noise range the UNet
    was trained on. VE samples ``x`` relate to the VP samples diffusers produces by ``x_vp = x / sqrt(1 + sigma^2)``;
    at sigma = 0 they coincide. As a check of the adapter, latentgeo's Euler sampler on the sigma grid of a
    diffusers ``DDIMScheduler`` (eta = 0) reproduces diffusers' own DDIM loop: DDIM *is* the Euler step of the VE
    probability-flow ODE, so the two agree to float round-off.

How to run (under a minute on 2 CPU cores; nothing is downloaded)
    .venv/bin/python examples/sample_diffusers_unet.py

For a real model
    Replace ``folder`` with a local copy of a diffusers UNet2DModel pipeline (e.g. ``google/ddpm-cifar10-32``;
    latentgeo never downloads)::

        den = resolve_denoiser("path/to/ddpm-cifar10-32", device="cuda")
        x = latentgeo.sample(den, (64, 3, 32, 32), n_steps=64, sampler="heun",
                             sigma_min=max(0.002, den.sigma_min), sigma_max=min(80.0, den.sigma_max), device="cuda")

    For a latent-diffusion pipeline (a UNet2DModel over VAE latents, e.g. ``CompVis/ldm-celebahq-256`` with
    ``unet/`` + ``vqvae/``), sample the latent shape and decode: ``enc, dec, _ = resolve_encoder(folder)``,
    ``images = dec(x)``. On the command line: ``latentgeo sample path/to/pipeline --n 64``.
"""
import torch

import latentgeo
import _tiny_models as tiny
from latentgeo.diffusion import euler_sample
from latentgeo.resolve import resolve_denoiser

torch.set_num_threads(1)

folder = tiny.ddpm_pipeline_folder(sample_size=8, channels=1)           # <- your pipeline folder here
print("model:", tiny.describe(folder))
den = resolve_denoiser(folder)
shape = tuple(den.info["sample_shape"])
lo, hi = max(0.002, den.sigma_min), min(80.0, den.sigma_max)
print(f"sample shape {shape}, trained sigma range [{den.sigma_min:.4g}, {den.sigma_max:.4g}]; sampling {lo:.3g} -> {hi:.3g}")

n, steps = (2, 4) if tiny.QUICK else (8, 16)
print("(random weights: the samples are finite noise-like arrays, not images)")
for sampler in ("heun", "euler_maruyama"):
    x = latentgeo.sample(den, (n, *shape), n_steps=steps, sampler=sampler, sigma_min=lo, sigma_max=hi,
                         generator=torch.Generator().manual_seed(0))
    print(f"{sampler:>15}: {tuple(x.shape)} mean {float(x.mean()):+.3f} std {float(x.std()):.3f} "
          f"range [{float(x.min()):+.2f}, {float(x.max()):+.2f}] finite {bool(torch.isfinite(x).all())}")

# --- check the adapter against diffusers' own DDIM loop (this part uses diffusers directly, only for the check)
import diffusers  # noqa: E402

unet = diffusers.UNet2DModel.from_pretrained(folder / "unet", use_safetensors=True, low_cpu_mem_usage=False).eval()
ddim = diffusers.DDIMScheduler.from_pretrained(folder / "scheduler", clip_sample=False, set_alpha_to_one=True)
ddim.set_timesteps(steps)
acp = ddim.alphas_cumprod.double()
sig = ((1 - acp[ddim.timesteps]) / acp[ddim.timesteps]).sqrt()
x_vp = torch.randn((n, *shape), generator=torch.Generator().manual_seed(1))
with torch.no_grad():
    ref = x_vp.clone()
    for t in ddim.timesteps:
        ref = ddim.step(unet(ref, t).sample, t, ref, eta=0.0).prev_sample
x_ve = x_vp * (1 + sig[0] ** 2).sqrt().float()                         # VP -> VE at the first sigma
ours = euler_sample(den, x_ve, torch.cat([sig, sig.new_zeros(1)]).float())
diff = float((ours - ref).abs().max())
print(f"latentgeo Euler through VPToVE vs diffusers DDIM ({steps} steps): max |difference| {diff:.2e} "
      f"(sample scale {float(ref.abs().max()):.2f})")
if not diff < 1e-3 * max(1.0, float(ref.abs().max())):
    raise SystemExit(1)
