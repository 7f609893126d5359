"""EDM preconditioning/loss/schedule, samplers and PF-ODE against closed forms and the exact mixture oracle."""
import math
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _diffusion_helpers import mixture_2d, null_sw, sliced_wasserstein  # noqa: E402

from latentgeo.checkpoint import load, save
from latentgeo.diffusion import (EDMDenoiser, EMA, VPToVE, edm_loss, edm_sigmas, edm_stochastic_sample,
                                 estimate_sigma_data, euler_maruyama_sample, heun_sample, initial_noise,
                                 pf_ode_decode, pf_ode_encode)
from latentgeo.errors import LatentgeoError
from latentgeo.fisher.exact import GaussianMixture
from latentgeo.nets import MLP, UNet

torch.set_num_threads(1)


def _gauss(n=2, c=0.7):
    return GaussianMixture(torch.ones(1, dtype=torch.float64), torch.zeros(1, n, dtype=torch.float64),
                           c * torch.eye(n, dtype=torch.float64)[None])


def test_edm_sigmas_schedule():
    s = edm_sigmas(10)
    assert s.shape == (11,) and s[-1] == 0
    assert math.isclose(float(s[0]), 80.0) and math.isclose(float(s[-2]), 0.002, rel_tol=1e-12)
    assert bool((s[1:] < s[:-1]).all())
    # rho-spacing: s_i^(1/7) is linear in i
    r = s[:-1] ** (1 / 7)
    assert torch.allclose(r[1:] - r[:-1], (r[1] - r[0]).expand(9), atol=1e-12)
    with pytest.raises(LatentgeoError):
        edm_sigmas(0)


def test_fresh_denoiser_is_gaussian_prior_denoiser():
    # The nets' zero output layer makes a fresh EDMDenoiser equal to c_skip x = E[x0|x] for x0 ~ N(0, sd^2 I).
    sd = 0.8
    den = EDMDenoiser("mlp", sigma_data=sd, net_kwargs={"in_dim": 3}).double()
    gm = _gauss(3, sd ** 2)
    x = torch.randn(16, 3, dtype=torch.float64)
    sig = torch.logspace(-2, 1.5, 16, dtype=torch.float64)
    assert torch.allclose(den(x, sig), gm.denoiser(x, sig), atol=1e-12)


def test_estimate_sigma_data():
    x = torch.randn(200000, 2, generator=torch.Generator().manual_seed(0)) * torch.tensor([1.0, 2.0]) + 5.0
    assert abs(estimate_sigma_data(x) - math.sqrt(2.5)) < 0.01
    with pytest.raises(LatentgeoError):
        estimate_sigma_data(torch.ones(10, 2))


def test_edm_loss_of_exact_denoiser_is_one():
    # For x0 ~ N(0, sd^2 I) the exact denoiser has per-coordinate error s^2 sd^2/(s^2+sd^2), which the EDM weight
    # (s^2+sd^2)/(s sd)^2 turns into exactly 1 for every sigma, so the expected loss is 1.
    sd = 0.6
    gm = _gauss(4, sd ** 2)

    class Exact(torch.nn.Module):
        sigma_data = sd

        def forward(self, x, s):
            return gm.denoiser(x, s)

    g = torch.Generator().manual_seed(0)
    x0 = gm.sample(100000, g)
    vals = torch.stack([edm_loss(Exact(), x0[i::10], g) for i in range(10)])
    assert abs(float(vals.mean()) - 1.0) < 4 * float(vals.std() / math.sqrt(10)) + 1e-3


@pytest.mark.parametrize("sampler,steps", [(heun_sample, 40), (edm_stochastic_sample, 40),
                                           (euler_maruyama_sample, 150)])
