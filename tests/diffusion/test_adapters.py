"""Exact adapters (latentgeo.diffusion.wrappers) against the exact Gaussian-mixture denoiser, in float64.

Every predictor below is the EXACT model of a Gaussian mixture in its own parametrisation, written from that
parametrisation's definition (not from the adapter's formula): wrapped, it must reproduce ``gm.denoiser``.
"""
import math

import numpy as np
import pytest
import torch

import latentgeo
from latentgeo.diffusion import EDMToVE, FlowToVE, VEDenoiser, VPToVE, ddpm_alphas_cumprod
from latentgeo.diffusion import wrappers as W
from latentgeo.errors import LatentgeoError
from latentgeo.fisher.exact import GaussianMixture

torch.set_num_threads(1)
F64 = torch.float64
TOL = 1e-6


def _gm():
    g = torch.Generator().manual_seed(0)
    n, K = 3, 2
    A = torch.randn(K, n, n, generator=g, dtype=F64)
    covs = A @ A.transpose(-1, -2) * 0.3 + 0.05 * torch.eye(n, dtype=F64)
    means = 1.5 * torch.randn(K, n, generator=g, dtype=F64)
    return GaussianMixture(torch.tensor([0.3, 0.7], dtype=F64), means, covs)


GM = _gm()


def _rel(a, b):
    return float(((a - b).norm(dim=1) / b.norm(dim=1)).max())


def _x(sig, seed=1):
    g = torch.Generator().manual_seed(seed)
    x0 = GM.sample(sig.shape[0], generator=g)
    return x0 + sig[:, None] * torch.randn(x0.shape, generator=g, dtype=F64)


def _vp_outputs(x_t, sigma, prediction):
    """Exact VP predictions at VP input x_t whose VE noise level is sigma: alpha = 1/sqrt(1+sigma^2), s = sigma alpha,
    x = x_t / alpha, D = E[x0|x]; eps = E[n|x_t] = (x - D)/sigma; v = alpha eps - s D; x0 = D."""
    alpha = 1 / torch.sqrt(1 + sigma ** 2)
    s = sigma * alpha
    x = x_t / alpha[:, None]
    D = GM.denoiser(x, sigma)
    eps = (x - D) / sigma[:, None]
    return {"epsilon": eps, "v": alpha[:, None] * eps - s[:, None] * D, "x0": D}[prediction]


# ------------------------------------------------------------------------------------------ table-driven VP


def _table_sigma(acp):
    """The model's own sigma(t) for fractional timesteps: log sigma interpolated between table entries (numpy,
    independent of the adapter's searchsorted inversion)."""
    ls = 0.5 * np.log((1 - acp.numpy()) / acp.numpy())

    def sigma_of_t(t):
        return torch.from_numpy(np.exp(np.interp(t.numpy(), np.arange(len(ls)), ls)))

    return ls, sigma_of_t


def _table_sigmas(ls, n=24, seed=0):
    rng = np.random.default_rng(seed)
    k = rng.integers(0, len(ls) - 1, n)
    on = np.exp(ls[k])
    between = np.exp(ls[k] + rng.uniform(0.05, 0.95, n) * (ls[k + 1] - ls[k]))
    return torch.from_numpy(on), torch.from_numpy(between)


@pytest.mark.parametrize("schedule", ["linear", "scaled_linear", "squaredcos_cap_v2"])
@pytest.mark.parametrize("prediction", ["epsilon", "v", "x0"])
def test_vp_discrete_exact_on_and_between_table_entries(schedule, prediction):
    kw = {"scaled_linear": dict(beta_start=0.00085, beta_end=0.012)}.get(schedule, {})
    acp = ddpm_alphas_cumprod(schedule, **kw)
    ls, sigma_of_t = _table_sigma(acp)
    seen = []

    def model(x_t, t):
        assert t.dtype == F64 and x_t.dtype == F64
        seen.append(t)
        return _vp_outputs(x_t, sigma_of_t(t), prediction)

    den = VPToVE(model, time="discrete", alphas_cumprod=acp, prediction=prediction)
    assert math.isclose(den.sigma_min, math.exp(ls[0]), rel_tol=1e-12)
    assert math.isclose(den.sigma_max, math.exp(ls[-1]), rel_tol=1e-12)
    on, between = _table_sigmas(ls)
    for sig in (on, between):
        x = _x(sig)
        assert _rel(den(x, sig), GM.denoiser(x, sig)) < TOL
    # on the table the model received exactly the integer timesteps
    assert torch.allclose(seen[0], seen[0].round(), atol=1e-9)
    assert (seen[1] - seen[1].floor()).min() > 0.01


