"""Class statistics of distance matrices (latentgeo.spacetime.compare) against values computed by hand."""
import numpy as np
import pytest

from latentgeo.errors import LatentgeoError
from latentgeo.spacetime.compare import (between_within, knn_accuracy, knn_correct, semantic_sentence,
                                         semantic_statistics, within_between_auc)


def _line(x):
    """Distance matrix of points on a line: |x_i - x_j|."""
    x = np.asarray(x, dtype=float)
    return np.abs(x[:, None] - x[None, :])


# Points 0, 1, 5, 6, 20 with labels a a b b a: by hand,
#   1-NN: 0->1 (a, right), 1->0 (right), 5->6 (b, right), 6->5 (right), 20->6 (b, wrong)  => 4/5
#   3-NN: 0 -> {1, 5, 6} = a b b -> b (wrong); 1 -> {0, 5, 6} -> b (wrong); 5 -> {6, 1, 0} = b a a -> a (wrong);
#         6 -> {5, 1, 0} -> a (wrong); 20 -> {6, 5, 1} = b b a -> b (wrong)  => 0/5
#   same-class pairs (i<j): (0,1)=1, (0,20)=20, (1,20)=19, (5,6)=1 -> mean 41/4
#   different-class pairs: (0,5)=5 (0,6)=6 (1,5)=4 (1,6)=5 (5,20)=15 (6,20)=14 -> mean 49/6
#   AUC = P(within < between) + 1/2 P(=): within 1 beats all 6 (twice: 12), 20 beats none, 19 beats none -> 12/24
X = [0.0, 1.0, 5.0, 6.0, 20.0]
Y = ["a", "a", "b", "b", "a"]


def test_knn_by_hand():
    D = _line(X)
    assert knn_correct(D, Y, 1).tolist() == [1, 1, 1, 1, 0]
    assert knn_accuracy(D, Y, 1) == pytest.approx(0.8)
    assert knn_correct(D, Y, 3).tolist() == [0, 0, 0, 0, 0]
    # integer labels give the same as strings (labels are only compared)
    assert knn_accuracy(D, [0, 0, 1, 1, 0], 1) == pytest.approx(0.8)


def test_knn_tie_goes_to_smaller_label():
    # point 0 has neighbours at 1 (label 2) and 2 (label 1) and 3 (label 1): 3-NN votes 2, 1, 1 -> 1
    # with k = 2 the votes tie (one each) and the smaller label 1 wins
    D = _line([0.0, 1.0, 2.0, 3.0])
    y = [1, 2, 1, 1]
    assert knn_correct(D, y, 2)[0] == 1.0  # votes {2, 1}: tie -> 1, which is right
    y2 = [2, 2, 1, 3]  # votes {2 (pt 1), 1 (pt 2)}: tie -> 1, point 0 is label 2 -> wrong
    assert knn_correct(D, y2, 2)[0] == 0.0


def test_between_within_by_hand():
    r = between_within(_line(X), Y)
    assert r["mean_within"] == pytest.approx(41 / 4)
    assert r["mean_between"] == pytest.approx(49 / 6)
    assert r["ratio"] == pytest.approx((49 / 6) / (41 / 4))
    assert r["auc"] == pytest.approx(12 / 24)
    assert (r["n_within"], r["n_between"]) == (4, 6)


def test_auc_extremes_and_ties():
    assert within_between_auc([1, 2], [3, 4, 5]) == 1.0
    assert within_between_auc([3, 4, 5], [1, 2]) == 0.0
    assert within_between_auc([1.0], [1.0]) == 0.5  # a tie counts 1/2
    with pytest.raises(LatentgeoError):
        within_between_auc([], [1.0])


def test_semantic_statistics_point_values_and_cis():
    D = _line(X)
    E = _line([0.0, 0.5, 10.0, 10.5, 1.0])  # perfectly class-separated
    s = semantic_statistics({"diffed": D, "euclid": E}, Y, boot=200, seed=0)
    assert s["diffed"]["knn1"]["value"] == pytest.approx(0.8)
    assert s["diffed"]["auc"]["value"] == pytest.approx(0.5)
    assert s["euclid"]["auc"]["value"] == pytest.approx(1.0)
    assert s["euclid"]["knn1"]["value"] == pytest.approx(1.0)
    assert s["diffed_minus_euclid"]["auc"]["value"] == pytest.approx(-0.5)
    for k in ("knn1", "auc", "ratio", "mean_within"):
        lo, hi = s["diffed"][k]["ci95"]
        assert lo <= hi
    lo, hi = s["euclid"]["auc"]["ci95"]
    assert lo == pytest.approx(1.0) and hi == pytest.approx(1.0)  # every resample is separated perfectly
    assert set(s["spearman"]) == {"diffed~euclid"}
    # boot = 0: point values only
    s0 = semantic_statistics({"diffed": D}, Y, boot=0)
    assert s0["diffed"]["auc"]["ci95"] is None and s0["diffed"]["auc"]["value"] == pytest.approx(0.5)
    # seeded: the same seed gives the same CIs
    s2 = semantic_statistics({"diffed": D, "euclid": E}, Y, boot=200, seed=0)
    assert s2["diffed"]["ratio"]["ci95"] == s["diffed"]["ratio"]["ci95"]


def test_semantic_sentence_words():
    D = _line(X)
    E = _line([0.0, 0.5, 10.0, 10.5, 1.0])
    s = semantic_statistics({"diffed": D, "euclid": E}, Y, boot=200, seed=0)
    txt = semantic_sentence(s)
    lo, hi = s["diffed_minus_euclid"]["auc"]["ci95"]
    sig = not (lo <= 0 <= hi)
    word = "worse than" if sig else "about as well as"  # no direction claimed when the paired CI includes 0
    assert txt.startswith(f"DiffED separates classes {word} Euclidean distance here")
    assert "AUC 0.50" in txt and "1.00 [1.00, 1.00]" in txt
    assert ("not significant" in txt) == (not sig)
    # a clearly significant case: 40 images, DiffED = the class-blind matrix, Euclid perfectly separated
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 20)
    E2 = _line(np.where(y == 0, 0.0, 10.0) + rng.random(40))
    D2 = _line(rng.random(40))
    s2 = semantic_statistics({"diffed": D2, "euclid": E2}, y, boot=200, seed=0)
    assert semantic_sentence(s2).startswith("DiffED separates classes worse than")
    assert "is significant" in semantic_sentence(s2)
    s_rev = semantic_statistics({"diffed": E2, "euclid": D2}, y, boot=200, seed=0)
    assert semantic_sentence(s_rev).startswith("DiffED separates classes better than")


def test_bad_input():
    with pytest.raises(LatentgeoError, match="square"):
        knn_accuracy(np.zeros((3, 4)), [0, 1, 0], 1)
    with pytest.raises(LatentgeoError, match="labels"):
        between_within(_line(X), [0, 1])
    with pytest.raises(LatentgeoError, match="k must be"):
        knn_accuracy(_line(X), Y, 5)
    with pytest.raises(LatentgeoError, match="2 classes"):
        semantic_statistics({"d": _line(X)}, [0] * 5)
