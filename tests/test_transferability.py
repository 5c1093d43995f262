"""Tests for headstart.selection.transferability: every score against a plain loop-based reference.

The references below are written the obvious, non-vectorised way on purpose (explicit loops,
full matrices, numpy.linalg) so that they check the vectorised, SVD-based implementations.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats
from sklearn.covariance import LedoitWolf

from headstart.errors import ConfigError, DataError
from headstart.selection.transferability import (
    hscore,
    kendall_tau,
    leep,
    logme,
    logme_fit,
    nce,
    score_all,
)

# --------------------------------------------------------------------------------------------
# Data


def _linear_task(
    n: int, d: int, k: int, seed: int = 0, noise: float = 0.3
) -> tuple[np.ndarray, np.ndarray]:
    """Features and labels that are (noisily) a linear function of the features."""
    rng = np.random.default_rng(seed)
    features = rng.standard_normal((n, d))
    weights = rng.standard_normal((d, k))
    labels = np.argmax(features @ weights + noise * rng.standard_normal((n, k)), axis=1)
    return features, labels


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


# --------------------------------------------------------------------------------------------
# Loop-based references


def _ref_log_evidence(f: np.ndarray, y: np.ndarray, alpha: float, beta: float) -> float:
    """LogME's closed-form log evidence with full matrices (You et al., 2021, eq. 2)."""
    n, d = f.shape
    a_mat = alpha * np.eye(d) + beta * f.T @ f
    m = beta * np.linalg.solve(a_mat, f.T @ y)
    sign, logdet = np.linalg.slogdet(a_mat)
    assert sign > 0
    resid = f @ m - y
    return (
        n / 2 * math.log(beta)
        + d / 2 * math.log(alpha)
        - n / 2 * math.log(2 * math.pi)
        - beta / 2 * float(resid @ resid)
        - alpha / 2 * float(m @ m)
        - logdet / 2
    )


def _ref_mackay_update(
    f: np.ndarray, y: np.ndarray, alpha: float, beta: float
) -> tuple[float, float]:
    """One MacKay fixed-point update with full matrices and an explicit eigenvalue loop."""
    n, d = f.shape
    a_mat = alpha * np.eye(d) + beta * f.T @ f
    m = beta * np.linalg.solve(a_mat, f.T @ y)
    gamma = 0.0
    for lam in np.linalg.eigvalsh(f.T @ f):
        lam = max(float(lam), 0.0)
        gamma += beta * lam / (alpha + beta * lam)
    resid = f @ m - y
    return gamma / float(m @ m), (n - gamma) / float(resid @ resid)


def _ref_leep(theta: np.ndarray, labels: np.ndarray) -> float:
    n, z_count = theta.shape
    classes = sorted(set(labels.tolist()))
    joint = {(y, z): 0.0 for y in classes for z in range(z_count)}
    for i in range(n):
        for z in range(z_count):
            joint[labels[i], z] += theta[i, z] / n
    marginal = [sum(joint[y, z] for y in classes) for z in range(z_count)]
    total = 0.0
    for i in range(n):
        eep = 0.0
        for z in range(z_count):
            if marginal[z] > 0:
                eep += joint[labels[i], z] / marginal[z] * theta[i, z]
        total += math.log(eep)
    return total / n


def _ref_nce(source: np.ndarray, labels: np.ndarray) -> float:
    n = len(labels)
    joint: dict[tuple[int, int], float] = {}
    marginal: dict[int, float] = {}
    for y, z in zip(labels.tolist(), source.tolist(), strict=True):
        joint[y, z] = joint.get((y, z), 0.0) + 1.0 / n
        marginal[z] = marginal.get(z, 0.0) + 1.0 / n
    cond_entropy = 0.0
    for (_, z), p in joint.items():
        cond_entropy -= p * math.log(p / marginal[z])
    return -cond_entropy


