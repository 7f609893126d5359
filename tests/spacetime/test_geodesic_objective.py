"""The geodesic objectives ``"abs"`` (sum_n |d_n|) and ``"relu"`` (sum_nk max(c_nk, 0), the authors' form).

On an exact Gaussian model the spacetime geometry is hyperbolic (closed-form geodesic), which both objectives are
checked against; the relu objective is checked against a hand computation of the clamped components.
"""
import math

import pytest
import torch

from latentgeo.errors import LatentgeoError
from latentgeo.fisher.exact import GaussianMixture
from latentgeo.spacetime import SplineCurve, energy_and_grad, eta, geodesic, mu, segment_terms
from latentgeo.spacetime.energy import resolve_objective
from latentgeo.spacetime.family import objective_terms, segment_components
from latentgeo.spacetime.fast import compiled_energy_step

DT = torch.float64


def _gauss(n=2, c=1.0):
    return GaussianMixture(torch.tensor([1.0], dtype=DT), torch.zeros(1, n, dtype=DT), c * torch.eye(n, dtype=DT)[None])


def _mix2d():
    return GaussianMixture(torch.tensor([0.4, 0.6], dtype=DT), torch.tensor([[-1.0, 0.5], [1.0, -0.3]], dtype=DT),
                           torch.tensor([[0.1, 0.05], [0.05, 0.2]], dtype=DT))


def _hyperbolic_length(xa, xb, sa, sb, c=1.0):
    """Geodesic length between (xa, sa) and (xb, sb) for data N(0, c I_n): the posteriors are N(mu, s^2 I_n) with
    mu = c x / (c + sigma^2), s^2 = c sigma^2 / (c + sigma^2), and the Fisher-Rao metric |dmu|^2 / s^2 + 2n ds^2 / s^2
    is sqrt(2n) times the hyperbolic one in (mu / sqrt(2n), s)."""
    n = xa.numel()
    post = lambda x, s: (c * x / (c + s * s), math.sqrt(c * s * s / (c + s * s)))  # noqa: E731
    (m1, s1), (m2, s2) = post(xa, sa), post(xb, sb)
    du2 = float(((m1 - m2) ** 2).sum()) / (2 * n)
    return math.sqrt(2 * n) * math.acosh(1 + (du2 + (s1 - s2) ** 2) / (2 * s1 * s2))


def _curve(P=2, n=2, K=4, scale=0.4, seed=1):
    g = torch.Generator().manual_seed(seed)
    xa = torch.randn(P, n, generator=g, dtype=DT)
    xb = torch.randn(P, n, generator=g, dtype=DT)
    s = torch.full((P,), 0.3, dtype=DT)
    c = SplineCurve(xa, s, xb, s, K)
    c.nodes.data.normal_(0, scale, generator=g)
    return c


def test_relu_objective_equals_hand_computed_clamped_components():
    D = _mix2d().as_denoiser()
    c = _curve(P=1)
    xs, sg = (t[0].detach() for t in c.evaluate(20))
    # by hand: eta, mu at every point (exact divergence), per-coordinate products of the differences, clamped
    ex, es = eta(xs, sg)
    mx, ms = mu(D, xs, sg, n_probes=None)
    comps = torch.cat([(ex[1:] - ex[:-1]) * (mx[1:] - mx[:-1]), ((es[1:] - es[:-1]) * (ms[1:] - ms[:-1]))[:, None]], 1)
    relu_by_hand = 0.5 * 19 * sum(max(float(v), 0.0) for v in comps.reshape(-1))
    assert (comps < 0).any() and (comps > 0).any()  # the clamp matters on this curve
    got = segment_components(D, xs, sg, n_probes=None)
    assert torch.allclose(got, comps.detach(), rtol=1e-12, atol=1e-14)
    assert 0.5 * 19 * float(objective_terms(got, "relu").sum()) == pytest.approx(relu_by_hand, rel=1e-12)
    # the components sum to the segment terms bitwise; abs / signed objectives from the same components
    d = segment_terms(D, xs, sg, n_probes=None)
    assert torch.equal(got[:, :-1].sum(-1) + got[:, -1], d)
    assert torch.equal(objective_terms(got, "abs"), d.abs()) and torch.equal(objective_terms(got, "signed"), d)
    # a geodesic with 0 steps reports that objective value on the (straight) curve it returns
    a, b = (torch.tensor([-1.0, 0.5], dtype=DT), 0.3), (torch.tensor([1.0, -0.3], dtype=DT), 0.3)
    g0 = geodesic(D, a, b, n_points=20, n_nodes=4, steps=0, n_probes=None, objective="relu")
    comp0 = segment_components(D, g0.xs, g0.sigmas, n_probes=None)
    assert g0.objective == "relu" and g0.negative_components == int((comp0 < 0).sum())
    assert g0.objective_value == pytest.approx(9.5 * float(comp0.clamp(min=0).sum()), rel=1e-12)


