"""``diagnose --no-fisher`` at real size (issue 19, item 4): a random-init diffusers ``AutoencoderKL`` with Stable
Diffusion's full configuration (3 -> 4 latent channels, block_out_channels (128, 256, 512, 512), 2 layers per
block, 256x256 RGB -> 4 x 32 x 32) on Fashion-MNIST images upsampled to 256x256 RGB (bilinear, grey replicated).

Every part of diagnose runs (encodings, penalties by JVPs, equivariance, neighbourhoods, reconstruction, the
generation measures with the labels: feature classifier, decoded interpolations and noise, VIV / LNC); the weights
are random, so the numbers themselves mean nothing: the benchmark measures time and memory.

Measured: wall and CPU seconds of the whole run and of each part (diagnose's ``timing_s``), the peak resident memory
(``ru_maxrss``). With ``--n`` below 128 (a contended machine), every part is extrapolated to 128 images linearly in
the number of images it processes (stated per part in the JSON).

    OMP_NUM_THREADS=2 python benchmarks/diagnose_sd_vae.py --n 128 --threads 2
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from latentgeo.checkpoint import atomic_write_json  # noqa: E402

TARGET_N = 128


def sd_vae(seed: int = 0):
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
                         up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(128, 256, 512, 512),
                         layers_per_block=2, latent_channels=4, sample_size=256, norm_num_groups=32).eval()


def data(n: int, size: int = 256):
    from latentgeo import data as ld

    x, y = ld.fashion_mnist(split="test", n=n, return_labels=True)
    x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return x.expand(-1, 3, -1, -1).contiguous().clamp(-1, 1), y


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=TARGET_N, help="images (128 = the issue's size)")
    ap.add_argument("--n-generation", type=int, default=None, help="held-out images of the generation measures "
                                                                    "(default n/4)")
    ap.add_argument("--n-penalty", type=int, default=8)
    ap.add_argument("--tangent-dim", type=int, default=2)
    ap.add_argument("--n-equivariance", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "diagnose_sd_vae.json"))
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    from latentgeo.fisher.diagnosis import diagnose

    t_w, t_c = time.perf_counter(), time.process_time()
    vae = sd_vae()
    for p in vae.parameters():
        p.requires_grad_(False)
    x, y = data(a.n)
    ng = a.n_generation or max(4, a.n // 4)
    setup = {"wall_s": time.perf_counter() - t_w, "cpu_s": time.process_time() - t_c}
    print(f"[sd-vae] {a.n} images {tuple(x.shape[1:])}, model {sum(p.numel() for p in vae.parameters()) / 1e6:.1f} M "
          f"parameters, setup {setup['wall_s']:.1f}s", flush=True)
    w0, c0 = time.perf_counter(), time.process_time()
    s = diagnose({"sd_vae": vae}, x, fisher=False, labels=y, n_generation=ng, n_penalty=a.n_penalty,
                 tangent_dim=a.tangent_dim, n_equivariance=a.n_equivariance, n_geometry=a.n, progress=True,
                 n_neighbors=min(16, a.n - 2), classifier_steps=300)
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2  # Linux: KiB
    e = s["encoders"]["sd_vae"]
    tm = dict(e["timing_s"])
    pix = s["timing_s"].get("pixels", {})
    # what each part processes, to extrapolate to 128 images: encoding all n (inside 'untimed' below), the penalties
    # and equivariance their own sample counts (fixed), reconstruction n_geometry = n, generation 2 n_generation
    scale = TARGET_N / a.n
    timed = sum(v for k, v in tm.items() if k != "total") + sum(pix.values())
    # penalties / equivariance: scaled to the settings a 128-image run would use (n_penalty 8 x 2 tangents,
    # n_equivariance 8); the parts that touch every image by 128 / n
    f_pen = (8 * 2) / (a.n_penalty * a.tangent_dim)
    f_eq = 8 / a.n_equivariance
    factor = {"reconstruction": scale, "generation": (TARGET_N / 4) / ng, "neighbourhood": scale,
              "class_structure": scale,
              "latent_stats": scale, "spectrum": scale, "penalties": f_pen, "equivariance": f_eq}
    parts = {k: {"cpu_s": v, "factor_to_128": factor.get(k, 1.0)} for k, v in tm.items() if k != "total"}
    parts["encoding_and_rest"] = {"cpu_s": cpu - timed, "factor_to_128": scale}
    for k, v in pix.items():
        parts[f"data_{k}"] = {"cpu_s": v, "factor_to_128": 1.0}
    extrap_cpu = sum(v["cpu_s"] * v["factor_to_128"] for v in parts.values())
    res = {
        "benchmark": "diagnose --no-fisher on a random-init Stable Diffusion AutoencoderKL (issue 19 item 4)",
        "model": {"class": "diffusers.AutoencoderKL", "block_out_channels": [128, 256, 512, 512],
                  "layers_per_block": 2, "latent_channels": 4, "input": [3, 256, 256], "latent": e["latent_shape"],
                  "parameters_M": sum(p.numel() for p in vae.parameters()) / 1e6, "weights": "random init, seed 0"},
        "n_images": a.n, "n_generation": ng, "n_penalty": a.n_penalty, "tangent_dim": a.tangent_dim,
        "n_equivariance": a.n_equivariance, "threads": a.threads,
        "machine": f"{platform.node()} ({platform.processor() or platform.machine()}, {os.cpu_count()} CPUs)",
        "load_average_at_end": list(os.getloadavg()), "torch": torch.__version__,
        "setup": setup, "diagnose_wall_s": wall, "diagnose_cpu_s": cpu, "peak_rss_gb": peak_gb,
        "parts_cpu_s": parts,
        "extrapolated_to_128": None if a.n == TARGET_N else {
            "cpu_s": extrap_cpu, "wall_s_at_measured_cpu_per_wall": extrap_cpu * wall / max(cpu, 1e-9),
            "method": "each part's CPU seconds times factor_to_128: 128 / n for the parts that process every image "
                      "(encoding, reconstruction, neighbourhoods, class structure, spectra, statistics); the "
                      "generation measures by 32 / n_generation (n_generation = 32 at 128 images); the penalties to n_penalty 8 x tangent_dim 2, equivariance to "
                      "8 images; the data-side feature classifier and tangents kept; peak memory does not grow with n "
                      "(batches of about 1M values)"},
        "goal": {"wall_s": 900, "peak_rss_gb": 8.0},
        "generation": {k: e.get(k) for k in ("interpolation", "noise_sensitivity", "class_structure")},
    }
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(Path(a.out), res)
    print(json.dumps({k: res[k] for k in ("diagnose_wall_s", "diagnose_cpu_s", "peak_rss_gb",
                                          "extrapolated_to_128")}, indent=1), flush=True)
    return res


if __name__ == "__main__":
    main()
