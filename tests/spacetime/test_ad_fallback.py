"""JVPs through ops without forward-mode AD (issue 13): latentgeo.autodiff's fallbacks, and the estimators that use
them (Fisher curves, encoder penalties, spacetime energy / geodesic / DiffED) on tiny diffusers models with attention."""
import ast
import copy
import math
from pathlib import Path

import pytest
import torch

from latentgeo import autodiff
from latentgeo.errors import LatentgeoError

torch.set_num_threads(1)
F64 = torch.float64
diffusers = pytest.importorskip("diffusers")


def _rel(a, b):
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))


# ------------------------------------------------------------------------------------------------ small MLP
@pytest.fixture(scope="module")
def mlp_den():
    from latentgeo.diffusion import EDMDenoiser
    from latentgeo.nets import MLP

    torch.manual_seed(0)
    return EDMDenoiser(MLP(3, hidden=32, depth=2, emb_dim=16), sigma_data=0.5).to(F64).eval()


@pytest.mark.parametrize("stage", ["reverse", "forward_math"])
def test_fallback_jvp_equals_forward_mode_on_mlp(mlp_den, stage):
    g = torch.Generator().manual_seed(1)
    x, v = torch.randn(5, 3, generator=g, dtype=F64), torch.randn(5, 3, generator=g, dtype=F64)
    s = torch.full((5,), 0.7, dtype=F64)

    def f(y):
        return mlp_den(y, s)

    with torch.no_grad():
        o_ref, t_ref = torch.func.jvp(f, (x,), (v,))
        o, t = autodiff.jvp(f, (x,), (v,), mode=stage)
    assert _rel(o, o_ref) < 1e-12 and _rel(t, t_ref) < 1e-6
    assert not t.requires_grad  # no graph under no_grad, even where grad mode was switched on inside
    # under vmap over tangents (the Fisher-curve batching), and with tuple outputs
    V = torch.randn(4, 5, 3, generator=g, dtype=F64)
    with torch.no_grad():
        _, tv = torch.func.vmap(lambda u: autodiff.jvp(f, (x,), (u,), mode=stage))(V)
        _, tv_ref = torch.func.vmap(lambda u: torch.func.jvp(f, (x,), (u,)))(V)
        (_, _), (ta, tb) = autodiff.jvp(lambda y: (f(y), f(y) - y), (x,), (v,), mode=stage)
    assert _rel(tv, tv_ref) < 1e-6 and _rel(ta, t_ref) < 1e-6 and _rel(tb, t_ref - v) < 1e-6
    # the JVP can itself be differentiated (reverse over forward / reverse over the double VJP)
    grads = []
    for mode in ("forward", stage):
        xx = x.clone().requires_grad_(True)
        _, t = autodiff.jvp(f, (xx,), (v,), mode=mode)
        p = next(mlp_den.parameters())
        grads.append(torch.autograd.grad((t ** 2).sum(), (xx, p)))
    assert _rel(grads[1][0], grads[0][0]) < 1e-6 and _rel(grads[1][1], grads[0][1]) < 1e-6
    # second order: d^2/ds^2 f(x + s v)
    with torch.no_grad():
        j2, a2 = autodiff.jvp2(f, x, v, mode=stage)
        with pytest.raises(NotImplementedError, match="silu_backward"):  # why "forward_math" exists
            torch.func.jvp(lambda y: torch.func.jvp(f, (y,), (v,))[1], (x,), (v,))
    a_ref = torch.func.jvp(lambda y: torch.func.jvp(f, (y,), (v,))[1], (x,), (v,))[1].detach()
    assert _rel(j2, t_ref) < 1e-6 and _rel(a2, a_ref) < 1e-6


def test_fisher_curves_same_numbers_with_forced_fallback(mlp_den):
    from latentgeo.fisher import fisher_curves

    x0 = torch.randn(12, 3, generator=torch.Generator().manual_seed(2), dtype=F64)
    kw = dict(sigmas=[0.05, 0.5, 3.0], n_probes=3)
    a = fisher_curves(mlp_den, x0, generator=torch.Generator().manual_seed(3), **kw)
    with autodiff.use_mode("reverse"):
        b = fisher_curves(mlp_den, x0, generator=torch.Generator().manual_seed(3), **kw)
    assert a.meta["jvp_mode"] == "forward" and b.meta["jvp_mode"] == "reverse"
    for k in ("fi", "fir", "mmse", "mmse_rate"):
        assert _rel(getattr(b, k), getattr(a, k)) < 1e-6, k


