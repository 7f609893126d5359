"""Reference similarity measures to compare DiffED with (Euclidean distance, SSIM, rank correlations) and the class
statistics of distance matrices (leave-one-out k-NN accuracy, between/within ratio, AUC, bootstrap CIs)."""
from __future__ import annotations

from typing import Any, Dict, Optional

import numpy as np
import torch
import torch.nn.functional as F

from latentgeo.errors import LatentgeoError, check_finite

__all__ = ["ssim", "euclidean", "rank_correlations", "knn_correct", "knn_accuracy", "within_between_auc",
           "between_within", "semantic_statistics", "semantic_sentence", "mean_distance"]


def _gauss_window(size: int, sigma: float, dtype, device) -> torch.Tensor:
    r = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    g = torch.exp(-0.5 * (r / sigma) ** 2)
    g = g / g.sum()
    return g[:, None] * g[None, :]


def ssim(a: torch.Tensor, b: torch.Tensor, data_range: float = 2.0, win: int = 7,
         win_sigma: float = 1.5) -> torch.Tensor:
    """Structural similarity (Wang et al. 2004) per image pair: ``a``, ``b`` [B, C, H, W] -> [B].

    Gaussian window (``win`` clipped to the image size, so 8x8 digits work), constants ``K1 = 0.01``, ``K2 = 0.03``
    of ``data_range`` (2 for images in [-1, 1]); 'valid' filtering; mean over channels and positions.
    """
    a, b = torch.as_tensor(a), torch.as_tensor(b)
    if a.ndim != 4 or a.shape != b.shape:
        raise LatentgeoError(f"ssim needs two image batches [B, C, H, W] of the same shape; got {tuple(a.shape)} and "
                             f"{tuple(b.shape)}")
    check_finite(a, "a")
    check_finite(b, "b")
    a, b = a.double(), b.double()
    C = a.shape[1]
    w = min(win, a.shape[-1], a.shape[-2])
    k = _gauss_window(w, win_sigma, a.dtype, a.device)[None, None].expand(C, 1, w, w)

    def filt(x):
        return F.conv2d(x, k, groups=C)

    mu_a, mu_b = filt(a), filt(b)
    saa = filt(a * a) - mu_a ** 2
    sbb = filt(b * b) - mu_b ** 2
    sab = filt(a * b) - mu_a * mu_b
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    m = ((2 * mu_a * mu_b + c1) * (2 * sab + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (saa + sbb + c2))
    return m.flatten(1).mean(1)


def euclidean(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``|a - b|`` per row of [B, ...] -> [B]."""
    if a.shape != b.shape or a.ndim < 1:
        raise LatentgeoError(f"euclidean needs two batches [B, ...] of the same shape; got {tuple(a.shape)} and "
                             f"{tuple(b.shape)}")
    return (a - b).flatten(1).norm(dim=1)


def rank_correlations(d: np.ndarray, **others: np.ndarray) -> Dict[str, Dict[str, float]]:
    """Spearman and Kendall rank correlations of ``d`` with each named array (e.g. ``euclid=..., ssim=...``)."""
    from scipy.stats import kendalltau, spearmanr

    d = np.asarray(d, dtype=float).reshape(-1)
    check_finite(d, "d")
    out = {}
    for name, v in others.items():
        v = np.asarray(v, dtype=float).reshape(-1)
        if v.shape != d.shape:
            raise LatentgeoError(f"{name} has {v.size} values but d has {d.size}; pass one value per pair")
        check_finite(v, name)
        rho = spearmanr(d, v)
        tau = kendalltau(d, v)
        out[name] = {"spearman": float(rho.statistic), "spearman_p": float(rho.pvalue),
                     "kendall": float(tau.statistic), "kendall_p": float(tau.pvalue)}
    return out


# ---------------------------------------------------------------------------------------------------- semantics
# Does a distance know about classes? Leave-one-out k-NN accuracy, the between/within-class distance ratio and the
# within-vs-between AUC of an N x N distance matrix with class labels, with percentile-bootstrap CIs over images.

def _codes(y) -> np.ndarray:
    """Labels [N] of any kind -> integer codes 0..K-1 in sorted label order (so ties go to the smaller label)."""
    y = np.asarray(y).reshape(-1)
    return np.unique(y, return_inverse=True)[1].reshape(-1)


def _check_matrix(D, y=None, name: str = "D") -> np.ndarray:
    D = np.asarray(D, dtype=float)
    if D.ndim != 2 or D.shape[0] != D.shape[1]:
        raise LatentgeoError(f"{name} must be a square N x N distance matrix, got shape {D.shape}; "
                             "pass the distances between all pairs of the N images")
    if y is not None and np.asarray(y).reshape(-1).shape[0] != D.shape[0]:
        raise LatentgeoError(f"{name} is {D.shape[0]} x {D.shape[0]} but there are {np.asarray(y).size} labels; "
                             "pass one label per row")
    check_finite(D, name)
    return D


def knn_correct(D: np.ndarray, y, k: int = 1) -> np.ndarray:
    """Leave-one-out k-NN outcome per image: ``D`` [N, N] distances, ``y`` [N] labels -> [N] floats (1.0 = right).

    Image i's prediction is the majority label among its ``k`` nearest OTHER images (nearest first, stable order
    on equal distances; a tie in the vote goes to the smaller label).
    """
    D = _check_matrix(D, y)
    c = _codes(y)
    N = D.shape[0]
    if not 1 <= int(k) <= N - 1:
        raise LatentgeoError(f"k must be in 1..{N - 1} (N - 1 other images), got {k}; pass a k in that range")
    Dm = D.copy()
    np.fill_diagonal(Dm, np.inf)
    nn = np.argsort(Dm, axis=1, kind="stable")[:, : int(k)]
    votes = c[nn]
    pred = votes[:, 0] if k == 1 else np.array([np.bincount(v, minlength=c.max() + 1).argmax() for v in votes])
    return (pred == c).astype(float)


def knn_accuracy(D: np.ndarray, y, k: int = 1) -> float:
    """Leave-one-out k-NN class accuracy of the distance matrix ``D`` [N, N] with labels ``y`` [N] (a fraction)."""
    return float(knn_correct(D, y, k).mean())


def within_between_auc(within: np.ndarray, between: np.ndarray) -> float:
    """Probability that a random same-class distance is smaller than a random different-class one (ties count
    1/2): the Mann-Whitney AUC, rank-based, so comparable across measures of different scale. 0.5 = no signal."""
    from scipy.stats import rankdata

    within = np.asarray(within, dtype=float).reshape(-1)
    between = np.asarray(between, dtype=float).reshape(-1)
    if within.size == 0 or between.size == 0:
        raise LatentgeoError("the AUC needs at least one same-class and one different-class pair; pass labels with "
                             "at least two classes and a class with two members")
    r = rankdata(np.concatenate([within, between]))
    nb, nw = between.size, within.size
    return float((r[nw:].sum() - nb * (nb + 1) / 2) / (nb * nw))


def between_within(D: np.ndarray, y) -> Dict[str, float]:
    """Class separation of ``D`` [N, N] over the pairs i < j: ``{"ratio": mean between / mean within,
    "auc": within_between_auc, "mean_within", "mean_between", "n_within", "n_between"}``."""
    D = _check_matrix(D, y)
    c = _codes(y)
    iu = np.triu_indices(D.shape[0], 1)
    same = (c[:, None] == c[None, :])[iu]
    v = D[iu]
    w, b = v[same], v[~same]
    auc = within_between_auc(w, b)
    return {"ratio": float(b.mean() / w.mean()), "auc": auc, "mean_within": float(w.mean()),
            "mean_between": float(b.mean()), "n_within": int(w.size), "n_between": int(b.size)}


_STAT_KEYS = ("knn1", "knn3", "ratio", "auc", "mean_within", "mean_between")


def _stats(mats: Dict[str, np.ndarray], c: np.ndarray, idx: np.ndarray, correct: dict) -> dict:
    """All statistics on the images ``idx`` (a bootstrap resample, or arange(N)).

    k-NN accuracies resample the per-image leave-one-out outcomes computed on all N images (``correct``), so that a
    resample's duplicates do not shrink the reference set; ratios, means, AUCs and Spearman use the resampled pairs,
    never pairing an image with a copy of itself."""
    from scipy.stats import spearmanr

    yy = c[idx]
    ok = idx[:, None] != idx[None, :]
    iu = np.triu_indices(len(idx), 1)
    pair_ok = ok[iu]
    same = (yy[:, None] == yy[None, :])[iu][pair_ok]
    out, vals = {}, {}
    for name, M in mats.items():
        v = M[np.ix_(idx, idx)][iu][pair_ok]
        vals[name] = v
        w, b = v[same], v[~same]
        if w.size == 0 or b.size == 0:  # a degenerate resample (one class, or no same-class pair)
            out[name] = {k: float("nan") for k in _STAT_KEYS}
            out[name].update(knn1=float(correct[name][1][idx].mean()), knn3=float(correct[name][3][idx].mean()))
            continue
        out[name] = {"knn1": float(correct[name][1][idx].mean()), "knn3": float(correct[name][3][idx].mean()),
                     "ratio": float(b.mean() / w.mean()), "auc": within_between_auc(w, b),
                     "mean_within": float(w.mean()), "mean_between": float(b.mean())}
    names = list(mats)
    out["spearman"] = {f"{a}~{b}": float(spearmanr(vals[a], vals[b]).statistic)
                       for ai, a in enumerate(names) for b in names[ai + 1:]}
    return out


def semantic_statistics(mats: Dict[str, np.ndarray], y, boot: int = 1000, seed: int = 0) -> Dict[str, Any]:
    """Class structure of several N x N distance matrices on the same images, with bootstrap 95% CIs.

    Args:
        mats: name -> symmetric distance matrix [N, N] (e.g. ``{"diffed": ..., "euclid": ..., "ssim": 1 - SSIM}``).
        y: class labels [N].
        boot: bootstrap resamples of the images (percentile CIs; 0 = point values only, CIs ``None``).
        seed: seed of the resampling.
    Returns:
        per name ``{"knn1", "knn3", "ratio", "auc", "mean_within", "mean_between"}`` each ``{"value", "ci95"}``
        (leave-one-out 1-/3-NN accuracy, between/within mean-distance ratio, within-vs-between AUC, mean same- and
        different-class distance); ``"spearman"`` between every two measures over the pairs i < j; and, when both
        ``"diffed"`` and ``"euclid"`` are present, ``"diffed_minus_euclid"`` for knn1, knn3 and auc (paired
        bootstrap: the same resample for both, so its CI is that of the difference).
    """
    if not mats:
        raise LatentgeoError("semantic_statistics needs at least one distance matrix; pass them as a dict name -> "
                             "N x N matrix")
    c = _codes(y)
    N = c.size
    mats = {k: _check_matrix(v, c, name=k) for k, v in mats.items()}
    if N < 4 or np.unique(c).size < 2 or np.bincount(c).max() < 2:
        raise LatentgeoError(f"class statistics need >= 4 images, >= 2 classes and a class with >= 2 images; got "
                             f"{N} images of {np.unique(c).size} classes")
    if int(boot) < 0:
        raise LatentgeoError(f"boot must be >= 0, got {boot}; pass the number of bootstrap resamples (0 for none)")
    correct = {name: {k: knn_correct(M, c, k) for k in (1, 3)} for name, M in mats.items()}
    point = _stats(mats, c, np.arange(N), correct)
    rng = np.random.default_rng(seed)
    reps = [_stats(mats, c, rng.integers(0, N, N), correct) for _ in range(int(boot))]

    def ci(get):
        if not reps:
            return None
        a = np.array([get(r) for r in reps], dtype=float)
        a = a[np.isfinite(a)]
        if a.size == 0:
            return None
        return [float(np.percentile(a, 2.5)), float(np.percentile(a, 97.5))]

    res: Dict[str, Any] = {}
    for name in mats:
        res[name] = {k: {"value": point[name][k], "ci95": ci(lambda r, n=name, k=k: r[n][k])} for k in _STAT_KEYS}
    res["spearman"] = {k: {"value": v, "ci95": ci(lambda r, k=k: r["spearman"][k])}
                       for k, v in point["spearman"].items()}
    if "diffed" in mats and "euclid" in mats:
        res["diffed_minus_euclid"] = {
            k: {"value": point["diffed"][k] - point["euclid"][k],
                "ci95": ci(lambda r, k=k: r["diffed"][k] - r["euclid"][k])} for k in ("knn1", "knn3", "auc")}
    return res


def _fmt_ci(v: Dict[str, Any], fmt: str = ".2f") -> str:
    ci = v.get("ci95")
    return f"{v['value']:{fmt}}" + (f" [{ci[0]:{fmt}}, {ci[1]:{fmt}}]" if ci else "")


def semantic_sentence(stats: Dict[str, Any], a: str = "diffed", b: str = "euclid",
                      names: Optional[Dict[str, str]] = None) -> str:
    """One sentence in words on what :func:`semantic_statistics` shows for measure ``a`` against ``b``.

    E.g. "DiffED separates classes worse than Euclidean distance here: within-vs-between AUC 0.65 [0.50, 0.80] vs
    0.83 [0.73, 0.92] (0.5 = no class signal); the difference -0.18 [-0.27, -0.09] is significant (its 95% CI
    excludes 0)." Significance is read from the paired bootstrap CI of ``diffed_minus_euclid`` when it exists.
    """
    names = {"diffed": "DiffED", "euclid": "Euclidean distance", "ssim": "1 - SSIM", **(names or {})}
    na, nb = names.get(a, a), names.get(b, b)
    ua, ub = stats[a]["auc"], stats[b]["auc"]
    diff = stats.get(f"{a}_minus_{b}", {}).get("auc") if (a, b) == ("diffed", "euclid") else None
    sig = None
    if diff is not None and diff.get("ci95"):
        sig = diff["ci95"][0] > 0 or diff["ci95"][1] < 0
    word = "better than" if ua["value"] > ub["value"] else ("worse than" if ua["value"] < ub["value"] else "as well as")
    if sig is False:  # the paired CI cannot tell them apart: do not claim a direction
        word = "about as well as"
    s = (f"{na} separates classes {word} {nb} here: within-vs-between AUC {_fmt_ci(ua)} vs {_fmt_ci(ub)} "
         "(0.5 = no class signal)")
    if sig is not None:
        lo, hi = diff["ci95"]
        s += (f"; the difference {_fmt_ci(diff)} is {'significant' if sig else 'not significant'} "
              f"(its 95% CI {'excludes' if sig else 'includes'} 0)")
    elif ua.get("ci95") and ub.get("ci95"):
        overlap = ua["ci95"][0] <= ub["ci95"][1] and ub["ci95"][0] <= ua["ci95"][1]
        s += "; their 95% CIs " + ("overlap, so the difference is not clearly significant" if overlap else
                                   "do not overlap")
    return s + "."


def mean_distance(D: np.ndarray, boot: int = 1000, seed: int = 0) -> Dict[str, Any]:
    """Mean over the pairs i < j of ``D`` [N, N] with a percentile-bootstrap 95% CI over images (resampled copies of
    one image are never paired): ``{"value", "ci95"}`` (``ci95`` is ``None`` for ``boot = 0``)."""
    D = _check_matrix(D)
    N = D.shape[0]
    if N < 2:
        raise LatentgeoError(f"mean_distance needs at least 2 images, got {N}; "
                             "pass the distance matrix of 2 or more images")
    iu = np.triu_indices(N, 1)
    value = float(D[iu].mean())
    rng = np.random.default_rng(seed)
    reps = []
    for _ in range(int(boot)):
        idx = rng.integers(0, N, N)
        ok = (idx[:, None] != idx[None, :])[iu]
        if ok.any():
            reps.append(float(D[np.ix_(idx, idx)][iu][ok].mean()))
    ci = [float(np.percentile(reps, 2.5)), float(np.percentile(reps, 97.5))] if reps else None
    return {"value": value, "ci95": ci}