def test_vp_log_snr_vp_sde_sigma_and_callable_time_exact():
    sig = torch.logspace(-2, 1.5, 20, dtype=F64)
    x = _x(sig)
    ref = GM.denoiser(x, sig)

    def logsnr_model(x_t, lam):  # alpha^2 = sigmoid(lambda): sigma = exp(-lambda/2)
        return _vp_outputs(x_t, torch.exp(-lam / 2), "v")

    assert _rel(VPToVE(logsnr_model, time="log_snr", prediction="v_prediction")(x, sig), ref) < TOL

    b0, b1, scale = 0.1, 20.0, 999.0

    def sde_model(x_t, tt):  # alpha(t)^2 = exp(-(b0 t + (b1 - b0) t^2 / 2))
        t = tt / scale
        return _vp_outputs(x_t, torch.sqrt(torch.expm1(b0 * t + 0.5 * (b1 - b0) * t ** 2)), "epsilon")

    sde = VPToVE(sde_model, time="vp_sde", prediction="eps", time_scale=scale)
    assert sde.sigma_min < 0.01 and 100 < sde.sigma_max < 200
    assert _rel(sde(x, sig), ref) < TOL

    def sigma_model(x_t, s):
        return _vp_outputs(x_t, s, "x0")

    assert _rel(VPToVE(sigma_model, time="sigma", prediction="sample")(x, sig), ref) < TOL

    def atan_model(x_t, u):  # user's time map t = atan(sigma)
        return _vp_outputs(x_t, torch.tan(u), "epsilon")

    assert _rel(VPToVE(atan_model, time=torch.atan, prediction="epsilon")(x, sig), ref) < TOL


def test_edm_flow_and_ve_adapters_exact():
    sig = torch.logspace(-2, 1.5, 20, dtype=F64)
    x = _x(sig)
    ref = GM.denoiser(x, sig)
    sd = 0.8

    def F(x_in, c_noise):  # the EDM network: D = c_skip x + c_out F(c_in x, ln(s)/4)
        s = torch.exp(4 * c_noise)
        s2 = s ** 2 + sd ** 2
        c_skip, c_out, c_in = sd ** 2 / s2, s * sd / s2.sqrt(), 1 / s2.sqrt()
        xx = x_in / c_in[:, None]
        return (GM.denoiser(xx, s) - c_skip[:, None] * xx) / c_out[:, None]

    edm = EDMToVE(F, sigma_data=sd, sigma_min=0.001, sigma_max=100)
    assert _rel(edm(x, sig), ref) < TOL

    def rf(x_t, tt):  # x_t = (1-t) x0 + t n, v = n - x0, called with 1000 t: E[v] = (x_t - E[x0|x_t]) / t
        t = tt / 1000
        s = t / (1 - t)
        return (x_t - GM.denoiser(x_t / (1 - t)[:, None], s)) / t[:, None]

    assert _rel(FlowToVE(rf, "rectified_flow", time_scale=1000)(x, sig), ref) < TOL

    def lg(x_t, t):  # x_t = (1-t) z0 + t z1, v = z1 - z0: E[v] = (E[z1|x_t] - x_t) / (1 - t)
        s = (1 - t) / t
        return (GM.denoiser(x_t / t[:, None], s) - x_t) / (1 - t)[:, None]

    assert _rel(FlowToVE(lg, "latentgeo")(x, sig), ref) < TOL
    assert _rel(VEDenoiser(GM.denoiser)(x, sig), ref) < TOL


# ------------------------------------------------------------------------------------------ range, names, dtypes


def _sd_eps_unit():
    acp = ddpm_alphas_cumprod("scaled_linear", 0.00085, 0.012)
    seen = {}

    def model(x_t, t):
        seen["t"] = t
        return torch.zeros_like(x_t)

    return VPToVE(model, time="discrete", alphas_cumprod=acp), seen