def test_auto_falls_back_only_on_forward_ad_failures_and_remembers():
    calls = {"n": 0}

    class NoJvp(torch.autograd.Function):  # torch.func style, backward only: forward-mode AD is not implemented
        @staticmethod
        def forward(x):
            calls["n"] += 1
            return x.sin()

        @staticmethod
        def setup_context(ctx, inputs, output):
            ctx.save_for_backward(inputs[0])

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return g * x.cos()

    class OldStyle(torch.autograd.Function):  # old style: torch.func rejects it, plain autograd does not
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x.sin()

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return g * x.cos()

    class M(torch.nn.Module):
        def __init__(self, fn):
            super().__init__()
            self.fn = fn

        def forward(self, x):
            return self.fn.apply(x) * 2.0

    x, v = torch.randn(4, dtype=F64), torch.randn(4, dtype=F64)
    for fn in (NoJvp, OldStyle):
        m = M(fn)
        _, t = autodiff.jvp(m, (x,), (v,))
        assert torch.allclose(t, 2 * x.cos() * v, rtol=1e-12)
        assert autodiff.ad_mode(m) == "reverse"
    with pytest.raises(NotImplementedError):
        torch.func.jvp(M(NoJvp), (x,), (v,))
    m = M(NoJvp)
    autodiff.jvp(m, (x,), (v,))
    calls["n"] = 0
    autodiff.jvp(m, (x,), (v,))
    assert calls["n"] == 1  # went straight to the remembered fallback (no failed forward-mode attempt first)
    autodiff.reset(m)
    assert autodiff.ad_mode(m) is None

    def broken(y):  # a genuine error: raised as it is, not hidden behind a fallback
        raise RuntimeError("boom: shapes do not match")

    with pytest.raises(RuntimeError, match="boom"):
        autodiff.jvp(broken, (x,), (v,))
    with pytest.raises(LatentgeoError, match="tangent 0 has shape"):
        autodiff.jvp(m, (x,), (v[:2],))
    with pytest.raises(LatentgeoError, match="unknown JVP mode"):
        autodiff.jvp(m, (x,), (v,), mode="sideways")


def test_spacetime_layering_is_one_way():
    root = Path(__file__).resolve().parents[2] / "latentgeo" / "spacetime"

    def imports(name):
        tree = ast.parse((root / f"{name}.py").read_text())
        return {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}

    assert "latentgeo.spacetime.geodesic" not in imports("fast")
    assert "latentgeo.spacetime.geodesic" not in imports("energy")
    assert "latentgeo.spacetime.fast" not in imports("energy")
    src = ast.parse((Path(__file__).resolve().parents[2] / "latentgeo" / "autodiff.py").read_text())
    mods = {n.module for n in ast.walk(src) if isinstance(n, ast.ImportFrom) and n.module}
    mods |= {a.name for n in ast.walk(src) if isinstance(n, ast.Import) for a in n.names}
    assert {m for m in mods if m.startswith("latentgeo")} <= {"latentgeo.errors"}


# ------------------------------------------------------------------------------------------------ diffusers
def _unet():
    from diffusers import UNet2DModel

    torch.manual_seed(0)
    return UNet2DModel(sample_size=8, in_channels=2, out_channels=2, layers_per_block=1, block_out_channels=(8, 16),
                       down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                       up_block_types=("AttnUpBlock2D", "UpBlock2D"), norm_num_groups=4, attention_head_dim=8).eval()


def _processors(model):
    return {type(m.processor).__name__ for m in model.modules() if hasattr(m, "set_processor")}


@pytest.fixture(scope="module")
def unet_pair():
    """The same tiny UNet as two denoisers: diffusers' default (fused SDPA) attention, and the math processor."""
    from latentgeo.diffusion import EDMDenoiser
    from latentgeo.nets import DiffusersUNet

    base = _unet()
    fused = EDMDenoiser(DiffusersUNet(base, math_attention=False), sigma_data=0.5).eval()
    math_ = EDMDenoiser(DiffusersUNet(copy.deepcopy(base)), sigma_data=0.5).eval()
    assert _processors(fused.net.unet) == {"AttnProcessor2_0"}
    assert _processors(math_.net.unet) == {"MathAttnProcessor"}
    assert math_.net._latentgeo_config["math_attention"] is True
    return fused, math_


def test_math_processor_same_outputs_and_survives_checkpoints(unet_pair, tmp_path):
    from latentgeo.checkpoint import load, save

    fused, math_ = unet_pair
    x, s = torch.randn(2, 2, 8, 8), torch.tensor([0.1, 3.0])
    with torch.no_grad():
        y = math_(x, s)
        assert _rel(y, fused(x, s)) < 1e-5
        den2 = load(save(math_, tmp_path / "du"))
        assert _processors(den2.net.unet) == {"MathAttnProcessor"} and torch.equal(den2(x, s), y)


def test_raw_forward_mode_fails_in_diffusers_attention(unet_pair):
    fused, _ = unet_pair
    x = torch.randn(2, 2, 8, 8)
    with pytest.raises((NotImplementedError, RuntimeError), match="forward AD"):
        torch.func.jvp(lambda y: fused(y, torch.full((2,), 0.5)), (x,), (x,))


