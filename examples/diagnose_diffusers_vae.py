"""Is a diffusers VAE's latent space good to diffuse in? Diffusability diagnostics with ``diagnose``.

What it shows
    ``diagnose`` trains one small denoiser on the (normalised) images and one on the encoder's (normalised) latents,
    estimates both spaces' Fisher information rate curves, and reports the FIR deviation ``D_R`` (how much harder
    the latent distribution is to denoise than the data), the encoder penalties (dimensional compression,
    tangential distortion and curvature along data tangents, through JVPs of the encoder), latent power spectra and a
    plain-language verdict. The VAE comes from a diffusers ``AutoencoderKL`` folder through ``resolve_encoder``; the
    data are latentgeo's embedded scikit-learn digits, padded to 16x16 and repeated to 3 channels (an RGB VAE).

How to run (under a minute on 2 CPU cores; nothing is downloaded)
    .venv/bin/python examples/diagnose_diffusers_vae.py

For a real model
    Replace ``folder`` with a local copy of a Stable Diffusion VAE (e.g. ``stabilityai/sd-vae-ft-mse`` or an SD
    pipeline folder, whose ``vae/`` is used; it never downloads)::

        enc, _, _ = resolve_encoder("path/to/sd-vae", device="cuda")
        summary = diagnose({"sd-vae": enc, "my-gpe": "runs/gpe"}, x, out="runs/diag", steps=20000, device="cuda")

    with ``x`` your images [N, 3, H, W] in [-1, 1] (a few thousand; H, W multiples of 8). The settings here
    (``steps=150``, tiny MLP denoisers) only show the pipeline running: real diagnostics need denoisers trained
    for thousands of steps (the default is 2000; ``net="unet"`` for image-shaped data if time allows) and
    ``n_eval`` of a few hundred. ``out=`` also writes curves, plots and cached denoisers. On the command line:
    ``latentgeo diagnose --encoder path/to/sd-vae --data my-images/ --out runs/diag``.
"""
import torch

import _tiny_models as tiny
from latentgeo.fisher import diagnose
from latentgeo.resolve import check_input_shape, resolve_encoder

torch.set_num_threads(1)

folder = tiny.vae_folder(channels=3, latent_channels=4)                  # <- your VAE folder here
print("model:", tiny.describe(folder))
enc, dec, info = resolve_encoder(folder)

n, steps = (32, 30) if tiny.QUICK else (160, 150)
x = tiny.digits_images(n, size=16, channels=3)                          # <- your images [N, 3, H, W] in [-1, 1]
print(f"data {tuple(x.shape)} -> latents {check_input_shape(enc, x.shape[1:])} per image")

summary = diagnose({"tiny-vae": enc}, x, decoders={"tiny-vae": dec}, data_name="digits-16px-rgb", steps=steps,
                   n_sigmas=6 if tiny.QUICK else 8, n_eval=min(n, 64), n_probes=2, n_penalty=min(n, 48), n_neighbors=8,
                   net_kwargs={"hidden": 64, "depth": 2}, seed=0)

r = summary["encoders"]["tiny-vae"]
print(f"\npixels: dim {summary['denoisers']['pixels']['dim']}, latents: dim {r['latent_dim']}; "
      f"tangent dim {summary['tangent_dim']} (local PCA estimate {summary['intrinsic_dim_local_pca']})")
print("sigma :", " ".join(f"{s:8.3g}" for s in summary["sigma"]))
print("D_R   :", " ".join(f"{v:8.3f}" for v in r["d_r"]))
print(f"D_R at the smallest sigma {r['d_r_small_sigma']:.3f}, median over sigma in [0.05, 5] {r['d_r_median_mid']:.3f}")
print("compression:", {k: (round(v, 4) if isinstance(v, float) else v) for k, v in r["compression"].items()})
print("tangential :", {k: (round(v, 4) if isinstance(v, float) else v) for k, v in r["tangential"].items()})
print("curvature  :", {k: (round(v, 4) if isinstance(v, float) else v) for k, v in r["curvature"].items()})
print(f"latent high-frequency spectrum fraction {r['spectrum_high_frequency_fraction']:.3f} "
      f"(pixels {summary['pixels_spectrum_high_frequency_fraction']:.3f})")
eq = {k: (None if v["error"] is None else round(v["error"], 3)) for k, v in r["equivariance"].items()}
print("equivariance errors |E(T x) - T E(x)| / |T E(x)|:", eq)
print(f"band-energy divergence images -> latents {r['spectrum']['divergence']:.4f} +- "
      f"{r['spectrum']['divergence_se']:.4f}; latent scaling factor {r['latent_stats']['scale_factor']:.4f}; "
      f"reconstruction PSNR {r['reconstruction']['psnr']:.1f} dB (the VAE's own decoder)")
print(f"score {r['score']:.3f} (higher = more diffusable)")
print("verdict:", summary["verdict"]["details"][0])
if not all(abs(v) < float("inf") for v in r["d_r"]):
    raise SystemExit(1)