def test_samplers_with_exact_denoiser_recover_mixture(sampler, steps):
    # Statistic: mean over 4 sampler runs of SW(samples, fresh mixture samples), m = 2000 each.
    # Bound: 1.5x the mean SW between two FRESH sample sets of the same size (8 pairs) -- i.e. sampler output
    # must be about as close to the mixture as independent draws are. The 50% margin covers the known bias of
    # starting from N(0, 80^2 I) instead of the exact noised law (it shifts mixture weights by ~1%), which gave
    # ratios 1.03-1.25 here; a mixture with its means moved by 0.3 is far outside (checked below).
    gm, m = mixture_2d(), 2000
    bound = 1.5 * null_sw(gm, m, reduce="mean")
    sws = []
    for r in range(4):
        g = torch.Generator().manual_seed(7 + r)
        x = sampler(gm.as_denoiser(), initial_noise((m, 2), 80.0, g, torch.float64), edm_sigmas(steps), generator=g)
        assert x.dtype == torch.float64
        sws.append(sliced_wasserstein(x, gm.sample(m, torch.Generator().manual_seed(99 + r))))
    assert sum(sws) / len(sws) < bound, (sws, bound)
    # Power check: the same statistic on a mixture with means moved by 0.3 exceeds the bound.
    shifted = GaussianMixture(gm.weights, gm.means + 0.3, gm.covs)
    fresh = gm.sample(m, torch.Generator().manual_seed(99))
    assert sliced_wasserstein(shifted.sample(m, torch.Generator().manual_seed(5)), fresh) > bound


def test_pf_ode_encode_matches_gaussian_closed_form_and_decodes_back():
    # For x0 ~ N(0, c I) the PF-ODE is linear: x_sigma = sqrt((c + sigma^2)/(c + sigma_min^2)) x_{sigma_min}.
    c, smin, sig = 0.5, 0.002, 3.0
    gm = _gauss(2, c)
    x0 = gm.sample(256, torch.Generator().manual_seed(0))
    expected = math.sqrt((c + sig ** 2) / (c + smin ** 2)) * x0
    errs = []
    for steps in (64, 128):
        z = pf_ode_encode(gm.as_denoiser(), x0, sig, steps=steps, sigma_min=smin)
        errs.append(float(((z - expected) / expected).abs().max()))
    assert errs[1] < 3e-4
    assert 3.0 < errs[0] / errs[1] < 5.0  # Heun is second order: halving the step quarters the error
    back = pf_ode_decode(gm.as_denoiser(), z, sig, steps=128, sigma_min=smin)
    assert torch.allclose(back, x0, rtol=1e-3, atol=1e-6)
    # Mixture: encode/decode round trip, float64.
    gm2 = mixture_2d()
    y0 = gm2.sample(256, torch.Generator().manual_seed(1))
    rt = pf_ode_decode(gm2.as_denoiser(), pf_ode_encode(gm2.as_denoiser(), y0, 5.0, 128), 5.0, 128)
    assert float((rt - y0).abs().max()) < 1e-2


def test_vp_to_ve_matches_exact_denoiser():
    # Exact VP epsilon model of x0 ~ N(m, C) written from VP formulas: x_t = a x0 + s n,
    # E[n | x_t] = s (a^2 C + s^2 I)^-1 (x_t - a m). Wrapped to VE it must equal the exact VE denoiser.
    m = torch.tensor([0.5, -1.0], dtype=torch.float64)
    C = torch.tensor([[0.6, 0.2], [0.2, 0.3]], dtype=torch.float64)
    gm = GaussianMixture(torch.ones(1, dtype=torch.float64), m[None], C[None])

    def eps_log_snr(xt, lam):
        a2 = torch.sigmoid(lam)  # alpha^2 = 1/(1 + e^-lambda)
        a, s = a2.sqrt()[:, None], (1 - a2).sqrt()[:, None]
        cov = a2[:, None, None] * C + (1 - a2)[:, None, None] * torch.eye(2, dtype=torch.float64)
        return s * torch.linalg.solve(cov, (xt - a * m)[..., None])[..., 0]

    x = torch.randn(32, 2, dtype=torch.float64)
    sig = torch.logspace(-1.5, 1.5, 32, dtype=torch.float64)
    den = VPToVE(eps_log_snr, time="log_snr", prediction="epsilon")
    assert torch.allclose(den(x, sig), gm.denoiser(x, sig), atol=1e-10)

    # Discrete DDPM schedule: at sigma equal to a table entry the model must receive that integer timestep.
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    acp = torch.cumprod(1 - betas, 0)
    seen = {}

    def eps_discrete(xt, t):
        seen["t"] = t.clone()
        a = acp[t.round().long()]
        return eps_log_snr(xt, torch.log(a / (1 - a)))

    den2 = VPToVE(eps_discrete, time="discrete", alphas_cumprod=acp)
    ks = torch.tensor([0, 10, 500, 999] * 8)
    s_k = ((1 - acp[ks]) / acp[ks]).sqrt()
    out = den2(x, s_k)
    assert torch.allclose(seen["t"], ks.double(), atol=1e-6)
    assert torch.allclose(out, gm.denoiser(x, s_k), atol=1e-8)