def test_fisher_curves_through_unet_attention(unet_pair):
    from latentgeo.fisher import fisher_curves

    fused, math_ = unet_pair
    x0 = torch.randn(3, 2, 8, 8, generator=torch.Generator().manual_seed(4))
    out = []
    for den in (fused, math_):
        c = fisher_curves(den, x0, [0.3, 2.0], n_probes=2, generator=torch.Generator().manual_seed(5), dtype=F64)
        for k in ("fi", "fir", "mmse", "mmse_rate"):
            assert bool(torch.isfinite(getattr(c, k)).all()), k
        out.append(c)
    # fused attention: forward mode fails, the reverse fallback runs; math processor: plain forward mode
    assert out[0].meta["jvp_mode"] == "reverse" and out[1].meta["jvp_mode"] == "forward"
    for k in ("fi", "fir", "mmse", "mmse_rate"):
        assert _rel(getattr(out[0], k), getattr(out[1], k)) < 1e-6, k


def test_spacetime_energy_geodesic_and_diffed_through_unet_attention(unet_pair):
    from latentgeo.spacetime import curve_energy, edit_distance, geodesic

    fused, math_ = unet_pair
    g = torch.Generator().manual_seed(6)
    a, b = torch.randn(2, 2, 8, 8, generator=g)
    t = torch.linspace(0, 1, 4)[:, None, None, None]
    xs = ((1 - t) * a + t * b).requires_grad_(True)
    sg = torch.tensor([0.4, 0.6, 0.6, 0.4])
    res = []
    for den in (fused, math_):
        E = curve_energy(den, xs, sg, n_probes=1, generator=torch.Generator().manual_seed(7))
        (gE,) = torch.autograd.grad(E, xs)  # double backward through attention
        E = E.detach()
        geo = geodesic(den, (a, 0.4), (b, 0.4), n_points=4, n_nodes=2, steps=3, n_probes=1, eval_probes=1,
                       generator=torch.Generator().manual_seed(8))
        d = edit_distance(den, a, b, sigma_min=0.4, n_points=4, n_nodes=2, steps=3, eval_probes=1,
                          generator=torch.Generator().manual_seed(9))
        assert math.isfinite(float(E)) and bool(torch.isfinite(gE).all())
        assert math.isfinite(geo.energy) and math.isfinite(geo.length) and math.isfinite(d)
        assert len(geo.history["energy"]) == 3
        res.append((float(E), gE, geo.energy, d))
    (E0, g0, ge0, d0), (E1, g1, ge1, d1) = res
    assert abs(E0 - E1) <= 1e-4 * abs(E1) and _rel(g0, g1) < 1e-3
    assert abs(ge0 - ge1) <= 1e-3 * abs(ge1) and abs(d0 - d1) <= 1e-3 * abs(d1)


def test_encoder_penalties_through_vae_attention():
    from diffusers import AutoencoderKL

    from latentgeo.fisher.penalties import curvature_penalty, tangential_distortion
    from latentgeo.nets.diffusers_adapter import use_math_attention

    torch.manual_seed(0)
    vae = AutoencoderKL(in_channels=2, out_channels=2, down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), latent_channels=2,
                        norm_num_groups=4, layers_per_block=1, sample_size=8).to(F64).eval()
    vae_math = copy.deepcopy(vae)
    assert use_math_attention(vae_math) == 2 and use_math_attention(vae_math) == 0
    g = torch.Generator().manual_seed(10)
    x = torch.randn(3, 2, 8, 8, generator=g, dtype=F64)
    T = torch.linalg.qr(torch.randn(3, 128, 2, generator=g, dtype=F64))[0].transpose(1, 2)  # [N, k=2, D]
    out = []
    for model in (vae, vae_math):
        def enc(y, model=model):
            return model.encode(y).latent_dist.mean

        td = tangential_distortion(enc, x, tangents=T)
        cp = curvature_penalty(enc, x, tangents=T)
        assert math.isfinite(td["distortion"]) and math.isfinite(cp["curvature_rms"]) and cp["curvature_rms"] > 0
        out.append((td, cp, autodiff.ad_mode(enc), autodiff.ad_mode(enc, order=2)))
    (td0, cp0, m0, m20), (td1, cp1, m1, m21) = out
    assert m0 == "reverse" and m20 == "reverse"   # fused attention: only the double VJP works
    assert m1 == "forward" and m21 == "forward_math"  # SiLU's tangent needs grad mode at second order
    assert abs(td0["distortion"] - td1["distortion"]) <= 1e-9 * abs(td1["distortion"])
    assert abs(cp0["curvature_rms"] - cp1["curvature_rms"]) <= 1e-9 * cp1["curvature_rms"]
