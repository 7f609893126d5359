"""Latent generation through GPE vs VAE latents (GPE paper section 8.5, at this machine's scale).

Pipeline, identical for both encoders: train the autoencoder (GPE: encoder on the GME cost, then decoder; beta-VAE:
joint, the same total number of steps, same architecture and batch), normalise the latents (``z = C (T(x) - m)``,
``E|z|^2 = d``), train a conditional flow-matching model on them (same MLP, same steps), sample with a Heun ODE,
decode, and score the images against held-out images with
  - the classifier Frechet distance (CFD: FID on the features of a small CNN the package trains on the labels),
  - sliced Wasserstein in pixel space, and MMD^2,
plus the sliced Wasserstein between flow samples and held-out latents (quality of the latent fit itself) and the
"decoder floor" (scores of the decoder's reconstructions of training images: roughly the best any latent generator
can reach through that decoder; ``real_images_floor`` is the same for the training images themselves). Scores are taken at several flow-training iteration counts; both flows cost the same per
iteration (same net, same latent dimension), so equal iterations are equal compute; the measured CPU seconds are
recorded next to them.

Timing: process CPU time of this single-threaded process (robust on a shared, loaded machine), plus wall time.

    OMP_NUM_THREADS=1 python benchmarks/latent_generation.py                  # digits, the run in results/
    OMP_NUM_THREADS=1 python benchmarks/latent_generation.py --quick          # smoke run (~1 min)
    OMP_NUM_THREADS=1 python benchmarks/latent_generation.py --data fashion-mnist --n-train 10000

Prints JSON and writes ``benchmarks/results/latent_generation[_<data>].json``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from latentgeo.checkpoint import atomic_write_json  # noqa: E402


def _batched(fn, x, bs=512):
    with torch.no_grad():
        return torch.cat([fn(x[i:i + bs]) for i in range(0, x.shape[0], bs)])


def _load(data: str, n_train: int, n_test: int, seed: int):
    from latentgeo import data as ld

    if data == "digits":
        xtr, ytr = ld.digits(split="train", seed=seed, return_labels=True)
        xte, yte = ld.digits(split="test", seed=seed, return_labels=True)
    else:
        xtr, ytr = ld.fashion_mnist(split="train", n=n_train, return_labels=True)
        xte, yte = ld.fashion_mnist(split="test", n=n_test, return_labels=True)
    return xtr, ytr, xte, yte


def _scores(imgs, ref, clf, seed):
    from latentgeo.metrics import classifier_frechet_distance, mmd, sliced_wasserstein

    g = torch.Generator().manual_seed(seed)
    return {"cfd": classifier_frechet_distance(imgs, ref, clf),
            "sw_pixels": sliced_wasserstein(imgs, ref, 256, generator=g),
            "mmd": mmd(imgs.reshape(imgs.shape[0], -1), ref.reshape(ref.shape[0], -1))}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="digits", choices=["digits", "fashion-mnist"])
    ap.add_argument("--latent-dim", type=int, default=12)
    ap.add_argument("--enc-steps", type=int, default=1500, help="GPE encoder steps (VAE: enc + dec steps, jointly)")
    ap.add_argument("--dec-steps", type=int, default=1500)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--flow-checkpoints", type=int, nargs="+", default=[250, 500, 1000, 2000, 4000])
    ap.add_argument("--n-gen", type=int, default=359, help="samples per evaluation (digits test split: 359)")
    ap.add_argument("--n-train", type=int, default=10000, help="Fashion-MNIST training images")
    ap.add_argument("--ode-steps", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=None, help="JSON path (default benchmarks/results/latent_generation*.json)")
    a = ap.parse_args(argv)
    if a.quick:
        a.enc_steps, a.dec_steps, a.flow_checkpoints, a.n_gen = 60, 60, [30, 60], 120
    torch.set_num_threads(a.threads)
    from latentgeo.autoencoders import train_autoencoder
    from latentgeo.flows import fit_flow, flow_sample
    from latentgeo.metrics import load_or_fit_classifier, sliced_wasserstein

    t_wall0 = time.perf_counter()
    xtr, ytr, xte, yte = _load(a.data, a.n_train, max(a.n_gen, 1000), a.seed)
    ref = xte[:a.n_gen]
    tmp = Path(tempfile.mkdtemp(prefix="lg-bench-latent-"))
    clf, cinfo = load_or_fit_classifier(tmp, xtr, ytr, steps=100 if a.quick else 500, seed=a.seed)
    result = {"benchmark": "latent_generation", "data": a.data, "latent_dim": a.latent_dim,
              "machine": f"{platform.node()} ({platform.processor() or platform.machine()}, {os.cpu_count()} CPUs)",
              "torch": torch.__version__, "threads": a.threads,
              "load_average_at_start": list(os.getloadavg()),
              "note": "shared machine, loaded by other jobs while measured; CPU seconds of this single-threaded "
                      "process are the comparable timing, wall seconds are indicative only",
              "settings": {"enc_steps": a.enc_steps, "dec_steps": a.dec_steps, "vae_steps": a.enc_steps + a.dec_steps,
                           "batch": a.batch, "flow_checkpoints": a.flow_checkpoints, "n_gen": a.n_gen,
                           "ode_steps": a.ode_steps, "seed": a.seed, "n_train": int(xtr.shape[0]),
                           "n_test_ref": int(ref.shape[0])},
              "classifier_val_accuracy": cinfo.get("val_accuracy"),
              "real_images_floor": _scores(xtr[:a.n_gen], ref, clf, a.seed), "methods": {}}
    for method in ("gpe", "vae"):
        c0, w0 = time.process_time(), time.perf_counter()
        steps = a.enc_steps if method == "gpe" else a.enc_steps + a.dec_steps
        enc, dec, info = train_autoencoder(method, xtr, latent_dim=a.latent_dim, steps=steps,
                                           decoder_steps=a.dec_steps if method == "gpe" else None,
                                           batch_size=a.batch, seed=a.seed)
        enc.eval(), dec.eval()
        ae_cpu, ae_wall = time.process_time() - c0, time.perf_counter() - w0
        z = _batched(enc, xtr)
        zte = _batched(enc, xte)
        rec = _batched(lambda b: dec(enc(b)), ref)
        # Floor: reconstructions of TRAINING images (independent of the reference set, like real_images_floor;
        # reconstructions of the reference images themselves would be paired with it and score unfairly low).
        rec_tr = _batched(lambda b: dec(enc(b)), xtr[:a.n_gen])
        m = {"ae_cpu_seconds": ae_cpu, "ae_wall_seconds": ae_wall,
             "test_mse": float((rec - ref).pow(2).mean()),
             "decoder_floor": _scores(rec_tr.clamp(-1, 1), ref, clf, a.seed), "curve": []}
        run = tmp / f"flow_{method}"
        flow_cpu = 0.0
        for k in sorted(a.flow_checkpoints):
            c1 = time.process_time()
            model = fit_flow(z, steps=k, batch_size=256, seed=a.seed, out=run, resume=True, progress=False,
                             net_kwargs={"hidden": 256, "depth": 3}, ckpt_every=10 ** 9, log_every=max(1, k // 10))
            flow_cpu += time.process_time() - c1
            g = torch.Generator().manual_seed(a.seed + 1)
            zs = flow_sample(model, torch.randn(a.n_gen, z.shape[1], generator=g), steps=a.ode_steps, method="heun")
            imgs = _batched(dec, zs.float()).clamp(-1, 1)
            row = {"flow_steps": k, "flow_cpu_seconds": flow_cpu, "total_cpu_seconds": ae_cpu + flow_cpu}
            row.update(_scores(imgs, ref, clf, a.seed))
            row["sw_latent"] = sliced_wasserstein(zs, zte[:a.n_gen], 256, generator=torch.Generator().manual_seed(0))
            m["curve"].append(row)
            print(json.dumps({"method": method, **row}), flush=True)
        result["methods"][method] = m
    # Side-by-side ratios at equal flow iterations (equal compute for the flow): VAE / GPE, > 1 favours GPE.
    ratios = []
    for rg, rv in zip(result["methods"]["gpe"]["curve"], result["methods"]["vae"]["curve"]):
        ratios.append({"flow_steps": rg["flow_steps"], "cfd_vae_over_gpe": rv["cfd"] / rg["cfd"],
                       "sw_pixels_vae_over_gpe": rv["sw_pixels"] / rg["sw_pixels"],
                       "flow_cpu_seconds_gpe": rg["flow_cpu_seconds"], "flow_cpu_seconds_vae": rv["flow_cpu_seconds"]})
    result["ratios"] = ratios
    result["wall_seconds_total"] = time.perf_counter() - t_wall0
    out = Path(a.out) if a.out else ROOT / "benchmarks" / "results" / (
        "latent_generation.json" if a.data == "digits" and not a.quick else
        f"latent_generation_{a.data}{'_quick' if a.quick else ''}.json")
    atomic_write_json(out, result)
    print(json.dumps({k: result[k] for k in ("data", "machine", "ratios", "wall_seconds_total")}, indent=2))
    return result


if __name__ == "__main__":
    main()