def _ref_covariances(f: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """cov(f) and cov(E[f|y]) with explicit loops over examples (1/N normalisation)."""
    n, d = f.shape
    mu = np.zeros(d)
    for i in range(n):
        mu += f[i] / n
    class_mean = {}
    for c in set(labels.tolist()):
        rows = [f[i] for i in range(n) if labels[i] == c]
        class_mean[c] = sum(rows) / len(rows)
    cov_f = np.zeros((d, d))
    cov_g = np.zeros((d, d))
    for i in range(n):
        cov_f += np.outer(f[i] - mu, f[i] - mu) / n
        g = class_mean[labels[i]] - mu
        cov_g += np.outer(g, g) / n
    return cov_f, cov_g


def _ref_hscore(f: np.ndarray, labels: np.ndarray) -> float:
    cov_f, cov_g = _ref_covariances(f, labels)
    return float(np.trace(np.linalg.pinv(cov_f, rcond=1e-10, hermitian=True) @ cov_g))


def _ref_hscore_shrinkage(f: np.ndarray, labels: np.ndarray) -> float:
    _, cov_g = _ref_covariances(f, labels)
    lw = LedoitWolf().fit(f)
    a = lw.shrinkage_
    return float(np.trace(np.linalg.inv(lw.covariance_) @ ((1 - a) * cov_g)))


# --------------------------------------------------------------------------------------------
# LogME


@pytest.mark.parametrize(("n", "d", "seed"), [(80, 6, 1), (30, 40, 2)], ids=["N>D", "N<D"])
def test_logme_matches_closed_form_evidence_at_a_fixed_point(n: int, d: int, seed: int) -> None:
    f, labels = _linear_task(n, d, k=3, seed=seed)
    fit = logme_fit(f, labels)
    assert fit.converged
    assert np.all(np.isfinite(fit.alpha))
    np.testing.assert_array_equal(fit.classes, [0, 1, 2])
    refs = []
    for k, c in enumerate(fit.classes):
        y = (labels == c).astype(float)
        alpha, beta = float(fit.alpha[k]), float(fit.beta[k])
        ref = _ref_log_evidence(f, y, alpha, beta)
        refs.append(ref / n)
        assert fit.evidence[k] == pytest.approx(ref / n, rel=1e-9, abs=1e-12)
        # (alpha, beta) is a fixed point of MacKay's update ...
        new_alpha, new_beta = _ref_mackay_update(f, y, alpha, beta)
        assert new_alpha == pytest.approx(alpha, rel=1e-4)
        assert new_beta == pytest.approx(beta, rel=1e-4)
        # ... and a local maximum of the evidence.
        for da, db in [(1, 0), (-1, 0), (0, 1), (0, -1), (1, 1), (-1, -1), (1, -1), (-1, 1)]:
            moved = _ref_log_evidence(f, y, alpha * math.exp(0.02 * da), beta * math.exp(0.02 * db))
            assert moved <= ref + 1e-9 * abs(ref)
    assert logme(f, labels) == pytest.approx(float(np.mean(refs)), rel=1e-9)


def test_logme_is_the_maximum_over_a_grid_including_uninformative_classes() -> None:
    # Random labels: for some classes the evidence is highest with the weights switched off
    # (alpha -> inf), which LogME reports through the closed-form limit.
    rng = np.random.default_rng(3)
    n, d = 40, 5
    f = rng.standard_normal((n, d))
    labels = rng.integers(0, 4, n)
    fit = logme_fit(f, labels)
    assert fit.converged  # the vanishing classes stop through the alpha -> inf rule
    grid = np.exp(np.linspace(-6, 14, 41))
    for k, c in enumerate(fit.classes):
        y = (labels == c).astype(float)
        best = max(_ref_log_evidence(f, y, a, b) for a in grid for b in grid) / n
        assert fit.evidence[k] >= best - 1e-9
        if np.isinf(fit.alpha[k]):
            count = int(np.sum(labels == c))
            limit = 0.5 * math.log(n / count) - 0.5 * math.log(2 * math.pi) - 0.5
            assert fit.evidence[k] == pytest.approx(limit, rel=1e-12)
            assert fit.beta[k] == pytest.approx(n / count)
            near = _ref_log_evidence(f, y, 1e9, n / count) / n
            assert near == pytest.approx(limit, abs=1e-6)
    assert np.isinf(fit.alpha).any(), "this seed should have at least one uninformative class"


def test_logme_rises_for_labels_that_are_a_function_of_the_features() -> None:
    f, labels = _linear_task(300, 16, k=4, seed=2, noise=0.0)
    shuffled = np.random.default_rng(0).permutation(labels)
    informative, random = logme(f, labels), logme(f, shuffled)
    assert informative > random + 0.05


def test_logme_prefers_the_backbone_whose_features_explain_the_labels() -> None:
    f, labels = _linear_task(300, 16, k=4, seed=5, noise=0.0)
    noise = np.random.default_rng(1).standard_normal(f.shape)
    assert logme(f, labels) > logme(noise, labels)


def test_logme_invariant_to_permuting_class_ids() -> None:
    f, labels = _linear_task(120, 10, k=4, seed=4)
    relabelled = np.array([30, 10, 40, 20])[labels]
    assert logme(f, relabelled) == pytest.approx(logme(f, labels), abs=1e-10)
    np.testing.assert_array_equal(logme_fit(f, relabelled).classes, [10, 20, 30, 40])


def test_logme_accepts_float32_and_lists() -> None:
    f, labels = _linear_task(50, 4, k=2, seed=6)
    ref = logme(f, labels)
    assert logme(f.astype(np.float32), labels) == pytest.approx(ref, rel=1e-5)
    assert logme(f.tolist(), labels.tolist()) == pytest.approx(ref, rel=1e-12)


def test_logme_iterations_are_bounded() -> None:
    f, labels = _linear_task(60, 8, k=3, seed=7)
    fit = logme_fit(f, labels, max_iter=2)
    assert fit.n_iter == 2
    assert not fit.converged
    assert np.all(np.isfinite(fit.evidence))


# --------------------------------------------------------------------------------------------
# LEEP and NCE


def _source_outputs(seed: int, informative: bool) -> tuple[np.ndarray, np.ndarray]:
    """Target labels (3 classes) and source-head probabilities over 6 source classes."""
    rng = np.random.default_rng(seed)
    n = 150
    labels = rng.integers(0, 3, n)
    logits = rng.standard_normal((n, 6))
    if informative:  # source classes 2y and 2y+1 fire for target class y
        logits[np.arange(n), 2 * labels] += 3.0
        logits[np.arange(n), 2 * labels + 1] += 2.0
    return labels, _softmax(logits)


def test_leep_matches_loop_reference() -> None:
    for informative in (True, False):
        labels, theta = _source_outputs(0, informative)
        assert leep(theta, labels) == pytest.approx(_ref_leep(theta, labels), rel=1e-12)


def test_leep_handles_a_source_class_that_is_never_predicted() -> None:
    labels, theta = _source_outputs(1, True)
    theta = np.hstack([theta, np.zeros((len(labels), 1))])
    assert leep(theta, labels) == pytest.approx(_ref_leep(theta, labels), rel=1e-12)


def test_leep_higher_for_an_informative_source_head() -> None:
    labels, good = _source_outputs(2, True)
    _, bad = _source_outputs(2, False)
    assert leep(good, labels) > leep(bad, labels) + 0.1
    assert leep(good, labels) <= 0.0


def test_nce_matches_loop_reference_and_ignores_label_names() -> None:
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 4, 200)
    source = (labels + rng.integers(0, 3, 200)) % 7
    ref = _ref_nce(source, labels)
    assert nce(source, labels) == pytest.approx(ref, rel=1e-12)
    assert nce(source * 10 + 5, labels + 100) == pytest.approx(ref, rel=1e-12)


