"""A spacetime (Fisher-Rao) geodesic and the Diffusion Edit Distance between two images, through a diffusers UNet.

What it shows
    The denoising posteriors ``p(x0 | x, sigma)`` of any denoiser form a statistical manifold over spacetime
    points ``(x, sigma)``. ``geodesic`` finds the shortest curve between ``(image_a, sigma_a)`` and
    ``(image_b, sigma_b)`` (a spline in (x, log-SNR) optimised with Adam on the simulation-free curve energy; the
    divergence with Rademacher probes, i.e. JVPs through the UNet). Along it the noise level first rises, then falls
    back: the path "forgets" image a's details and "adds" image b's. ``curve_energy`` evaluates any curve (here the
    straight line at constant sigma, for comparison), and ``edit_distance`` is the geodesic's length between two
    clean-ish images (DiffED), ``edit_distance_matrix`` the same for all pairs of a set.

How to run (under a minute on 2 CPU cores; nothing is downloaded)
    .venv/bin/python examples/geodesic_diffusers_unet.py

For a real model
    Replace ``folder`` with a local copy of a diffusers UNet2DModel pipeline (e.g. ``google/ddpm-cifar10-32`` or
    ``google/ddpm-celebahq-256``; latentgeo never downloads) and ``a``, ``b`` with two of its images in [-1, 1]::

        den = resolve_denoiser("path/to/ddpm-cifar10-32", device="cuda")
        g = geodesic(den, start=(a, 0.1), end=(b, 0.1), n_points=64, n_nodes=8, steps=500, n_probes=1)
        d = edit_distance(den, a, b, sigma_min=0.1, steps=500)

    (the paper's settings: ``n_points=64``, 500 Adam steps at lr 0.1; ``chunk_size=`` bounds memory for large
    images). Endpoint sigmas must lie in the model's trained range ``[den.sigma_min, den.sigma_max]``.
    On the command line: ``latentgeo geodesic MODEL --from a.png --to b.png`` / ``latentgeo diffed MODEL --data ...``.
"""
import torch

import _tiny_models as tiny
from latentgeo.resolve import resolve_denoiser
from latentgeo.spacetime import curve_energy, edit_distance, edit_distance_matrix, geodesic

torch.set_num_threads(1)

folder = tiny.ddpm_pipeline_folder(sample_size=8, channels=1)           # <- your pipeline folder here
print("model:", tiny.describe(folder))
den = resolve_denoiser(folder)
print(f"trained sigma range [{den.sigma_min:.4g}, {den.sigma_max:.4g}]")

imgs = tiny.digits_images(4, size=8)                                     # <- your images [N, C, H, W] in [-1, 1]
a, b = imgs[0], imgs[1]
sigma_end = 0.1
N, K, steps = (8, 3, 3) if tiny.QUICK else (16, 4, 25)
gen = torch.Generator().manual_seed(0)

g = geodesic(den, start=(a, sigma_end), end=(b, sigma_end), n_points=N, n_nodes=K, steps=steps, lr=0.1, n_probes=1,
             generator=gen)
print(f"\ngeodesic: {N} points, {K} knots, {steps} Adam steps ({g.seconds_per_step * 1e3:.0f} ms/step)")
print(f"  energy {g.history['energy'][0]:.4g} (start) -> {g.history['energy'][-1]:.4g} (last step); "
      f"final energy {float(g.energy):.4g}, length {float(g.length):.4g}, "
      f"negative segment fraction {float(g.negative_fraction):.3f}")
print("  sigma along the curve:", " ".join(f"{float(s):.3g}" for s in g.sigmas))

# the straight line between the two images at constant sigma, for comparison (same probes count, fresh draw)
s = torch.linspace(0, 1, N).view(-1, 1, 1, 1)
line = (1 - s) * a + s * b
e_line = curve_energy(den, line, torch.full((N,), sigma_end), n_probes=4, generator=gen)
print(f"  straight line at sigma {sigma_end}: energy {float(e_line):.4g} (the geodesic should be lower)")

d_ab = edit_distance(den, a, b, sigma_min=sigma_end, n_points=N, n_nodes=K, steps=steps, generator=gen)
print(f"\nDiffED(a, b) = {float(d_ab):.4g}   (Euclidean |a - b| = {float((a - b).norm()):.4g})")
M = edit_distance_matrix(den, imgs[:3], sigma_min=sigma_end, n_points=N, n_nodes=K, steps=steps, generator=gen)
print("DiffED matrix of 3 images:\n", M.numpy().round(3))
if not (torch.isfinite(torch.as_tensor(g.energy)).all() and torch.isfinite(M).all()):
    raise SystemExit(1)