def test_out_of_range_sigma_is_refused_with_the_range_named():
    den, seen = _sd_eps_unit()
    assert 0.029 < den.sigma_min < 0.0293 and 14.5 < den.sigma_max < 14.7
    x = torch.zeros(3, 2)
    for bad in (80.0, torch.tensor([1.0, 20.0, 1.0]), torch.tensor([0.01, 1.0, 1.0])):
        with pytest.raises(LatentgeoError) as e:
            den(x, bad)
        msg = str(e.value)
        assert "0.029167" in msg and "14.61" in msg and "extrapolate=True" in msg and "\n" not in msg
    # the end points themselves (in float32) and sigma = 0 are accepted; sigma = 0 is the exact D(x, 0) = x
    y = torch.randn(3, 2)
    ends = torch.tensor([den.sigma_min, den.sigma_max, 0.0], dtype=torch.float32)
    out = den(y, ends)
    assert torch.isfinite(out).all() and torch.equal(out[2], y[2])
    # extrapolate=True: evaluated beyond the table, time extrapolated linearly (not clamped)
    den.extrapolate = True
    assert torch.isfinite(den(x, 80.0)).all() and float(seen["t"][0]) > 1000


def test_unreadable_sigma_gives_nan_not_a_clamp(monkeypatch):
    # CUDA tensors (and tensors inside torch.func transforms) are not read: out-of-range rows become NaN.
    den, _ = _sd_eps_unit()
    monkeypatch.setattr(W, "_readable", lambda t: False)
    out = den(torch.ones(3, 2), torch.tensor([1.0, 80.0, 0.0]))
    assert torch.isfinite(out[0]).all() and torch.isnan(out[1]).all() and torch.equal(out[2], torch.ones(2))


def test_vmap_over_sigma_uses_the_nan_path():
    den = VPToVE(lambda x_t, lam: torch.zeros_like(x_t), time="log_snr", sigma_min=0.1, sigma_max=10.0)
    x = torch.ones(1, 2, dtype=F64)
    out = torch.func.vmap(lambda s: den(x, s.reshape(1)))(torch.tensor([1.0, 100.0], dtype=F64))
    assert torch.isfinite(out[0]).all() and torch.isnan(out[1]).all()


def test_diffusers_prediction_names_are_aliases():
    sig = torch.logspace(-1, 1, 6, dtype=F64)
    x = _x(sig)
    for ours, theirs in (("epsilon", "epsilon"), ("v", "v_prediction"), ("x0", "sample"), ("epsilon", "eps")):
        def m(x_t, lam, p=ours):
            return _vp_outputs(x_t, torch.exp(-lam / 2), p)

        a = VPToVE(m, prediction=ours)(x, sig)
        b = VPToVE(m, prediction=theirs)(x, sig)
        assert torch.equal(a, b)
    with pytest.raises(LatentgeoError, match="v_prediction"):
        VPToVE(m, prediction="velocity")