def test_nce_higher_for_informative_source_labels() -> None:
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 3, 300)
    determined = 2 * labels + rng.integers(0, 2, 300)  # the target is a function of these
    random = rng.integers(0, 6, 300)
    assert nce(determined, labels) == pytest.approx(0.0, abs=1e-12)
    assert nce(random, labels) < -0.5


# --------------------------------------------------------------------------------------------
# H-score


@pytest.mark.parametrize(("n", "d"), [(90, 7), (12, 20)], ids=["N>D", "N<D"])
def test_hscore_matches_loop_reference(n: int, d: int) -> None:
    f, labels = _linear_task(n, d, k=3, seed=8, noise=1.0)
    f = f + 2.0  # an offset must not matter
    assert hscore(f, labels) == pytest.approx(_ref_hscore(f, labels), rel=1e-8)


@pytest.mark.parametrize(("n", "d"), [(90, 7), (30, 25), (12, 20)])
def test_hscore_shrinkage_matches_ledoit_wolf_reference(n: int, d: int) -> None:
    f, labels = _linear_task(n, d, k=3, seed=9, noise=1.0)
    got = hscore(f, labels, shrinkage=True)
    assert got == pytest.approx(_ref_hscore_shrinkage(f, labels), rel=1e-8)
    assert got >= 0.0
    if n > d:  # full-rank covariance: shrinking can only lower each direction's ratio
        assert got <= hscore(f, labels) + 1e-12


def test_hscore_higher_for_informative_labels_and_bounded() -> None:
    f, labels = _linear_task(400, 12, k=4, seed=10, noise=0.0)
    shuffled = np.random.default_rng(0).permutation(labels)
    for shrinkage in (False, True):
        good = hscore(f, labels, shrinkage=shrinkage)
        assert good > 5 * hscore(f, shuffled, shrinkage=shrinkage)
        assert 0.0 <= good <= 3.0 + 1e-9  # at most K - 1


def test_hscore_of_constant_features_is_zero() -> None:
    labels = np.array([0, 1, 0, 1, 1])
    assert hscore(np.ones((5, 3)), labels) == 0.0
    assert hscore(np.ones((5, 3)), labels, shrinkage=True) == 0.0


