"""How well does a diffusers VAE encoder preserve the geometry of the data? (``geometry_report``)

What it shows
    ``resolve_encoder`` loads an ``AutoencoderKL`` folder as ``x -> z`` (posterior mean, scaled by the config's
    ``scaling_factor`` / ``shift_factor``, exactly as Stable Diffusion feeds latents to its UNet) plus a decoder.
    ``check_input_shape`` checks the data against the encoder before any work (channels, multiples of the
    downsampling factor). ``geometry_report`` then measures on held-out data how pairwise distances survive the
    encoding: the Gromov-Monge residual (GME, log-distance ratios), distance-ratio quantiles, the trimmed weak
    bi-Lipschitz constant, Spearman correlation of distances, k-NN overlap and a Gromov-Wasserstein discrepancy.
    A 2x2 average-pooling "encoder" is shown alongside as a reference point.

How to run (under a minute on 2 CPU cores; nothing is downloaded)
    .venv/bin/python examples/geometry_diffusers_vae.py

For a real model
    Replace ``folder`` with a local copy of a Stable Diffusion VAE (e.g. ``stabilityai/sd-vae-ft-mse``, or the
    ``vae/`` subfolder of an SD pipeline; a pipeline folder works too and its ``vae/`` is picked)::

        enc, dec, info = resolve_encoder("path/to/sd-vae")     # it never downloads
        check_input_shape(enc, x.shape[1:])                    # e.g. (3, 256, 256) -> (4, 32, 32)

    and ``x`` with held-out RGB images [N, 3, H, W] in [-1, 1] (H, W multiples of 8). Use N of a few hundred to a
    thousand (all N(N-1)/2 pairs are used; ``max_points`` caps it). ``device="cuda"`` in ``resolve_encoder`` puts the
    VAE on a GPU. ``rescale="median"`` makes the GME scale-free.
"""
import torch

import _tiny_models as tiny
from latentgeo.autoencoders import geometry_report
from latentgeo.resolve import check_input_shape, resolve_encoder

torch.set_num_threads(1)

folder = tiny.vae_folder(channels=3, latent_channels=4)                  # <- your VAE folder here
print("model:", tiny.describe(folder))
enc, dec, info = resolve_encoder(folder)
print(f"encoder: {info.get('class', type(enc).__name__)}, scaling_factor {info.get('scaling_factor')}, "
      f"downsample x{info.get('downsample')}, input range {info.get('input_range')}")

n = 40 if tiny.QUICK else 200
x = tiny.digits_images(n, size=16, channels=3)                          # <- your held-out images in [-1, 1]
print(f"data {tuple(x.shape[1:])} -> latents {check_input_shape(enc, x.shape[1:])}")
with torch.no_grad():
    err = float((dec(enc(x[:8])) - x[:8]).pow(2).mean())
print(f"reconstruction MSE on 8 images: {err:.4f} (random weights: large)")


def pool(v):  # reference encoder: 2x2 average pooling (a smooth, almost distance-preserving map)
    return torch.nn.functional.avg_pool2d(v, 2)


keys = ("gme", "spearman", "knn_overlap", "trimmed_bilipschitz", "gw")
print("\nheld-out geometry (latents rescaled by the median distance ratio; lower gme / bi-Lipschitz / gw and "
      "higher spearman / knn_overlap are better)")
print(f"{'encoder':<12}" + "".join(f"{k:>20}" for k in keys))
reports = {}
for name, e in (("vae", enc), ("avgpool2x2", pool)):
    r = geometry_report(e, x, rescale="median", gw_points=min(100, n), seed=0)
    reports[name] = r
    print(f"{name:<12}" + "".join(f"{r[k]:20.4f}" for k in keys))
q = reports["vae"]["ratio_quantiles"]
print("vae distance-ratio quantiles d_Z/d_X (after median rescale):",
      ", ".join(f"{k}: {float(v):.3f}" for k, v in q.items()))
if not all(torch.isfinite(torch.tensor(float(reports["vae"][k]))) for k in keys):
    raise SystemExit(1)
