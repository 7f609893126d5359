"""GPE vs VAE / AE / VAE+MDS / AE+MDS on Fashion-MNIST 32x32 (latent 30, batch 100, identical architectures).

Measures, at this machine's scale (GPE paper Table 1, sections 8.2 and 8.4):
  (a) iterations and seconds for a FRESH decoder to reach validation MSE 0.05 / 0.025 / 0.015 on a frozen GPE
      encoder vs a frozen (jointly trained) VAE encoder;
  (b) end-to-end time to the same thresholds: GPE (encoder, then decoder; the encoder time is included) vs VAE,
      AE, VAE+MDS, AE+MDS trained jointly;
  (c) decoder convergence on GPE encoders stopped at three held-out GME thresholds.

Timing: by default the CPU time of each single-threaded training process (``--clock cpu``), so that the numbers
are comparable on a shared, loaded machine; evaluation time is excluded, the GPE latent pre-computation (exact:
the encoder is frozen) is included. Validation = the first ``--n-val`` Fashion-MNIST TEST images (pixels in
[-1, 1]; MSE per pixel). All methods: Adam(lr, betas 0.5/0.999), batch 100, same seeds.

    python benchmarks/gpe_vs_vae.py --budget-seconds 150 --jobs 2      # the reduced run reported in results/
    python benchmarks/gpe_vs_vae.py --quick                            # smoke test (~1-2 min)
    python benchmarks/gpe_vs_vae.py --budget-seconds 180 --encoder-budget 60 --gme-thresholds 0.01 \
        --methods vae,ae --jobs 3                                         # the wide-decoder run in results/

The 10-minute run of issue 4's goal (results/gpe_vs_vae_10min.json; GPE: encoder 120 CPU s, early stop at
held-out GME 0.005, then decoder 480 s; joint methods 600 s; every run cosine lr from 2e-3 to 0 over its budget):

    python benchmarks/gpe_vs_vae.py --budget-seconds 480 --encoder-budget 120 --encoder-lr 2e-3 --lr 2e-3 \
        --lr-schedule cosine --decoder wide --methods vae,ae --gme-thresholds 0.005 --jobs 1 \
        --out benchmarks/results/gpe_vs_vae_10min.json
    python benchmarks/gpe_vs_vae.py ...same options... --parts joint --methods vae-mds,ae-mds \
        --out benchmarks/results/gpe_vs_vae_10min_mds.json
    python benchmarks/gpe_vs_vae.py ...same options... --parts merge \
        --extra-joint benchmarks/results/gpe_vs_vae_10min_mds.json --out benchmarks/results/gpe_vs_vae_10min.json

``--decoder wide|lean|mlp`` picks the decoder architecture used by EVERY method (default wide; the earlier lean-decoder
results are kept in results/gpe_vs_vae_lean.json).

Writes benchmarks/results/gpe_vs_vae.json (+ _curves.png) and prints the JSON.
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
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MSE_THRESHOLDS = (0.05, 0.025, 0.015)
JOINT = ("vae", "ae", "vae-mds", "ae-mds")


def _data(cfg):
    from latentgeo.data import fashion_mnist

    x = fashion_mnist("train", pad=True, n=cfg["n_train"])
    xv = fashion_mnist("test", pad=True, n=cfg["n_val"])
    return x, xv


def _setup(cfg):
    torch.set_num_threads(cfg["threads"])
    torch.manual_seed(cfg["seed"])


def _crossings(history, key, thresholds, offset_s=0.0):
    """First (step, seconds) at which history[key] < t, for each threshold (None if never)."""
    out = {}
    for t in thresholds:
        hit = next((r for r in history if r.get(key, math.inf) < t), None)
        out[str(t)] = None if hit is None else {"iterations": hit["step"], "seconds": round(hit["seconds"] + offset_s, 2)}
    return out


def _curve(history, key, offset_s=0.0):
    return [[r["step"], round(r["seconds"] + offset_s, 3), r[key]] for r in history if key in r]


def task_gpe_encoder(cfg, workdir):
    """Train the GPE encoder on the GME cost; snapshot it when the held-out GME first drops below each threshold."""
    from latentgeo.autoencoders import Encoder, evaluate_gme, train_gpe_encoder
    from latentgeo.checkpoint import save

    _setup(cfg)
    x, xv = _data(cfg)
    enc = Encoder([1, 32, 32], cfg["latent_dim"], width=cfg["enc_width"])
    pending = sorted(cfg["gme_thresholds"], reverse=True)
    snaps = {}

    def stop(row):
        while pending and row.get("val_gme", math.inf) < pending[0]:
            t = pending.pop(0)
            path = Path(workdir) / f"gpe_enc_{t}.safetensors"
            save(enc, path)
            snaps[str(t)] = {"path": str(path), "iterations": row["step"], "seconds": row["seconds"],
                             "val_gme": row["val_gme"]}
        return not pending

    res = train_gpe_encoder(enc, x, xv[:cfg["n_val_gme"]], steps=10 ** 9, eval_every=cfg["enc_eval_every"],
                            time_budget=cfg["enc_budget"], lr=cfg["encoder_lr"], seed=cfg["seed"],
                            clock=cfg["clock"], stop_fn=stop, lr_schedule=cfg["lr_schedule"])
    final = Path(workdir) / "gpe_enc_final.safetensors"
    save(enc, final)
    return {"snapshots": snaps, "final": {"path": str(final), "iterations": res["steps"], "seconds": res["seconds"],
                                          "val_gme": res["history"][-1].get("val_gme")},
            "curve": _curve(res["history"], "val_gme")}


def task_decoder(cfg, enc_path, label):
    """A fresh decoder on a FROZEN encoder (normalised latents), trained for the budget."""
    from latentgeo.autoencoders import Decoder, finalise_normalisation, train_decoder
    from latentgeo.checkpoint import load

    _setup(cfg)
    x, xv = _data(cfg)
    enc = load(enc_path).eval()
    t0 = time.process_time() if cfg["clock"] == "cpu" else time.perf_counter()
    finalise_normalisation(enc, None, x[:10000], decoder_on_raw=False)
    norm_s = (time.process_time() if cfg["clock"] == "cpu" else time.perf_counter()) - t0
    torch.manual_seed(cfg["seed"])
    dec = Decoder([1, 32, 32], cfg["latent_dim"], width=cfg["dec_width"], decoder=cfg["decoder"])
    res = train_decoder(dec, enc, x, xv, steps=10 ** 9, eval_every=cfg["eval_every"], time_budget=cfg["budget"],
                        lr=cfg["lr"], seed=cfg["seed"], clock=cfg["clock"], lr_schedule=cfg["lr_schedule"],
                        mse_threshold=min(MSE_THRESHOLDS) if cfg["stop_at_threshold"] else None)
    h = res["history"]
    return {"label": label, "iterations": res["steps"], "seconds": round(res["seconds"] + norm_s, 2),
            "encode_seconds": round(res["encode_seconds"] + norm_s, 2),
            "final_val_mse": h[-1]["val_mse"], "best_val_mse": min(r["val_mse"] for r in h),
            "reach": _crossings(h, "val_mse", MSE_THRESHOLDS, norm_s),
            "curve": _curve(h, "val_mse", norm_s),
            "sec_per_iter": round(res["seconds"] / max(1, res["steps"]), 4)}


def task_joint(cfg, method, workdir):
    from latentgeo.autoencoders import Decoder, Encoder, train_joint
    from latentgeo.checkpoint import save

    _setup(cfg)
    x, xv = _data(cfg)
    enc = Encoder([1, 32, 32], cfg["latent_dim"], width=cfg["enc_width"], variational=method.startswith("vae"))
    dec = Decoder([1, 32, 32], cfg["latent_dim"], width=cfg["dec_width"], decoder=cfg["decoder"])
    res = train_joint(method, enc, dec, x, xv, steps=10 ** 9, eval_every=cfg["eval_every"],
                      time_budget=cfg["joint_budget"], lr=cfg["lr"], seed=cfg["seed"], clock=cfg["clock"],
                      lr_schedule=cfg["lr_schedule"],
                      kl_weight=cfg["kl_weight"], mds_weight=cfg["mds_weight"],
                      mse_threshold=min(MSE_THRESHOLDS) if cfg["stop_at_threshold"] else None)
    path = Path(workdir) / f"{method}_enc.safetensors"
    save(enc, path)
    h = res["history"]
    return {"method": method, "iterations": res["steps"], "seconds": round(res["seconds"], 2),
            "final_val_mse": h[-1]["val_mse"], "best_val_mse": min(r["val_mse"] for r in h),
            "reach": _crossings(h, "val_mse", MSE_THRESHOLDS), "curve": _curve(h, "val_mse"),
            "sec_per_iter": round(res["seconds"] / max(1, res["steps"]), 4), "encoder_path": str(path)}


def _machine(load_start):
    cpu = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "logical_cpus": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "torch": torch.__version__,
            "loadavg_start": load_start, "loadavg_end": list(os.getloadavg()),
            "note": "shared 2-core machine with several other engineers' jobs running; single-threaded processes, "
                    "times are per-process CPU seconds unless clock=wall"}


def _ratio(slow, fast):
    if fast is None:
        return None
    if slow is None:
        return None
    return round(slow / fast, 2) if fast > 0 else None


def summarise(cfg, enc, decs, joints, vae_dec):
    gpe_final = decs["final"]
    enc_s = enc["final"]["seconds"]
    out = {"a_decoder_on_frozen_encoder": {}, "b_end_to_end": {}, "c_gme_threshold_vs_decoder": {}}
    for t in map(str, MSE_THRESHOLDS):
        g, v = gpe_final["reach"][t], vae_dec["reach"][t]
        row = {"gpe": g, "vae": v}
        if g and v:
            row["iteration_ratio_vae_over_gpe"] = _ratio(v["iterations"], g["iterations"])
            row["seconds_ratio_vae_over_gpe"] = _ratio(v["seconds"], g["seconds"])
        elif g and not v:
            row["iteration_ratio_vae_over_gpe"] = f">= {round(vae_dec['iterations'] / g['iterations'], 2)} " \
                                                  f"(VAE-encoder decoder never reached it in {vae_dec['iterations']} iterations)"
        out["a_decoder_on_frozen_encoder"][t] = row
    for t in map(str, MSE_THRESHOLDS):
        g = gpe_final["reach"][t]
        row = {"gpe_seconds": None if g is None else round(g["seconds"] + enc_s, 2),
               "gpe_encoder_seconds": round(enc_s, 2)}
        best = None
        for j in joints:
            r = j["reach"][t]
            row[j["method"]] = None if r is None else r["seconds"]
            if r is not None and (best is None or r["seconds"] < best[1]):
                best = (j["method"], r["seconds"])
        row["best_joint"] = best[0] if best else None
        if row["gpe_seconds"] is not None and best:
            row["speedup_vs_best_joint"] = _ratio(best[1], row["gpe_seconds"])
        elif row["gpe_seconds"] is not None:
            longest = max(j["seconds"] for j in joints)
            row["speedup_vs_best_joint"] = f">= {round(longest / row['gpe_seconds'], 2)} (no joint method reached it)"
        out["b_end_to_end"][t] = row
    for key, d in decs.items():
        gme = enc["snapshots"].get(key, {}).get("val_gme") if key != "final" else enc["final"]["val_gme"]
        out["c_gme_threshold_vs_decoder"][key] = {"encoder_val_gme": gme, "decoder_reach": d["reach"],
                                                 "decoder_final_val_mse": d["final_val_mse"]}
    return out


def plot(res, path):
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from latentgeo.checkpoint import atomic_write_bytes

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    enc_s = res["gpe_encoder"]["final"]["seconds"]
    c = res["decoders"]["final"]["curve"]
    axes[0].plot([p[1] + enc_s for p in c], [p[2] for p in c], label="GPE (encoder then decoder)", lw=2)
    axes[0].axvline(enc_s, color="C0", ls=":", lw=1)
    for j in res["joint"]:
        axes[0].plot([p[1] for p in j["curve"]], [p[2] for p in j["curve"]], label=j["method"])
    axes[0].set_xlabel(f"{res['config']['clock']} seconds (1 thread)")
    axes[0].set_title("(b) end to end: validation MSE")
    for name, d in (("GPE encoder", res["decoders"]["final"]), ("VAE encoder", res["vae_frozen_decoder"])):
        axes[1].plot([p[0] for p in d["curve"]], [p[2] for p in d["curve"]], label=name)
    axes[1].set_xlabel("decoder iterations")
    axes[1].set_title("(a) fresh decoder on a frozen encoder")
    for key, d in res["decoders"].items():
        gme = res["summary"]["c_gme_threshold_vs_decoder"][key]["encoder_val_gme"]
        axes[2].plot([p[0] for p in d["curve"]], [p[2] for p in d["curve"]],
                     label=f"encoder GME {gme:.3g}" if gme is not None else key)
    axes[2].set_xlabel("decoder iterations")
    axes[2].set_title("(c) decoder vs encoder GME")
    for a in axes:
        a.set_yscale("log")
        a.set_ylabel("validation MSE")
        for t in MSE_THRESHOLDS:
            a.axhline(t, color="grey", lw=0.6, ls="--")
        a.legend(fontsize=8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budget-seconds", type=float, default=600.0,
                   help="training budget of each decoder run; joint methods get this plus the GPE encoder budget")
    p.add_argument("--encoder-budget", type=float, default=None, help="GPE encoder budget (default budget/3)")
    p.add_argument("--gme-thresholds", default="0.05,0.02,0.01", help="held-out GME stops for part (c)")
    p.add_argument("--quick", action="store_true", help="tiny smoke run")
    p.add_argument("--jobs", type=int, default=1, help="parallel single-threaded worker processes")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--clock", choices=("cpu", "wall"), default="cpu")
    p.add_argument("--n-train", type=int, default=60000)
    p.add_argument("--n-val", type=int, default=1000)
    p.add_argument("--lr", type=float, default=1e-3, help="peak lr of the decoders and the joint methods")
    p.add_argument("--encoder-lr", type=float, default=None, help="peak lr of the GPE encoder (default --lr)")
    p.add_argument("--lr-schedule", choices=("constant", "cosine"), default="constant",
                   help="every run (encoder, decoders, joint): constant, or cosine to 0 over its own time budget")
    p.add_argument("--eval-every", type=int, default=None, help="validation period in iterations (default 50)")
    p.add_argument("--kl-weight", type=float, default=0.1)
    p.add_argument("--mds-weight", type=float, default=1.0)
    p.add_argument("--decoder", choices=("wide", "lean", "mlp"), default="wide",
                   help="decoder architecture (all methods)")
    p.add_argument("--methods", default=",".join(JOINT), help="jointly trained baselines to run (must include vae)")
    p.add_argument("--stop-at-threshold", action="store_true", help="stop each run once MSE < 0.015")
    p.add_argument("--parts", choices=("abc", "c", "joint", "merge"), default="abc",
                   help="'c' runs only part (c): the GPE encoder and decoders on its threshold snapshots; 'joint' "
                        "only the jointly trained --methods (JSON to merge with --extra-joint); 'merge' folds "
                        "--extra-joint into the finished run --out without training")
    p.add_argument("--extra-joint", default=None,
                   help="JSON of a '--parts joint' run with the same config: its methods join part (b)")
    p.add_argument("--out", default=None, help="JSON path (default benchmarks/results/gpe_vs_vae[_c].json)")
    a = p.parse_args(argv)
    if ("vae" not in a.methods.split(",") and a.parts != "joint") or any(m not in JOINT for m in a.methods.split(",")):
        p.error(f"--methods must be a comma list from {', '.join(JOINT)} including vae (part (a) needs its encoder)")
    if a.quick:
        a.budget_seconds, a.n_train, a.n_val = min(a.budget_seconds, 15.0), min(a.n_train, 3000), min(a.n_val, 300)
    enc_budget = a.encoder_budget if a.encoder_budget is not None else a.budget_seconds / 3
    cfg = {"budget": a.budget_seconds, "enc_budget": enc_budget, "joint_budget": a.budget_seconds + enc_budget,
           "gme_thresholds": [float(t) for t in a.gme_thresholds.split(",")], "threads": a.threads,
           "clock": a.clock, "n_train": a.n_train, "n_val": a.n_val, "n_val_gme": min(a.n_val, 500), "lr": a.lr,
           "encoder_lr": a.encoder_lr if a.encoder_lr is not None else a.lr, "lr_schedule": a.lr_schedule,
           "kl_weight": a.kl_weight, "mds_weight": a.mds_weight, "latent_dim": 30, "batch_size": 100,
           "enc_width": 32, "dec_width": 0, "decoder": a.decoder,
           "methods": [m for m in a.methods.split(",") if m], "eval_every": a.eval_every or (25 if a.quick else 50), "enc_eval_every": 50,
           "seed": 0, "stop_at_threshold": a.stop_at_threshold, "quick": a.quick, "jobs": a.jobs,
           "data": "fashion-mnist 32x32 (padded), pixels in [-1, 1]; validation = first n_val test images"}
    load_start = list(os.getloadavg())
    t_start = time.time()
    if a.out is None:
        a.out = str(ROOT / "benchmarks" / "results" / {"abc": "gpe_vs_vae.json", "c": "gpe_vs_vae_c.json",
                                                        "joint": "gpe_vs_vae_joint.json"}[a.parts])
    if a.parts == "c":
        return run_part_c(cfg, a, load_start, t_start)
    if a.parts == "joint":
        return run_joint_only(cfg, a, load_start, t_start)
    if a.parts == "merge":
        if not a.extra_joint:
            p.error("--parts merge needs --extra-joint and the finished run as --out")
        return run_merge(a, p.error)
    with tempfile.TemporaryDirectory() as work, ProcessPoolExecutor(max_workers=max(1, a.jobs)) as pool:
        f_enc = pool.submit(task_gpe_encoder, cfg, work)
        f_joint = [pool.submit(task_joint, cfg, m, work) for m in cfg["methods"]]
        enc = f_enc.result()
        f_dec = {k: pool.submit(task_decoder, cfg, v["path"], f"gme<{k}") for k, v in enc["snapshots"].items()
                 if float(k) != min(cfg["gme_thresholds"])}
        f_dec["final"] = pool.submit(task_decoder, cfg, enc["final"]["path"], "final")
        joints = [f.result() for f in f_joint]
        vae_path = next(j["encoder_path"] for j in joints if j["method"] == "vae")
        f_vae = pool.submit(task_decoder, cfg, vae_path, "vae-frozen")
        decs = {k: f.result() for k, f in f_dec.items()}
        vae_dec = f_vae.result()
    for j in joints:
        j.pop("encoder_path")
    if a.extra_joint:
        _merge_joint(cfg, joints, a.extra_joint, p.error)
    res = {"benchmark": "gpe_vs_vae", "config": cfg, "machine": _machine(load_start),
           "wall_seconds_total": round(time.time() - t_start, 1), "gpe_encoder": enc, "decoders": decs,
           "vae_frozen_decoder": vae_dec, "joint": joints}
    for snap in enc["snapshots"].values():
        snap.pop("path", None)
    enc["final"].pop("path", None)
    res["summary"] = summarise(cfg, enc, decs, joints, vae_dec)
    from latentgeo.checkpoint import atomic_write_json

    out = Path(a.out)
    atomic_write_json(out, res)
    plot(res, out.with_name(out.stem + "_curves.png"))
    print(json.dumps({"summary": res["summary"], "machine": res["machine"],
                      "sec_per_iter": {**{j["method"]: j["sec_per_iter"] for j in joints},
                                       "gpe_decoder": decs["final"]["sec_per_iter"]}}, indent=1))


def _merge_joint(cfg, joints, path, error):
    """Append the joint runs of a ``--parts joint`` JSON (same budget/lr/decoder/data) to ``joints``."""
    extra = json.loads(Path(path).read_text())
    for k in ("joint_budget", "lr", "lr_schedule", "decoder", "n_train", "n_val", "clock", "seed", "enc_width"):
        if extra["config"].get(k) != cfg.get(k):
            error(f"{path} was run with {k}={extra['config'].get(k)!r}, this run has {cfg.get(k)!r}")
    have = {j["method"] for j in joints}
    for j in extra["joint"]:
        if j["method"] not in have:
            joints.append({**j, "run": f"separate invocation ({Path(path).name}), machine {extra['machine']}"})


def run_merge(a, error):
    """Fold the joint runs of ``--extra-joint`` into the finished full run ``--out`` (summary and plot redone)."""
    from latentgeo.checkpoint import atomic_write_json

    out = Path(a.out)
    res = json.loads(out.read_text())
    _merge_joint(res["config"], res["joint"], a.extra_joint, error)
    res["config"]["methods"] = [j["method"] for j in res["joint"]]
    res["summary"] = summarise(res["config"], res["gpe_encoder"], res["decoders"], res["joint"],
                               res["vae_frozen_decoder"])
    atomic_write_json(out, res)
    plot(res, out.with_name(out.stem + "_curves.png"))
    print(json.dumps(res["summary"], indent=1))


def run_joint_only(cfg, a, load_start, t_start):
    """Only the jointly trained ``--methods`` (for ``--extra-joint`` of a later or earlier full run)."""
    from latentgeo.checkpoint import atomic_write_json

    with tempfile.TemporaryDirectory() as work, ProcessPoolExecutor(max_workers=max(1, a.jobs)) as pool:
        joints = [f.result() for f in [pool.submit(task_joint, cfg, m, work) for m in cfg["methods"]]]
    for j in joints:
        j.pop("encoder_path")
    res = {"benchmark": "gpe_vs_vae joint baselines only", "config": cfg, "machine": _machine(load_start),
           "wall_seconds_total": round(time.time() - t_start, 1), "joint": joints}
    atomic_write_json(Path(a.out), res)
    print(json.dumps({j["method"]: {"reach": j["reach"], "final_val_mse": j["final_val_mse"]} for j in joints},
                     indent=1))


def run_part_c(cfg, a, load_start, t_start):
    """Part (c) alone: decoders on GPE encoders stopped at each held-out GME threshold (paper section 8.2)."""
    from latentgeo.checkpoint import atomic_write_json

    with tempfile.TemporaryDirectory() as work, ProcessPoolExecutor(max_workers=max(1, a.jobs)) as pool:
        enc = pool.submit(task_gpe_encoder, cfg, work).result()
        f_dec = {k: pool.submit(task_decoder, cfg, v["path"], f"gme<{k}") for k, v in enc["snapshots"].items()}
        if not enc["snapshots"]:
            f_dec["final"] = pool.submit(task_decoder, cfg, enc["final"]["path"], "final")
        decs = {k: f.result() for k, f in f_dec.items()}
    for snap in enc["snapshots"].values():
        snap.pop("path", None)
    enc["final"].pop("path", None)
    table = {k: {"encoder_val_gme": enc["snapshots"].get(k, enc["final"])["val_gme"],
                 "encoder_iterations": enc["snapshots"].get(k, enc["final"])["iterations"],
                 "decoder_reach": d["reach"], "decoder_best_val_mse": d["best_val_mse"],
                 "decoder_mse_at": {str(it): next((c[2] for c in d["curve"] if c[0] >= it), None)
                                    for it in (100, 250, 500, 1000)}}
             for k, d in decs.items()}
    res = {"benchmark": "gpe_vs_vae part (c)", "config": cfg, "machine": _machine(load_start),
           "wall_seconds_total": round(time.time() - t_start, 1), "gpe_encoder": enc, "decoders": decs,
           "summary": {"c_gme_threshold_vs_decoder": table}}
    out = Path(a.out)
    atomic_write_json(out, res)
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from latentgeo.checkpoint import atomic_write_bytes

    fig, ax = plt.subplots(figsize=(5.5, 4))
    for k, d in decs.items():
        ax.plot([c[0] for c in d["curve"]], [c[2] for c in d["curve"]],
                label=f"encoder GME {table[k]['encoder_val_gme']:.3g}")
    ax.set_yscale("log")
    ax.set_xlabel("decoder iterations")
    ax.set_ylabel("validation MSE")
    ax.set_title("(c) decoder convergence vs encoder GME")
    ax.legend()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    atomic_write_bytes(out.with_name(out.stem + "_curves.png"), buf.getvalue())
    plt.close(fig)
    print(json.dumps({"summary": res["summary"], "machine": res["machine"]}, indent=1))


if __name__ == "__main__":
    main()
