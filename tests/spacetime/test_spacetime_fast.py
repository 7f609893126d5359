"""The compiled/traced geodesic step equals the eager energy and gradient (same ops, fused)."""
import math

import pytest
import torch

from latentgeo.errors import LatentgeoError
from latentgeo.spacetime import geodesic
from latentgeo.spacetime.fast import compiled_energy_step
from latentgeo.spacetime.geodesic import energy_and_grad
from latentgeo.spacetime.spline import SplineCurve


def _denoiser(dtype=torch.float64):
    from latentgeo.diffusion import EDMDenoiser
    from latentgeo.nets import MLP

    torch.manual_seed(0)
    net = MLP(2, hidden=16, depth=1, emb_dim=8, periodic=True)
    torch.nn.init.normal_(net.out.weight, std=0.3)  # a non-trivial (non-linear) denoiser
    den = EDMDenoiser(net, sigma_data=1.0).to(dtype).eval()
    for p in den.parameters():
        p.requires_grad_(False)
    return den


def _curve(P=2):
    g = torch.Generator().manual_seed(1)
    xa = torch.randn(P, 2, generator=g, dtype=torch.float64)
    xb = torch.randn(P, 2, generator=g, dtype=torch.float64)
    s = torch.full((P,), math.exp(-2), dtype=torch.float64)
    c = SplineCurve(xa, s, xb, s, 4)
    c.nodes.data.normal_(0, 0.3, generator=g)
    return c


@pytest.mark.parametrize("robust", [True, False])
def test_traced_step_equals_eager(robust):
    den, curve, N = _denoiser(), _curve(), 24
    xs, sg = curve.evaluate(N)
    E0, _, (g0,) = energy_and_grad(den, xs, sg, [curve.nodes], n_probes=None, robust=robust)
    step = compiled_energy_step(den, curve, N, robust=robust, backend="fx")
    E1, g1 = step(curve.nodes)
    assert torch.allclose(E1, E0, rtol=1e-12, atol=1e-12)
    assert torch.allclose(g1, g0, rtol=1e-10, atol=1e-10)
    # parameters are graph inputs, not constants: new weights change the traced result like the eager one
    with torch.no_grad():
        den.net.out.weight.mul_(-2.0)
    E2, _ = step(curve.nodes)
    xs, sg = curve.evaluate(N)
    E3, _, _ = energy_and_grad(den, xs, sg, [curve.nodes], n_probes=None, robust=robust)
    assert torch.allclose(E2, E3, rtol=1e-12) and not torch.allclose(E2, E0, rtol=1e-3)


def test_geodesic_compile_option_validation_and_same_path():
    den = _denoiser()
    a, b = (torch.tensor([-1.0, 0.5], dtype=torch.float64), 0.2), (torch.tensor([1.0, -0.5], dtype=torch.float64), 0.2)
    with pytest.raises(LatentgeoError, match="compile=True needs"):
        geodesic(den, a, b, n_points=16, n_nodes=3, steps=2, n_probes=1, compile=True)
    g_e = geodesic(den, a, b, n_points=16, n_nodes=3, steps=20, n_probes=None)
    g_f = geodesic(den, a, b, n_points=16, n_nodes=3, steps=20, n_probes=None, compile="fx")
    assert abs(g_e.energy - g_f.energy) <= 1e-9 * abs(g_e.energy)
    assert torch.allclose(g_e.nodes, g_f.nodes, atol=1e-9)


@pytest.mark.slow
def test_inductor_step_matches_eager():
    """The fused (Inductor) step: same energy/gradient up to float64 reassociation (first compile is slow)."""
    den, curve, N = _denoiser(), _curve(P=1), 32
    xs, sg = curve.evaluate(N)
    E0, _, (g0,) = energy_and_grad(den, xs, sg, [curve.nodes], n_probes=None)
    step = compiled_energy_step(den, curve, N, backend="inductor")
    E1, g1 = step(curve.nodes)
    assert torch.allclose(E1, E0, rtol=1e-9)
    assert torch.allclose(g1, g0, rtol=1e-7, atol=1e-9 * float(g0.abs().max()))
