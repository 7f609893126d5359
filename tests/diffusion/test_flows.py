"""Flow matching: ODE sampling against an exact velocity field, exact OT pairing, trained flow on a Gaussian."""
import itertools
import math

import pytest
import torch

from latentgeo.checkpoint import load, save
from latentgeo.errors import LatentgeoError
from latentgeo.flows import FlowModel, cfm_loss, fit_flow, flow_sample, ot_pair

torch.set_num_threads(1)


def _exact_field(m: torch.Tensor, s: float):
    # Target N(m, s^2 I), source N(0, I), independent coupling: x_t = t m + a_t z with a_t^2 = (1-t)^2 + t^2 s^2
    # is Gaussian, so the marginal velocity E[z1 - z0 | x_t] is the linear field m + (a_t'/a_t)(x - t m),
    # a_t' a_t = -(1-t) + t s^2. Its flow maps z0 to m + s z0 exactly.
    def v(x, t):
        t = float(t)
        a2 = (1 - t) ** 2 + t ** 2 * s ** 2
        return m + ((-(1 - t) + t * s ** 2) / a2) * (x - t * m)
    return v


@pytest.mark.parametrize("method,steps,tol", [("heun", 64, 1e-3), ("dopri5", 1, 1e-3), ("rk4", 32, 1e-4)])
def test_flow_sample_with_exact_field(method, steps, tol):
    m, s = torch.tensor([1.0, -2.0], dtype=torch.float64), 0.3
    z0 = torch.randn(100, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x1 = flow_sample(_exact_field(m, s), z0, steps=steps, method=method)
    assert float((x1 - (m + s * z0)).abs().max()) < tol
    back = flow_sample(_exact_field(m, s), x1, steps=steps, method=method, t0=1.0, t1=0.0)
    assert float((back - z0).abs().max()) < 10 * tol
    with pytest.raises(LatentgeoError):
        flow_sample(_exact_field(m, s), z0, method="bogus")


def test_ot_pair_is_the_optimal_permutation():
    g = torch.Generator().manual_seed(3)
    z0, z1 = torch.randn(6, 2, generator=g), torch.randn(6, 2, generator=g)
    paired = ot_pair(z0, z1)
    cost = float(((paired - z1) ** 2).sum())
    best = min(float(((z0[list(p)] - z1) ** 2).sum()) for p in itertools.permutations(range(6)))
    assert math.isclose(cost, best, rel_tol=1e-6)
    assert sorted(map(tuple, paired.tolist())) == sorted(map(tuple, z0.tolist()))  # a permutation of z0


def test_cfm_loss_of_exact_field_is_conditional_variance():
    # With the exact marginal field the CFM loss equals E Var[z1 - z0 | x_t] > 0; a field worse than the exact
    # one must have a larger loss (the minimiser property that training relies on).
    m, s = torch.tensor([1.0, -2.0], dtype=torch.float64), 0.3
    f = _exact_field(m, s)

    class Exact(torch.nn.Module):
        def forward(self, x, t):
            return torch.stack([f(xi[None], ti)[0] for xi, ti in zip(x, t)])

    class Off(Exact):
        def forward(self, x, t):
            return super().forward(x, t) + 0.1

    z1 = m + s * torch.randn(4000, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    l_exact = float(cfm_loss(Exact(), z1, torch.Generator().manual_seed(2)))
    l_off = float(cfm_loss(Off(), z1, torch.Generator().manual_seed(2)))
    assert abs((l_off - l_exact) - 0.01) < 0.005  # bias^2 added, cross term vanishes in expectation


@pytest.mark.slow
@pytest.mark.parametrize("coupling", ["independent", "ot"])
def test_fit_flow_learns_a_gaussian(coupling, tmp_path):
    m = torch.tensor([1.0, -1.0])
    L = torch.tensor([[0.5, 0.0], [0.3, 0.2]])
    z = m + torch.randn(8000, 2, generator=torch.Generator().manual_seed(0)) @ L.T
    model = fit_flow(z, steps=400, batch_size=128, coupling=coupling, net_kwargs=dict(hidden=64, depth=2), seed=0)
    x = flow_sample(model, torch.randn(4000, 2, generator=torch.Generator().manual_seed(1)), steps=20)
    cov = torch.cov(x.T)
    assert float((x.mean(0) - m).abs().max()) < 0.05
    assert float((cov - L @ L.T).abs().max()) < 0.05
    path = save(model, tmp_path / "flow")
    z0 = torch.randn(5, 2)
    assert torch.equal(load(path)(z0, 0.3), model(z0, 0.3))