# --------------------------------------------------------------------------------------------
# score_all and kendall_tau


def test_score_all_without_and_with_source_probs() -> None:
    f, labels = _linear_task(60, 5, k=3, seed=11)
    scores = score_all(f, labels)
    assert set(scores) == {"logme", "hscore", "hscore_shrinkage"}
    assert scores["logme"] == logme(f, labels)
    assert scores["hscore"] == hscore(f, labels)
    assert scores["hscore_shrinkage"] == hscore(f, labels, shrinkage=True)

    theta = _softmax(np.random.default_rng(0).standard_normal((60, 4)))
    scores = score_all(f, labels, source_probs=theta)
    assert set(scores) == {"logme", "hscore", "hscore_shrinkage", "leep", "nce"}
    assert scores["leep"] == pytest.approx(leep(theta, labels))
    assert scores["nce"] == pytest.approx(nce(theta.argmax(axis=1), labels))
    assert all(isinstance(v, float) for v in scores.values())


def test_kendall_tau() -> None:
    acc = [71.2, 80.5, 65.0, 90.1, 77.7]
    assert kendall_tau([1, 3, 0, 4, 2], acc) == pytest.approx(1.0)
    assert kendall_tau([3, 1, 4, 0, 2], acc) == pytest.approx(-1.0)
    score = [0.1, 0.5, 0.2, 0.9, 0.3]
    assert kendall_tau(score, acc) == pytest.approx(scipy.stats.kendalltau(score, acc).statistic)
    assert kendall_tau(score, acc, weighted=True) == pytest.approx(
        scipy.stats.weightedtau(score, acc).statistic
    )


# --------------------------------------------------------------------------------------------
# Bad input


_F = np.random.default_rng(0).standard_normal((6, 3))
_Y = np.array([0, 1, 0, 1, 2, 2])
_P = np.full((6, 4), 0.25)


def _with_nan() -> np.ndarray:
    f = _F.copy()
    f[2, 1] = np.nan
    return f


@pytest.mark.parametrize("kwargs", [{"max_iter": 0}, {"max_iter": 2.5}, {"tol": -1.0}])
def test_logme_bad_settings_raise_config_error(kwargs: dict) -> None:
    with pytest.raises(ConfigError, match=next(iter(kwargs))):
        logme(_F, _Y, **kwargs)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: logme(_F, _Y[:5]), "5 entries but there are 6 examples"),
        (lambda: hscore(_F, _Y[:5]), "5 entries but there are 6 examples"),
        (lambda: leep(_P, _Y[:5]), "5 entries but there are 6 examples"),
        (lambda: nce(_Y, _Y[:5]), "5 entries but there are 6 examples"),
        (lambda: logme(_F, np.zeros(6, dtype=int)), "single class"),
        (lambda: hscore(_F, np.full(6, 3)), "single class"),
        (lambda: leep(_P, np.zeros(6, dtype=int)), "single class"),
        (lambda: nce(_Y, np.ones(6, dtype=int)), "single class"),
        (lambda: logme(_with_nan(), _Y), "NaN or infinite.*example 2"),
        (lambda: hscore(_with_nan(), _Y), "NaN or infinite"),
        (lambda: logme(_F[:, 0], _Y), "2-D array"),
        (lambda: hscore(_F[None], _Y), "2-D array"),
        (lambda: logme(_F, _Y[:, None]), "1-D array"),
        (lambda: logme(_F, _Y.astype(float)), "integer class ids"),
        (lambda: logme(_F, _Y - 1), "must be >= 0.*Drop unlabelled"),
        (lambda: logme(np.zeros((6, 3)), _Y), "all zero"),
        (lambda: logme(_F[:1], _Y[:1]), "at least 2 examples"),
        (lambda: leep(_P * 2, _Y), "sum to 1.*softmax"),
        (lambda: leep(_P - 0.5, _Y), "negative.*softmax"),
        (lambda: leep(_P[:, 0], _Y), "2-D array"),
        (lambda: score_all(_F, _Y, source_probs=_P[:5]), "5 rows but there are 6 examples"),
        (lambda: nce(_Y[:, None], _Y), "1-D array"),
        (lambda: kendall_tau([1, 2, 3], [1, 2]), "same length"),
        (lambda: kendall_tau([1, 1, 1], [1, 2, 3]), "all values of one list are equal"),
        (lambda: kendall_tau([1.0, np.nan], [1, 2]), "NaN"),
        (lambda: kendall_tau([1], [1]), "at least 2"),
    ],
)
def test_bad_input_raises_data_error(call, match: str) -> None:
    with pytest.raises(DataError, match=match) as info:
        call()
    assert isinstance(info.value, ValueError)
