"""Shared test helpers (mixtures, sliced Wasserstein). Imported by the diffusion/flow tests."""
import torch

from latentgeo.fisher.exact import GaussianMixture


def mixture_2d() -> GaussianMixture:
    means = torch.tensor([[-2.0, 0.0], [2.0, 0.5], [0.0, 2.5]], dtype=torch.float64)
    covs = torch.tensor([[[0.3, 0.1], [0.1, 0.2]], [[0.2, 0.0], [0.0, 0.4]], [[0.5, -0.2], [-0.2, 0.3]]],
                        dtype=torch.float64)
    return GaussianMixture(torch.tensor([0.3, 0.3, 0.4], dtype=torch.float64), means, covs)


def mixture_8d() -> GaussianMixture:
    g = torch.Generator().manual_seed(123)
    K, n = 4, 8
    means = 1.5 * torch.randn(K, n, generator=g, dtype=torch.float64)
    a = torch.randn(K, n, n, generator=g, dtype=torch.float64) / n ** 0.5
    covs = 0.3 * a @ a.transpose(1, 2) + 0.05 * torch.eye(n, dtype=torch.float64)
    return GaussianMixture(torch.tensor([0.2, 0.3, 0.25, 0.25], dtype=torch.float64), means, covs)


def sliced_wasserstein(a: torch.Tensor, b: torch.Tensor, n_proj: int = 256, seed: int = 0) -> float:
    """SW_2 between two equal-size empirical measures: RMS over random unit directions of the 1-D W_2."""
    assert a.shape == b.shape
    g = torch.Generator().manual_seed(seed)
    d = torch.randn(a.shape[1], n_proj, generator=g, dtype=torch.float64)
    d = d / d.norm(dim=0, keepdim=True)
    pa, _ = (a.double() @ d).sort(0)
    pb, _ = (b.double() @ d).sort(0)
    return float(((pa - pb) ** 2).mean().sqrt())


def null_sw(gm: GaussianMixture, m: int, reps: int = 8, seed: int = 1000, reduce: str = "max") -> float:
    """Max (or mean) SW between two FRESH sample sets of size m over ``reps`` repetitions: the finite-sample
    noise level of the statistic when the two laws are equal."""
    vals = []
    for r in range(reps):
        a = gm.sample(m, torch.Generator().manual_seed(seed + 2 * r))
        b = gm.sample(m, torch.Generator().manual_seed(seed + 2 * r + 1))
        vals.append(sliced_wasserstein(a, b))
    return max(vals) if reduce == "max" else sum(vals) / len(vals)