def test_ema_formula_and_state_roundtrip():
    net = torch.nn.Linear(2, 2)
    ema = EMA(net, decay=0.9, warmup=False)
    w0 = net.weight.detach().clone()
    with torch.no_grad():
        net.weight.add_(1.0)
    ema.update(net)
    assert torch.allclose(ema.module.weight, 0.9 * w0 + 0.1 * (w0 + 1.0))
    ema2 = EMA(torch.nn.Linear(2, 2), decay=0.5)
    ema2.load_state_dict(ema.state_dict())
    assert torch.equal(ema2.module.weight, ema.module.weight) and ema2.num_updates == 1


def test_nets_shapes_periodic_and_checkpoint_roundtrip(tmp_path):
    u = EDMDenoiser("unet", sigma_data=0.5, net_kwargs={"channels": 1, "base": 8})
    for px in (8, 28, 32):
        assert u(torch.randn(2, 1, px, px), torch.tensor([0.1, 3.0])).shape == (2, 1, px, px)
    mlp = MLP(2, hidden=16, depth=2, periodic=True)
    torch.nn.init.normal_(mlp.out.weight)
    x, c = torch.randn(5, 2), torch.randn(5)
    assert torch.allclose(mlp(x, c), mlp(x + 2 * math.pi, c), atol=1e-5)
    # Module instance (registered) and net name both save and rebuild to identical outputs.
    for den in (EDMDenoiser(MLP(3, hidden=8, depth=1), sigma_data=1.3),
                EDMDenoiser("unet", sigma_data=0.4, net_kwargs={"channels": 2, "base": 8, "mults": [1, 2]})):
        for p in den.parameters():
            torch.nn.init.normal_(p, std=0.1)
        path = save(den, tmp_path / "d")
        den2 = load(path)
        xx = torch.randn(3, 3) if isinstance(den.net, MLP) else torch.randn(3, 2, 8, 8)
        assert den2.sigma_data == den.sigma_data
        assert torch.equal(den(xx, torch.full((3,), 0.7)), den2(xx, torch.full((3,), 0.7)))


def test_float64_sampling_with_float32_net():
    den = EDMDenoiser("mlp", sigma_data=1.0, net_kwargs={"in_dim": 2, "hidden": 8, "depth": 1})
    x = initial_noise((4, 2), 80.0, torch.Generator().manual_seed(0), torch.float64)
    y = heun_sample(den, x, edm_sigmas(5))
    assert y.dtype == torch.float64 and torch.isfinite(y).all()


def test_diffusers_unet_adapter_and_vp_wrapper(tmp_path):
    diffusers = pytest.importorskip("diffusers")
    unet = diffusers.UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16),
                                 layers_per_block=1, down_block_types=("DownBlock2D", "DownBlock2D"),
                                 up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=4)
    from latentgeo.nets import DiffusersUNet

    den = EDMDenoiser(DiffusersUNet(unet), sigma_data=0.5)
    x, s = torch.randn(2, 1, 8, 8), torch.tensor([0.1, 5.0])
    with torch.no_grad():
        y = den(x, s)
        assert y.shape == x.shape
        den2 = load(save(den, tmp_path / "du"))  # rebuilt from the recorded diffusers config
        assert torch.equal(den2(x, s), y)
    # A DDPM-style epsilon UNet over 1000 discrete timesteps, wrapped to VE: D = x - sigma * eps(alpha x, t).
    acp = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000), 0)
    vp = VPToVE(unet, time="discrete", alphas_cumprod=acp)
    with torch.no_grad():
        eps = unet(x / (1 + s.view(-1, 1, 1, 1) ** 2).sqrt(), vp._t(s)).sample
        assert torch.allclose(vp(x, s), x - s.view(-1, 1, 1, 1) * eps, atol=1e-5)