@pytest.mark.parametrize("chunk", [None, 7])
def test_relu_gradient_equals_autograd_of_the_clamped_sum(chunk):
    D = _mix2d().as_denoiser()
    c = _curve()
    xs, sg = c.evaluate(16)
    E, _, (g,) = energy_and_grad(D, xs, sg, [c.nodes], n_probes=None, objective="relu", chunk_size=chunk)
    xs, sg = c.evaluate(16)
    comp = segment_components(D, xs, sg, n_probes=None)
    (g_ref,) = torch.autograd.grad(7.5 * comp.clamp(min=0).sum(), c.nodes)
    assert torch.allclose(g, g_ref, rtol=1e-10, atol=1e-12)
    assert torch.allclose(E, 7.5 * comp.detach().sum((-1, -2)), rtol=1e-12)  # the reported energy stays signed


def test_traced_relu_step_equals_eager():
    """The traced (compile="fx") step minimises the same relu objective (an MLP denoiser: the exact mixture's own
    input checks are data-dependent and cannot be traced)."""
    from latentgeo.diffusion import EDMDenoiser
    from latentgeo.nets import MLP

    torch.manual_seed(0)
    net = MLP(2, hidden=16, depth=1, emb_dim=8, periodic=True)
    torch.nn.init.normal_(net.out.weight, std=0.3)
    D = EDMDenoiser(net, sigma_data=1.0).to(DT).eval()
    c = _curve(scale=0.3)
    xs, sg = c.evaluate(16)
    E, _, (g,) = energy_and_grad(D, xs, sg, [c.nodes], n_probes=None, objective="relu")
    step = compiled_energy_step(D, c, 16, objective="relu", backend="fx")
    E1, g1 = step(c.nodes)
    assert torch.allclose(E1, E, rtol=1e-12) and torch.allclose(g1, g, rtol=1e-10, atol=1e-12)
    _, g_abs = compiled_energy_step(D, c, 16, objective="abs", backend="fx")(c.nodes)
    assert not torch.allclose(g_abs, g1, rtol=1e-3)  # a different objective, a different trace


def test_objective_validation():
    assert resolve_objective() == "abs" and resolve_objective(robust=False) == "signed"
    assert resolve_objective("relu") == "relu"
    with pytest.raises(LatentgeoError, match="objective must be one of"):
        resolve_objective("l1")
    with pytest.raises(LatentgeoError, match="robust=False"):
        geodesic(_gauss().as_denoiser(), (torch.zeros(2, dtype=DT), 0.3), (torch.ones(2, dtype=DT), 0.3),
                 n_points=8, n_nodes=2, steps=1, n_probes=None, robust=False, objective="relu")


