"""Cost of one spacetime-geodesic optimisation step: seconds per Adam step vs curve points N and data dimension n.

Each step evaluates the discretised Fisher-Rao energy at all N points (one batched denoiser call on the probe-
replicated batch, one vector-Jacobian product for the divergences) and back-propagates through it (double backward).
Compared with
- ``naive``: the same energy with a Python loop over the N points (one denoiser call + VJP per point),
- ``net_floor``: the bare network cost of the same work (forward + VJP + double backward on the same rows, no
  curve, no energy, no optimiser) -- the lower bound of any implementation built on autograd.

Model: an EDM-preconditioned residual MLP (``latentgeo.nets.MLP``, hidden 64, depth 2) with random weights (speed does
not depend on training). Exact divergence (``probes=exact``) for n = 2, one Rademacher probe otherwise and also for
n = 2.

``--side-by-side`` (issue 15): one full Adam step (curve, energy, gradient, optimiser) timed side by side on the same
model and curve, in interleaved windows, as the per-thread CPU time (the minimum over windows: robust on a shared,
loaded machine) and the wall time:
- ``eager``: latentgeo's default eager step (the objective's gradient in closed form, one double backward; the
  divergence probes fused -- ONE forward pass, their vector-Jacobian products one vmapped backward -- when the
  replicated batch would exceed 256 rows, i.e. at N = 512 here, the probe-replicated batch at N = 128);
- ``eager_replicated``: the same, always with the probe-replicated batch (``fused_probes=False``);
- ``compiled``: the fused Inductor step (``latentgeo.spacetime.fast``);
- ``authors``: with ``--authors-repo DIR`` (a checkout of github.com/rafalkarczewski/spacetime-geometry), the authors'
  own step (their ``mol_utils.energy``, ``curves.CubicSpline``, Adam, ``loss.backward()``; imported from DIR, not
  copied) on their trained alanine checkpoint, next to latentgeo's steps on the same checkpoint (wrapped as
  ``D(x, sigma) = net(alpha x, log-SNR)``).
Models: the TPS MLP (2-D, random weights) and, with ``--authors-repo``, the authors' checkpoint (2-D); N = 128, 512;
plus latentgeo's eager step on 64-D and 784-D MLPs (one probe).

Usage::

    OMP_NUM_THREADS=2 python benchmarks/geodesic_cost.py [--threads 1 2] [--device cpu|cuda] [--quick]
    OMP_NUM_THREADS=1 python benchmarks/geodesic_cost.py --side-by-side [--authors-repo DIR] [--threads 1 2]

Prints JSON and writes ``benchmarks/results/geodesic_cost.json`` (merging results per device / section).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from latentgeo.checkpoint import atomic_write_json  # noqa: E402
from latentgeo.spacetime.family import eta, mu  # noqa: E402
from latentgeo.spacetime.geodesic import energy_and_grad  # noqa: E402
from latentgeo.spacetime.spline import SplineCurve  # noqa: E402


def make_denoiser(n: int, device: str, hidden: int = 64, depth: int = 2):
    from latentgeo.diffusion import EDMDenoiser
    from latentgeo.nets import MLP

    torch.manual_seed(0)
    net = MLP(n, hidden=hidden, depth=depth)
    torch.nn.init.normal_(net.out.weight, std=0.1)  # the zero-initialised head would make D linear
    den = EDMDenoiser(net, sigma_data=1.0).to(device).eval()
    for p in den.parameters():
        p.requires_grad_(False)
    return den


def _sync(device):
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def timeit(fn, device, min_time: float = 0.5, max_iter: int = 200, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    _sync(device)
    it, t0 = 0, time.perf_counter()
    while True:
        fn()
        it += 1
        _sync(device)
        el = time.perf_counter() - t0
        if el >= min_time or it >= max_iter:
            return el / it


def naive_step(den, curve, N, probes, gen):
    """Energy + gradient with a Python loop over the points (what a direct transcription would do)."""
    xs, sg = curve.evaluate(N)
    P = xs.shape[0]
    v = None if probes is None else (2 * torch.randint(0, 2, (1, P, *xs.shape[2:]), generator=gen) - 1).to(xs)
    ms = []
    for i in range(N):
        ms.append(mu(den, xs[:, i], sg[:, i], n_probes=probes, probes=v, create_graph=True))
    mx = torch.stack([m[0] for m in ms], 1)
    msc = torch.stack([m[1] for m in ms], 1)
    ex, es = eta(xs.reshape(P * N, -1), sg.reshape(-1))
    ex, es = ex.reshape(mx.shape), es.reshape(P, N)
    d = ((ex[:, 1:] - ex[:, :-1]) * (mx[:, 1:] - mx[:, :-1])).flatten(2).sum(-1) + (es[:, 1:] - es[:, :-1]) * (
        msc[:, 1:] - msc[:, :-1])
    E = 0.5 * (N - 1) * d.sum()
    return torch.autograd.grad(E, [curve.nodes])


def net_floor(den, rows, n, device, M):
    x = torch.randn(rows * M, n, device=device)
    s = torch.rand(rows * M, device=device) + 0.1
    v = torch.ones_like(x)

    def f():
        xx = x.clone().requires_grad_(True)
        ss = s.clone().requires_grad_(True)
        out = den(xx, ss)
        (g,) = torch.autograd.grad(out, xx, v, create_graph=True)
        torch.autograd.grad((g * v).sum() + out.sum(), (xx, ss))

    return f


def run(threads, device, Ns, dims, naive_max_N, quick):
    torch.set_num_threads(threads)
    rows = []
    for n in dims:
        den = make_denoiser(n, device)
        gen = torch.Generator().manual_seed(0)
        xa = torch.randn(1, n, generator=gen).to(device)
        xb = torch.randn(1, n, generator=gen).to(device)
        s0 = torch.tensor([0.135], device=device)
        for probes in ([None, 1] if n <= 4 else [1]):
            for N in Ns:
                curve = SplineCurve(xa, s0, xb, s0, 10)
                curve.nodes.data.normal_(0, 0.1, generator=None)
                opt = torch.optim.Adam([curve.nodes], lr=0.1)
                pgen = torch.Generator(device=device).manual_seed(0) if probes else None

                def step():
                    xs, sg = curve.evaluate(N)
                    _, _, (g,) = energy_and_grad(den, xs, sg, [curve.nodes], n_probes=probes, generator=pgen)
                    curve.nodes.grad = g
                    opt.step()

                t = timeit(step, device, min_time=0.3 if quick else 1.0)
                M = n if probes is None else probes
                floor = timeit(net_floor(den, N, n, device, M), device, min_time=0.3 if quick else 1.0)
                row = {"dim": n, "N": N, "probes": "exact" if probes is None else probes, "threads": threads,
                       "device": device, "s_per_step": t, "net_floor_s": floor, "step_over_floor": t / floor}
                if N <= naive_max_N:
                    cgen = torch.Generator().manual_seed(0)
                    tn = timeit(lambda: naive_step(den, curve, N, probes, cgen), device, min_time=0.3, max_iter=5,
                                warmup=1)
                    row["naive_s_per_step"] = tn
                    row["naive_over_batched"] = tn / t
                rows.append(row)
                print(json.dumps(row), flush=True)
    return rows


def make_tps_denoiser():
    """The TPS denoiser's architecture (latentgeo.molecules): periodic MLP hidden 64, depth 2, emb 32, float32 net
    driven with float64 curves, random weights (non-zero head)."""
    from latentgeo.diffusion import EDMDenoiser
    from latentgeo.nets import MLP

    torch.manual_seed(0)
    net = MLP(2, hidden=64, depth=2, emb_dim=32, periodic=True)
    torch.nn.init.normal_(net.out.weight, std=0.1)
    den = EDMDenoiser(net, sigma_data=1.0).eval()
    for p in den.parameters():
        p.requires_grad_(False)
    return den


def run_tps(threads, Ns, quick, energy_steps):
    """Eager vs compiled (``geodesic(..., compile=True)``) geodesic steps on the TPS denoiser in 2-D, side by side:
    seconds per Adam step (interleaved timing windows, so load changes hit both), the energy reached after
    ``energy_steps`` steps from the same start, and the one-off compile time."""
    import math

    from latentgeo.spacetime import geodesic
    from latentgeo.spacetime.fast import compiled_energy_step

    torch.set_num_threads(threads)
    den = make_tps_denoiser()
    a = (torch.tensor([-2.55, 2.7], dtype=torch.float64), math.exp(-2))
    b = (torch.tensor([0.95, -0.4], dtype=torch.float64), math.exp(-2))
    rows = []
    for N in Ns:
        curve = SplineCurve(a[0][None], torch.tensor([a[1]], dtype=torch.float64), b[0][None],
                            torch.tensor([b[1]], dtype=torch.float64), 10)
        curve.nodes.data.normal_(0, 0.1, generator=torch.Generator().manual_seed(0))
        t0 = time.perf_counter()
        fast = compiled_energy_step(den, curve, N)
        t_compile = time.perf_counter() - t0
        opt_e = torch.optim.Adam([curve.nodes], lr=0.1)

        def eager_step():
            xs, sg = curve.evaluate(N)
            _, _, (g,) = energy_and_grad(den, xs, sg, [curve.nodes], n_probes=None)
            curve.nodes.grad = g
            opt_e.step()

        def fast_step():
            _, g = fast(curve.nodes)
            curve.nodes.grad = g
            opt_e.step()

        te, tf = [], []
        for _ in range(3 if quick else 5):  # interleaved windows
            te.append(timeit(eager_step, "cpu", min_time=0.3 if quick else 1.0, max_iter=400))
            tf.append(timeit(fast_step, "cpu", min_time=0.3 if quick else 1.0, max_iter=400))
        te_m, tf_m = sorted(te)[len(te) // 2], sorted(tf)[len(tf) // 2]
        ge = geodesic(den, a, b, n_points=N, n_nodes=10, steps=energy_steps, n_probes=None)
        gf = geodesic(den, a, b, n_points=N, n_nodes=10, steps=energy_steps, n_probes=None, compile=True)
        row = {"model": "TPS MLP (periodic, hidden 64, depth 2, emb 32), 2-D, exact divergence", "N": N,
               "threads": threads, "eager_s_per_step": te_m, "compiled_s_per_step": tf_m,
               "compiled_over_eager": tf_m / te_m, "eager_windows": te, "compiled_windows": tf,
               "compile_seconds_first_call_in_process": t_compile,
               f"energy_after_{energy_steps}_steps": {"eager": ge.energy, "compiled": gf.energy,
                                                       "relative_difference": abs(gf.energy - ge.energy) /
                                                       abs(ge.energy)},
               "geodesic_seconds_per_step": {"eager": ge.seconds_per_step, "compiled": gf.seconds_per_step},
               "loadavg": [round(v, 2) for v in os.getloadavg()]}
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def equal_energy_check(N: int = 128, steps: int = 300, every: int = 25):
    """Energy histories of the same geodesic optimisation run eager, traced-unfused (``compile="fx"``) and compiled
    (Inductor): the traced graph is bitwise the eager computation; the fused one differs by float32 reassociation,
    which a non-converging Adam (lr 0.1) amplifies after ~100 steps."""
    import math

    from latentgeo.spacetime import geodesic

    den = make_tps_denoiser()
    a = (torch.tensor([-2.55, 2.7], dtype=torch.float64), math.exp(-2))
    b = (torch.tensor([0.95, -0.4], dtype=torch.float64), math.exp(-2))
    out = {"N": N, "steps": steps, "log_every": every}
    for name, c in (("eager", False), ("traced_fx", "fx"), ("compiled", True)):
        g = geodesic(den, a, b, n_points=N, n_nodes=10, steps=steps, n_probes=None, compile=c, log_every=every)
        out[name] = {"energy_history": g.history["energy"], "final_energy": g.energy}
    return out


def main_tps(args):
    load0 = os.getloadavg()
    rows = []
    for th in args.threads:
        rows += run_tps(th, [128] if args.quick else [128, 512], args.quick, 50 if args.quick else 300)
    out = Path(args.out)
    prev = json.loads(out.read_text()) if out.exists() else {}
    prev["tps_2d_compiled"] = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "torch": torch.__version__,
                    "loadavg_start": load0, "loadavg_end": os.getloadavg()},
        "note": "SHARED 2-core machine (other engineers' jobs running; see loadavg per row). Eager and compiled steps "
                "are timed in interleaved windows (median reported) so the ratio is measured side by side. "
                "Compiled = latentgeo.spacetime.fast (make_fx trace of the whole step incl. double backward, "
                "TorchInductor); compile time is a one-off per architecture/shape (disk-cached across processes). "
                "Energies after 300 steps differ by 1-12%: see equal_energy_check -- the per-step energy/gradient agree "
                "to float32 rounding and the histories coincide for ~100 steps, then the non-converging Adam (lr 0.1, "
                "random-weight denoiser) amplifies the rounding; the traced-unfused graph reproduces eager bitwise. "
                "2-thread rows: both cores were contended by other jobs (eager windows 0.05-0.65 s), unreliable.",
        "rows": rows,
        "target_s_per_step_N128": 0.002, "authors_s_per_step_N128_2threads": 0.006,
    }
    torch.set_num_threads(1)
    prev["tps_2d_compiled"]["equal_energy_check"] = equal_energy_check(128, 50 if args.quick else 300)
    head = {f"threads{r['threads']}_N{r['N']}": {"eager": r["eager_s_per_step"], "compiled": r["compiled_s_per_step"]}
            for r in rows}
    prev["headline_tps_2d_s_per_step"] = head
    atomic_write_json(out, prev)
    print(json.dumps({"headline_tps_2d_s_per_step": head, "written": str(out)}, indent=1))


def _cpu_and_wall(fn, window: float):
    """(thread CPU seconds, wall seconds) per call over one window of at least ``window`` CPU seconds."""
    n, c0, w0 = 0, time.thread_time(), time.perf_counter()
    while time.thread_time() - c0 < window:
        fn()
        n += 1
    return (time.thread_time() - c0) / n, (time.perf_counter() - w0) / n


def _adam_step(den, curve, N, probes=None, **kw):
    """One full eager geodesic step as ``geodesic()`` runs it (energy + gradient, Adam, energy read-out)."""
    opt = torch.optim.Adam([curve.nodes], lr=0.1)
    gen = torch.Generator().manual_seed(0)

    def step():
        xs, sg = curve.evaluate(N)
        E, _, (g,) = energy_and_grad(den, xs, sg, [curve.nodes], n_probes=probes, generator=gen, **kw)
        curve.nodes.grad = g
        opt.step()
        float(E.sum())

    return step


def _authors_path(repo: str) -> Path:
    """The authors' ``molecular_experiments`` folder, put on ``sys.path`` (their code runs only because the user
    named the checkout with ``--authors-repo``)."""
    mdir = Path(repo) / "molecular_experiments"
    for p in (str(mdir), str(Path(repo))):
        if p not in sys.path:
            sys.path.insert(0, p)
    return mdir


def authors_net(repo: str) -> torch.nn.Module:
    """The authors' trained alanine network from their checkout (weights only: never unpickled)."""
    mdir = _authors_path(repo)
    import mol_utils  # noqa: E402 (the authors' module)

    net = mol_utils.MLP(hidden_size=128, hidden_layers=3, emb_size=128, time_emb="sinusoidal", input_emb="sinusoidal")
    net.load_state_dict(torch.load(mdir / "diffusion_model.pt", map_location="cpu", weights_only=True))
    return net