def test_float64_data_through_fp32_model_and_table_survives_dtype_casts():
    net = torch.nn.Linear(3, 3)
    acp = ddpm_alphas_cumprod("linear")
    class Eps(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = net

        def forward(self, xt, t):
            assert xt.dtype == self.lin.weight.dtype and t.dtype == torch.float32
            return self.lin(xt) * (1 + t[:, None] / 1000)

    den = VPToVE(Eps(), time="discrete", alphas_cumprod=acp)
    x = torch.randn(4, 3, dtype=F64)
    s = torch.tensor([0.05, 0.5, 5.0, 50.0], dtype=F64)
    out = den(x, s)
    assert out.dtype == F64 and torch.isfinite(out).all()
    alpha = (1 + s ** 2).rsqrt()[:, None]
    t = den._t(s)
    with torch.no_grad():
        manual = x - s[:, None] * Eps()(alpha.float() * x.float(), t.float()).double()
    assert torch.allclose(out, manual, atol=1e-5)
    den.to(torch.float16)  # weights to fp16; the float64 log-sigma table must not be rounded
    assert den.time_map._log_sigmas.dtype == F64
    assert torch.allclose(den._t(s), t)
    assert den(x, s).dtype == F64


def test_shape_checks_learned_variance_and_sigma_zero():
    def two_c(x_t, t):
        return torch.cat([torch.zeros_like(x_t), torch.ones_like(x_t)], 1)

    with pytest.raises(LatentgeoError, match="learned_variance"):
        VPToVE(two_c)(torch.ones(2, 3), 1.0)
    assert torch.equal(VPToVE(two_c, learned_variance=True)(torch.ones(2, 3), 1.0), torch.ones(2, 3))
    with pytest.raises(LatentgeoError, match="floating-point"):
        VEDenoiser(GM.denoiser)(torch.ones(2, 3, dtype=torch.long), 1.0)
    edm = EDMToVE(lambda x, c: x * float("nan"), sigma_data=1.0)
    assert torch.equal(edm(torch.ones(2, 3), 0.0), torch.ones(2, 3))  # exact limit, not the NaN net


def test_flow_ranges_and_constructor_errors():
    f = FlowToVE(lambda x, t: x, "rectified_flow", t_min=0.0, t_max=0.5)
    assert f.sigma_min == 0.0 and math.isclose(f.sigma_max, 1.0)
    with pytest.raises(LatentgeoError, match=r"\[0, 1\]"):
        f(torch.ones(1, 2), 2.0)
    g = FlowToVE(lambda x, t: x, "latentgeo", t_min=0.2)
    assert g.sigma_min == 0.0 and math.isclose(g.sigma_max, 4.0)
    with pytest.raises(LatentgeoError):
        FlowToVE(lambda x, t: x, "sd3")
    with pytest.raises(LatentgeoError, match="sigma_data"):
        EDMToVE(lambda x, c: x, sigma_data=0.0)
    with pytest.raises(LatentgeoError, match="discrete"):
        VPToVE(lambda x, t: x, alphas_cumprod=ddpm_alphas_cumprod())
    with pytest.raises(LatentgeoError, match="schedule"):
        VPToVE(lambda x, t: x, time="discrete", alphas_cumprod=ddpm_alphas_cumprod(), sigma_max=80.0)
    with pytest.raises(LatentgeoError, match="strictly between"):
        VPToVE(lambda x, t: x, time="discrete", alphas_cumprod=ddpm_alphas_cumprod(rescale_zero_terminal_snr=True))


def test_save_is_refused_with_a_way_to_reference_the_model(tmp_path):
    from latentgeo.nets import MLP

    plain = VPToVE(lambda x, t: x, time="log_snr")
    with pytest.raises(LatentgeoError, match="save_pretrained"):
        latentgeo.save(plain, tmp_path / "a")
    reg = VPToVE(MLP(2, hidden=8, depth=1), time="discrete", alphas_cumprod=ddpm_alphas_cumprod())
    with pytest.raises(LatentgeoError) as e:
        latentgeo.save(reg, tmp_path / "b", config={})
    assert "latentgeo.save(wrapper.model" in str(e.value) and '"parametrization": "epsilon"' in str(e.value)
    reg.spec = {"path": "/models/ddpm"}
    with pytest.raises(LatentgeoError) as e:
        latentgeo.save(reg, tmp_path / "c")
    assert "'/models/ddpm'" in str(e.value) and "resolve_denoiser" in str(e.value) and "\n" not in str(e.value)
    assert not list(tmp_path.iterdir())


def test_ddpm_alphas_cumprod_checks():
    with pytest.raises(LatentgeoError, match="beta_schedule"):
        ddpm_alphas_cumprod("exp")
    with pytest.raises(LatentgeoError, match="num_train_timesteps"):
        ddpm_alphas_cumprod("linear", num_train_timesteps=1)
    acp = ddpm_alphas_cumprod("linear", 1e-4, 0.02, 1000)
    assert acp.dtype == F64 and acp.shape == (1000,) and math.isclose(float(acp[0]), 1 - 1e-4, rel_tol=1e-7)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_out_of_range_is_nan_without_sync():  # pragma: no cover - run on a GPU machine
    den, _ = _sd_eps_unit()
    x = torch.ones(2, 2, device="cuda")
    out = den(x, torch.tensor([1.0, 80.0], device="cuda"))
    assert out.device.type == "cuda" and torch.isfinite(out[0]).all() and torch.isnan(out[1]).all()
    with pytest.raises(LatentgeoError):
        den(x, 80.0)  # a Python float is checked for free