def test_pure_noise_geodesic_both_objectives_agree_with_the_closed_form():
    """Endpoints at x = 0 (the mean) and two noise levels: every component is >= 0 along the way (the x parts
    vanish, the time part is increasing x increasing), so both objectives are the energy, find the same geodesic,
    and its length is sqrt(2n) |ln(s_2 / s_1)| (a vertical hyperbolic geodesic)."""
    D = _gauss().as_denoiser()
    a, b = (torch.zeros(2, dtype=DT), 0.05), (torch.zeros(2, dtype=DT), 2.0)
    kw = dict(n_points=48, n_nodes=6, steps=250, lr=0.05, n_probes=None)
    g = {o: geodesic(D, a, b, objective=o, **kw) for o in ("abs", "relu")}
    L = _hyperbolic_length(a[0], b[0], a[1], b[1])
    for o in g:
        assert g[o].negative_components == 0
        assert g[o].length == pytest.approx(L, rel=2e-3)
        assert g[o].energy == pytest.approx(0.5 * L * L, rel=1e-2)  # constant speed after optimisation
        assert float(g[o].xs.abs().max()) < 1e-12
    line = geodesic(D, a, b, n_points=48, n_nodes=6, steps=0, n_probes=None)
    assert g["abs"].energy < 0.95 * line.energy  # the optimisation re-spaced the points (not the trivial answer)
    assert float((g["abs"].lambdas - g["relu"].lambdas).abs().max()) < 1e-3


def test_x_moving_gaussian_geodesic_abs_hits_closed_form_relu_pays_for_negative_components():
    """Between (-1, 0) and (1, 0) at sigma = 0.3 the geodesic arcs up to sigma ~ 0.64 (hyperbolic semicircle). Every
    d_n is a true KL, so "abs" is the energy and finds it; single components c_nk are not KLs and about a third are
    negative on that geodesic, so "relu" (an upper bound of the energy) settles on another, longer curve."""
    D = _gauss().as_denoiser()
    xa, xb, s = torch.tensor([-1.0, 0.0], dtype=DT), torch.tensor([1.0, 0.0], dtype=DT), 0.3
    kw = dict(n_points=32, n_nodes=4, steps=120, lr=0.1, n_probes=None)
    ga = geodesic(D, (xa, s), (xb, s), objective="abs", **kw)
    gr = geodesic(D, (xa, s), (xb, s), objective="relu", **kw)
    L = _hyperbolic_length(xa, xb, s, s)
    assert ga.length == pytest.approx(L, rel=3e-3)
    h2 = (1.0 / 1.09) ** 2 / 4  # (|mu_1 - mu_2| / sqrt(2n) / 2)^2
    r2 = h2 + 0.09 / 1.09  # squared radius of the semicircle = s_max^2
    assert float(ga.sigmas.max()) == pytest.approx(math.sqrt(r2 / (1 - r2)), rel=2e-2)
    assert ga.negative_components > 0 and ga.objective_value == pytest.approx(ga.energy, rel=1e-12)
    # relu minimised its own objective ...
    comp_a = segment_components(D, ga.xs, ga.sigmas, n_probes=None)
    assert gr.objective_value <= 15.5 * float(comp_a.clamp(min=0).sum())
    # ... which is not the energy: its curve is longer than the closed-form geodesic
    assert gr.objective_value >= gr.energy
    assert gr.length > 1.01 * L and gr.energy > ga.energy


def test_both_objectives_on_a_two_component_mixture():
    """Exact two-component mixture: abs gives the lower true energy (it minimises it), relu the lower relu value."""
    D = _mix2d().as_denoiser()
    a, b = (torch.tensor([-1.0, 0.5], dtype=DT), 0.3), (torch.tensor([1.0, -0.3], dtype=DT), 0.3)
    kw = dict(n_points=24, n_nodes=4, steps=150, lr=0.05, n_probes=None)
    ga = geodesic(D, a, b, objective="abs", **kw)
    gr = geodesic(D, a, b, objective="relu", **kw)
    line = geodesic(D, a, b, n_points=24, n_nodes=4, steps=0, n_probes=None)
    assert ga.energy < gr.energy < line.energy
    comp_a = segment_components(D, ga.xs, ga.sigmas, n_probes=None)
    assert gr.objective_value < 11.5 * float(comp_a.clamp(min=0).sum())
    assert float(ga.negative_fraction) == 0.0  # true KLs: no negative segment, only negative components