def _authors_step(repo: str, N: int):
    """The authors' own geodesic step on their checkpoint (their code, imported from their checkout)."""
    net = authors_net(repo)
    import curves  # noqa: E402 (the authors' module)
    import mol_utils  # noqa: E402

    spline = curves.CubicSpline(begin=torch.tensor([4.0, -2.55, 2.7]), end=torch.tensor([4.0, 0.95, -0.4]),
                                num_nodes=10)
    opt = torch.optim.Adam(spline.parameters(), lr=0.1)
    t = torch.linspace(0, 1, N).unsqueeze(0)

    def step():
        opt.zero_grad()
        loss = mol_utils.energy(spline(t)[0], net)
        loss.backward()
        opt.step()
        loss.item()

    return net, step


class VPtoVE(torch.nn.Module):
    """A VP network ``net(x_t, log-SNR) -> E[x0 | x_t]`` as a latentgeo denoiser ``D(x, sigma)``.

    VP process ``x_t = alpha x0 + sigma_t eps`` with ``alpha^2 = sigmoid(l)``, ``l`` the log-SNR; in VE coordinates
    ``x = x_t / alpha``, ``sigma = exp(-l / 2)``, so ``D(x, sigma) = net(alpha x, l)`` (the net runs in float32)."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x, sigma):
        lam = -2.0 * torch.log(sigma)
        return self.net((torch.sigmoid(lam).sqrt()[:, None] * x).float(), lam.float()).to(x.dtype)


def run_side_by_side(threads, Ns, authors_repo, quick):
    from latentgeo.spacetime.fast import compiled_energy_step

    torch.set_num_threads(threads)
    window, reps = (0.1, 6) if quick else (0.15, 16)
    models = [("tps_mlp_random", make_tps_denoiser(), torch.float64)]
    authors = {}
    if authors_repo:
        for N in Ns:
            net, st = _authors_step(authors_repo, N)
            authors[N] = st
        models.append(("authors_checkpoint", VPtoVE(net).eval(), torch.float32))
    rows = []
    for name, den, dt in models:
        for p in den.parameters():
            p.requires_grad_(False)  # what geodesic() does during the optimisation
        for N in Ns:
            a, b = torch.tensor([[-2.55, 2.7]], dtype=dt), torch.tensor([[0.95, -0.4]], dtype=dt)
            s0 = torch.tensor([math.exp(-2)], dtype=dt)
            curves_ = {k: SplineCurve(a, s0, b, s0, 10) for k in ("eager", "eager_replicated", "compiled")}
            fns = {"eager": _adam_step(den, curves_["eager"], N),
                   "eager_replicated": _adam_step(den, curves_["eager_replicated"], N, fused_probes=False)}
            t0 = time.perf_counter()
            fast = compiled_energy_step(den, curves_["compiled"], N)
            t_compile = time.perf_counter() - t0
            opt_c = torch.optim.Adam([curves_["compiled"].nodes], lr=0.1)

            def compiled_step(fast=fast, c=curves_["compiled"], opt=opt_c):
                E, g = fast(c.nodes)
                c.nodes.grad = g
                opt.step()
                float(E.sum())

            fns["compiled"] = compiled_step
            if name == "authors_checkpoint":
                fns["authors"] = authors[N]
            for f in fns.values():
                f()
            res = {k: [] for k in fns}
            for _ in range(reps):
                for k, f in fns.items():
                    if k == "authors":  # their loop differentiates the weights too: leave them as their code has them
                        for p in den.parameters():
                            p.requires_grad_(True)
                    res[k].append(_cpu_and_wall(f, window))
                    for p in den.parameters():
                        p.requires_grad_(False)
            cpu = {k: min(c for c, _ in v) for k, v in res.items()}
            wall = {k: sorted(w for _, w in v)[len(v) // 2] for k, v in res.items()}
            row = {"model": name, "N": N, "threads": threads, "cpu_s_per_step_min": cpu,
                   "wall_s_per_step_median": wall, "compile_seconds": t_compile,
                   "loadavg": [round(v, 2) for v in os.getloadavg()]}
            if "authors" in cpu:
                row["over_authors_cpu"] = {k: cpu[k] / cpu["authors"] for k in cpu}
            rows.append(row)
            print(json.dumps(row), flush=True)
    for n in ([64] if quick else [64, 784]):
        den = make_denoiser(n, "cpu")
        g = torch.Generator().manual_seed(0)
        c = SplineCurve(torch.randn(1, n, generator=g), torch.tensor([0.135]), torch.randn(1, n, generator=g),
                        torch.tensor([0.135]), 10)
        st = _adam_step(den, c, 128, probes=1)
        st()
        cpu = min(_cpu_and_wall(st, window)[0] for _ in range(max(reps // 2, 3)))
        row = {"model": f"mlp_{n}d_random", "N": 128, "probes": 1, "threads": threads, "cpu_s_per_step_min": {
            "eager": cpu}}
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def main_side_by_side(args):
    load0 = os.getloadavg()
    rows = []
    for th in args.threads:
        rows += run_side_by_side(th, [128] if args.quick else [128, 512], args.authors_repo, args.quick)
    out = Path(args.out)
    prev = json.loads(out.read_text()) if out.exists() else {}
    prev["side_by_side"] = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "torch": torch.__version__,
                    "loadavg_start": load0, "loadavg_end": os.getloadavg()},
        "note": "one full Adam step per call; cpu = per-thread CPU time, minimum over interleaved windows (robust on "
                "this SHARED 2-core machine, where wall time swings 2x with the other jobs; for threads > 1 it is the "
                "calling thread's CPU only, so read the wall column there); 'authors' = the authors' own code on "
                "their checkpoint (float32, their weights requiring grad as in their loop); latentgeo's steps on the "
                "same checkpoint run in float32 with the weights frozen, as geodesic() does.",
        "rows": rows,
    }
    if not args.quick:
        atomic_write_json(out, prev)
    print(json.dumps({"written": str(out), "rows": len(rows)}))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--naive-max-n", type=int, default=128, help="largest N timed with the naive per-point loop")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--quick", action="store_true", help="fewer sizes, shorter timing windows")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "geodesic_cost.json"))
    ap.add_argument("--tps", action="store_true",
                    help="only the TPS denoiser in 2-D: eager vs compiled step, side by side")
    ap.add_argument("--side-by-side", action="store_true",
                    help="eager / replicated-probe eager / compiled (/ the authors' step) per Adam step, side by side")
    ap.add_argument("--authors-repo", default=None, help="checkout of rafalkarczewski/spacetime-geometry")
    args = ap.parse_args()
    if args.side_by_side:
        return main_side_by_side(args)
    if args.tps:
        return main_tps(args)
    Ns = [32, 128] if args.quick else [32, 128, 512]
    dims = [2, 16] if args.quick else [2, 16, 64, 784]
    load0 = os.getloadavg()
    rows = []
    for th in args.threads:
        rows += run(th, args.device, Ns, dims, naive_max_N=args.naive_max_n, quick=args.quick)
    load1 = os.getloadavg()
    machine = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
               "cpu_count": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version(),
               "loadavg_start": load0, "loadavg_end": load1}
    if args.device.startswith("cuda"):
        machine["gpu"] = torch.cuda.get_device_name(0)
    key = "cuda" if args.device.startswith("cuda") else "cpu"
    note = ("CPU timings on a SHARED 2-core machine with other jobs running (see loadavg); treat absolute numbers as "
            "upper bounds, ratios are more stable." if key == "cpu" else "GPU timings.")
    res = {"benchmark": "geodesic_cost", "model": "EDMDenoiser(MLP hidden=64 depth=2), random weights",
           "spline_nodes": 10, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    out = Path(args.out)
    prev = {}
    if out.exists():
        try:
            prev = json.loads(out.read_text())
        except ValueError:
            prev = {}
    prev.update(res)
    # merge: a run with other thread counts keeps earlier rows of this device (same cell -> replaced)
    old_rows = prev.get("results", {}).get(key, {}).get("rows", [])
    cell = lambda r: (r["dim"], r["N"], str(r["probes"]), r["threads"])  # noqa: E731
    new_cells = {cell(r) for r in rows}
    merged = [r for r in old_rows if cell(r) not in new_cells] + rows
    for r in rows:
        r["loadavg_during"] = [round(v, 2) for v in load1]
    prev.setdefault("results", {})[key] = {"machine": machine, "note": note, "rows": merged}
    # headline: the 2-D molecule setting (N = 128, exact divergence) per thread count
    head = {f"{r['device']}_threads{r['threads']}": r["s_per_step"] for r in merged
            if r["dim"] == 2 and r["N"] == 128 and r["probes"] == "exact"}
    prev.setdefault("headline_2d_N128_exact_s_per_step", {}).update(head)
    prev["reference"] = {"authors_code_2core_N128_s_per_step": 0.006, "authors_code_2core_N512_s_per_step": 0.014,
                         "target_N128_s_per_step": 0.002}
    atomic_write_json(out, prev)
    print(json.dumps({"headline_2d_N128_exact_s_per_step": prev["headline_2d_N128_exact_s_per_step"],
                      "written": str(out)}))


if __name__ == "__main__":
    main()
