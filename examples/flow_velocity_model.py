"""A rectified-flow velocity model (SD3 / FLUX convention) as a flow for sampling AND as a denoiser for Fisher curves.

What it shows
    Flow-matching models predict a velocity instead of a denoised image. In the SD3 / FLUX ("rectified flow")
    convention ``x_t = (1 - t) x0 + t n`` and the model predicts ``v = n - x0`` at ``timestep = 1000 t``.
    latentgeo takes such a model from a TorchScript file (or ``code="module:factory"`` / an in-memory module):

    - ``resolve_flow(path, parametrization="velocity", time_scale=1000)`` -> a latentgeo flow ``v(x, t)`` (noise at
      t = 0) for ``latentgeo.flows.flow_sample``;
    - ``resolve_denoiser(path, parametrization="velocity", time_scale=1000)`` -> ``FlowToVE``, the exact VE denoiser
      ``D(x, sigma) = x_t - t v`` at ``t = sigma / (1 + sigma)``, so Fisher curves, geodesics and DiffED all work on
      flow models.

    The model here is the EXACT velocity field of Gaussian data ``x0 ~ N(mu, s^2 I)`` (latent-shaped, 4x4x4), saved
    as TorchScript, so every number has a closed form to compare with: the flow's samples have mean mu and std s,
    ``D(x, sigma) = mu + s^2 / (s^2 + sigma^2) (x - mu)``, FI = n / (s^2 + sigma^2), FIR = -n / (s^2 + sigma^2)^2.

How to run (under a minute on 2 CPU cores; nothing is downloaded)
    .venv/bin/python examples/flow_velocity_model.py

For a real model
    Export your velocity network with a fixed condition (diffusers SD3/FLUX transformers need text embeddings, so
    they are not loaded from a pipeline folder; wrap the transformer with a fixed prompt embedding and trace it)::

        ts = torch.jit.trace(MyFixedPromptWrapper(transformer).eval(), (x_example, t_example))
        ts.save("my_flow.pt")
        flow = resolve_flow("my_flow.pt", parametrization="velocity", time_scale=1000, device="cuda")
        den = resolve_denoiser("my_flow.pt", parametrization="velocity", time_scale=1000, device="cuda")

    or pass your own code: ``resolve_flow(code="mypkg.models:make_flow", parametrization="velocity")``.
    A flow trained with latentgeo (``latentgeo train flow``, independent coupling) needs no parametrization at all:
    ``resolve_flow("runs/flow")`` / ``resolve_denoiser("runs/flow")``.
"""
import math

import torch
from torch import nn

import _tiny_models as tiny
from latentgeo.fisher import fisher_curves
from latentgeo.flows import flow_sample
from latentgeo.resolve import resolve_denoiser, resolve_flow

torch.set_num_threads(1)
torch.manual_seed(0)

SHAPE = (4, 4, 4)            # a latent-shaped sample, like an SD3 latent (16 x 128 x 128) only tiny
S = 0.5                      # data std


class GaussianVelocity(nn.Module):
    """Exact rectified-flow velocity ``v(x_t, timestep) = E[n - x0 | x_t]`` of ``x0 ~ N(mu, S^2 I)``,
    ``x_t = (1 - t) x0 + t n``, ``timestep = 1000 t`` (the diffusers convention)."""

    def __init__(self, mu: torch.Tensor, s: float):
        super().__init__()
        self.register_buffer("mu", mu)
        self.s2 = float(s) ** 2

    def forward(self, x: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        t = (timestep / 1000.0).reshape(-1, 1, 1, 1).to(x.dtype)
        a = 1.0 - t
        r = x - a * self.mu
        var = a * a * self.s2 + t * t
        e_x0 = self.mu + (a * self.s2 / var) * r
        e_n = (t / var) * r
        return e_n - e_x0


mu = torch.linspace(-1, 1, math.prod(SHAPE)).reshape(SHAPE)
path = tiny.models_dir() / "gaussian-velocity.pt"                       # <- your TorchScript file here
torch.jit.script(GaussianVelocity(mu, S)).save(str(path))
print("model:", path, "(TorchScript, SD3/FLUX velocity convention, timestep = 1000 t)")

# 1. as a flow: sample noise -> data
# TorchScript is code (its forward is the file's program): load it only when you trust it, and say so
flow = resolve_flow(path, parametrization="velocity", time_scale=1000, allow_torchscript=True)
n, steps = (64, 8) if tiny.QUICK else (512, 32)
z = flow_sample(flow, torch.randn(n, *SHAPE, generator=torch.Generator().manual_seed(0)), steps=steps, method="heun")
err_mu = float((z.mean(0) - mu).abs().mean())
print(f"flow_sample ({steps} Heun steps, {n} samples): |mean - mu| {err_mu:.3f} (MC error ~{S / math.sqrt(n):.3f}), "
      f"std {float(z.std(0).mean()):.3f} (exact {S})")

# 2. as a denoiser: exact posterior mean, then Fisher curves against the closed form
den = resolve_denoiser(path, parametrization="velocity", time_scale=1000, allow_torchscript=True)
print(f"denoiser: {type(den).__name__}, sigma range [{den.sigma_min:g}, {den.sigma_max:g}]")
x0 = mu + S * torch.randn(64 if tiny.QUICK else 256, *SHAPE, generator=torch.Generator().manual_seed(1))
sig = torch.tensor([0.7, 2.0]) if tiny.QUICK else torch.tensor([0.05, 0.2, 0.7, 2.0, 8.0])
with torch.no_grad():
    xs = x0[:8] + 1.3 * torch.randn_like(x0[:8])
    exact = mu + S ** 2 / (S ** 2 + 1.3 ** 2) * (xs - mu)
    print(f"max |D(x, 1.3) - exact posterior mean| = {float((den(xs, torch.full((8,), 1.3)) - exact).abs().max()):.2e}")
c = fisher_curves(den, x0, sig, n_probes=2, generator=torch.Generator().manual_seed(2))
nd = math.prod(SHAPE)
print(f"{'sigma':>7} {'FI':>10} {'exact':>10} {'+-se':>8} {'FIR':>11} {'exact':>11}")
ok = True
for i, s in enumerate(sig.tolist()):
    fi, fir = nd / (S ** 2 + s ** 2), -nd / (S ** 2 + s ** 2) ** 2
    print(f"{s:7.3f} {float(c.fi[i]):10.4g} {fi:10.4g} {float(c.fi_se[i]):8.2g} {float(c.fir[i]):11.4g} {fir:11.4g}")
    ok &= abs(float(c.fi[i]) - fi) <= 5 * float(c.fi_se[i]) + 0.02 * fi
print("FI within 5 standard errors (+2%) of the closed form:", bool(ok))
if not ok:
    raise SystemExit(1)
