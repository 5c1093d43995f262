"""Transferability scores: how well will a pretrained model transfer to a labelled target task?

Each score is a pure function of a model's outputs on the *target* training set, computed
before any fine-tuning, so that candidate backbones can be ranked cheaply. Convention for all
of them: **higher = better expected transfer**. Only rankings across models on the same
target data are meaningful; absolute values are not comparable across data sets.

=================  ===========================================  =================================
score              needs                                        paper
=================  ===========================================  =================================
:func:`logme`      features (N, D), labels                      You et al., ICML 2021
:func:`hscore`     features (N, D), labels                      Bao et al., ICIP 2019
:func:`leep`       source-head probabilities (N, Z), labels     Nguyen et al., ICML 2020
:func:`nce`        source-head hard labels (N,), labels         Tran et al., ICCV 2019
=================  ===========================================  =================================

:func:`score_all` computes whichever apply; :func:`kendall_tau` compares a score's ranking
of models with their fine-tuned accuracies (the usual benchmark table).

Everything is computed in float64. Labels are integer class ids (any integers >= 0; they
need not be contiguous): unlabelled examples (``-1``) must be dropped first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.stats
from numpy.typing import ArrayLike

from headstart.errors import ConfigError, DataError

__all__ = [
    "LogMEFit",
    "hscore",
    "kendall_tau",
    "leep",
    "logme",
    "logme_fit",
    "nce",
    "score_all",
]

_EPS = np.finfo(np.float64).eps
# Keeps LogME's hyper-parameters inside float64's range when a class is fitted perfectly
# (residual -> 0) or not at all (weights -> 0); log() of either bound is finite.
_TINY = 1e-300
_HUGE = 1e300
# Tolerance on row sums of source probabilities (float32 softmax outputs sum to 1 +- 1e-6).
_PROB_SUM_TOL = 1e-3


# --------------------------------------------------------------------------------------------
# Input checks


def _check_labels(
    labels: ArrayLike, name: str = "labels", n: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Return ``labels`` re-coded as contiguous int64 codes 0..K-1, and the K sorted ids.

    Raises DataError unless ``labels`` is a non-empty 1-D array of integers >= 0 whose
    length is ``n`` (when given).
    """
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise DataError(
            f"{name} must be a 1-D array of integer class ids, got shape {arr.shape}. "
            "Pass one label per example (use argmax for one-hot labels)."
        )
    if arr.size == 0:
        raise DataError(f"{name} is empty: at least two examples are needed.")
    if arr.dtype == np.bool_:
        arr = arr.astype(np.int64)
    if not np.issubdtype(arr.dtype, np.integer):
        raise DataError(
            f"{name} must hold integer class ids, got dtype {arr.dtype}. "
            "Encode class names with np.unique(names, return_inverse=True)[1]."
        )
    if n is not None and arr.shape[0] != n:
        raise DataError(
            f"{name} has {arr.shape[0]} entries but there are {n} examples; "
            "pass exactly one label per example, in the same order."
        )
    if arr.min() < 0:
        bad = int(np.flatnonzero(arr < 0)[0])
        raise DataError(
            f"{name} must be >= 0, got {int(arr[bad])} at index {bad}. "
            "Drop unlabelled examples (label -1) before scoring."
        )
    ids, codes = np.unique(arr, return_inverse=True)
    return codes.astype(np.int64).reshape(-1), ids


def _check_target(labels: ArrayLike, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Target labels as codes plus the sorted class ids, of which there must be two or more."""
    codes, ids = _check_labels(labels, "labels", n)
    if ids.shape[0] < 2:
        raise DataError(
            "labels contain a single class; a transferability score needs at least two "
            "target classes to tell models apart."
        )
    return codes, ids


def _check_features(features: ArrayLike) -> np.ndarray:
    """Return ``features`` as a finite float64 (N, D) array with N >= 2, else DataError."""
    arr = np.asarray(features)
    if arr.ndim != 2:
        raise DataError(
            f"features must be a 2-D array (examples x dimensions), got shape {arr.shape}. "
            "Flatten or pool feature maps to one vector per example first."
        )
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise DataError(f"features must be numeric, got dtype {arr.dtype}.")
    if np.iscomplexobj(arr):
        raise DataError("features must be real-valued, got a complex array.")
    n, d = arr.shape
    if n < 2 or d < 1:
        raise DataError(
            f"features need at least 2 examples and 1 dimension, got shape {arr.shape}."
        )
    arr = arr.astype(np.float64, copy=False)
    finite = np.isfinite(arr)
    if not finite.all():
        row = int(np.flatnonzero(~finite.all(axis=1))[0])
        raise DataError(
            f"features contain NaN or infinite values ({int((~finite).sum())} entries, "
            f"first in example {row}); check the extraction (e.g. fp16 overflow) and drop "
            "or fix those rows."
        )
    return arr


def _check_probs(source_probs: ArrayLike, n: int | None = None) -> np.ndarray:
    """Return ``source_probs`` as a float64 (N, Z) array of rows that sum to one."""
    arr = np.asarray(source_probs)
    if arr.ndim != 2:
        raise DataError(
            f"source_probs must be a 2-D array (examples x source classes), got shape {arr.shape}."
        )
    if not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise DataError(f"source_probs must be real numbers, got dtype {arr.dtype}.")
    if n is not None and arr.shape[0] != n:
        raise DataError(
            f"source_probs has {arr.shape[0]} rows but there are {n} examples; "
            "pass one row of source-class probabilities per example, in the same order."
        )
    if arr.shape[0] < 2 or arr.shape[1] < 1:
        raise DataError(
            f"source_probs needs at least 2 examples and 1 source class, got shape {arr.shape}."
        )
    arr = arr.astype(np.float64, copy=False)
    if not np.isfinite(arr).all():
        raise DataError("source_probs contain NaN or infinite values.")
    if arr.min() < 0:
        raise DataError(
            f"source_probs must be probabilities, got a negative entry ({arr.min():.3g}). "
            "Apply softmax to the source head's logits first."
        )
    sums = arr.sum(axis=1)
    off = np.abs(sums - 1.0) > _PROB_SUM_TOL
    if off.any():
        row = int(np.flatnonzero(off)[0])
        raise DataError(
            f"each row of source_probs must sum to 1, row {row} sums to {sums[row]:.6g}. "
            "Apply softmax to the source head's logits first."
        )
    return arr / sums[:, None]


def _one_hot(codes: np.ndarray, n_classes: int) -> np.ndarray:
    """(N, K) float64 one-hot matrix of contiguous codes."""
    out = np.zeros((codes.shape[0], n_classes), dtype=np.float64)
    out[np.arange(codes.shape[0]), codes] = 1.0
    return out


# --------------------------------------------------------------------------------------------
# LogME


@dataclass(frozen=True)
class LogMEFit:
    """The evidence-maximising fit behind :func:`logme`, one entry per target class.

    Attributes
    ----------
    evidence: (K,) maximised log-evidence divided by N, for each one-vs-rest target.
    alpha: (K,) prior precision of the weights at the optimum; inf for a class whose
        evidence is highest with the weights switched off (features uninformative for it).
    beta: (K,) noise precision at the optimum.
    classes: (K,) the label id of each entry (sorted unique labels).
    n_iter: fixed-point iterations run (the slowest class decides).
    converged: whether every class met a stopping rule within ``max_iter``. When it did
        not, the slow classes' evidence is a lower bound on their maximum (the fixed-point
        iteration converges linearly and can crawl where the evidence is very flat).
    """

    evidence: np.ndarray
    alpha: np.ndarray
    beta: np.ndarray
    classes: np.ndarray
    n_iter: int
    converged: bool

    @property
    def score(self) -> float:
        """LogME: the per-example log-evidence averaged over classes (higher = better)."""
        return float(np.mean(self.evidence))


def _logme_terms(
    alpha: np.ndarray,
    beta: np.ndarray,
    s: np.ndarray,
    z: np.ndarray,
    outside: np.ndarray,
    n: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-example log-evidence, gamma, ||m||^2 and ||F m - y||^2 at (alpha, beta), per class.

    ``s`` (r,) are F's singular values, ``z`` (r, k) = U^T y and ``outside`` (k,) the squared
    norm of the part of y outside F's column space. The D/2 log alpha and log det A terms are
    combined as -1/2 sum_i log(1 + beta s_i^2 / alpha), which stays accurate for large alpha.
    """
    sigma = (s * s)[:, None]
    denom = alpha + beta * sigma  # (r, k)
    gamma = np.sum(beta * sigma / denom, axis=0)
    m2 = np.sum((beta * s[:, None] * z / denom) ** 2, axis=0)
    res = np.sum((alpha * z / denom) ** 2, axis=0) + outside
    evidence = (
        0.5 * n * np.log(beta)
        - 0.5 * n * math.log(2.0 * math.pi)
        - 0.5 * beta * res
        - 0.5 * alpha * m2
        - 0.5 * np.sum(np.log1p(beta * sigma / alpha), axis=0)
    ) / n
    return evidence, gamma, m2, res


def logme_fit(
    features: ArrayLike, labels: ArrayLike, *, max_iter: int = 1000, tol: float = 1e-6
) -> LogMEFit:
    """Fit LogME's Bayesian linear models and return the per-class optimum (see :func:`logme`).

    Method (You, Liu, Wang, Long, "LogME: Practical Assessment of Pre-trained Models for
    Transfer Learning", ICML 2021). For each class k, the one-vs-rest target y = 1[label == k]
    (length N) is modelled as y = F w + noise, with prior w ~ N(0, alpha^-1 I_D) and noise
    ~ N(0, beta^-1 I_N). The log marginal likelihood (evidence) is

        L(alpha, beta) = N/2 log beta + D/2 log alpha - N/2 log 2 pi
                         - beta/2 ||F m - y||^2 - alpha/2 ||m||^2 - 1/2 log det A,

    with A = alpha I_D + beta F^T F and posterior mean m = beta A^-1 F^T y. It is maximised
    by MacKay's fixed-point iteration, starting from alpha = beta = 1:

        gamma = sum_i beta sigma_i / (alpha + beta sigma_i),
        alpha <- gamma / ||m||^2,   beta <- (N - gamma) / ||F m - y||^2,

    where sigma_i are the eigenvalues of F^T F. All quantities come from one economical SVD
    F = U diag(s) V^T with r = min(N, D) singular values (sigma_i = s_i^2, the other D - r
    eigenvalues are zero) and z = U^T y, so that each iteration costs O(r K):

        ||m||^2 = sum_i (beta s_i z_i / (alpha + beta s_i^2))^2,
        ||F m - y||^2 = sum_i (alpha z_i / (alpha + beta s_i^2))^2 + ||y - U z||^2,
        log det A = sum_i log(alpha + beta s_i^2) + (D - r) log alpha.

    All classes iterate together. A class stops once the relative changes of both alpha and
    beta are at most ``tol``. When the features carry no evidence for a class, the optimum
    is the limit alpha -> inf (weights switched off), where the iteration only creeps
    towards it; its value there has the closed form

        L_inf / N = 1/2 log(N / ||y||^2) - 1/2 log(2 pi) - 1/2   (beta = N / ||y||^2),

    so such a class also stops once alpha grows while its evidence is below L_inf and every
    shrinkage factor beta s_i^2 / (alpha + beta s_i^2) is at most ``tol`` (the evidence is
    then within about ``tol`` per example of L_inf). For every class the reported evidence
    is max(L at the last iterate, L_inf), with alpha = inf where the limit wins. The loop is
    bounded by ``max_iter``; ``converged`` reports whether every class met a stopping rule.
    alpha and beta are kept within [1e-300, 1e300] so that a perfectly fitted class (beta
    -> inf, possible when N <= D) still gives a finite score.

    Raises DataError for unusable features or labels and ConfigError for a ``max_iter``
    that is not a positive integer or a ``tol`` that is not positive.
    """
    if isinstance(max_iter, bool) or not isinstance(max_iter, int | np.integer) or max_iter < 1:
        raise ConfigError(f"max_iter must be a positive integer, got {max_iter!r}.")
    if isinstance(tol, bool) or not isinstance(tol, float | int) or not tol > 0:
        raise ConfigError(f"tol must be a positive number, got {tol!r}.")
    f = _check_features(features)
    n, _ = f.shape
    codes, ids = _check_target(labels, n)
    n_classes = ids.shape[0]
    y = _one_hot(codes, n_classes)

    u, s, _ = np.linalg.svd(f, full_matrices=False)
    if s[0] == 0.0:
        raise DataError("features are all zero; LogME needs features that vary between examples.")
    z = u.T @ y  # (r, K)
    # Part of y outside the column space of F; computed directly, not as ||y||^2 - ||z||^2.
    outside = np.sum((y - u @ z) ** 2, axis=0)  # (K,)
    y2 = np.sum(y, axis=0)  # ||y||^2 = class counts for one-hot targets
    sigma_max = float(s[0]) ** 2
    evidence_inf = 0.5 * np.log(n / y2) - 0.5 * math.log(2.0 * math.pi) - 0.5

    alpha = np.ones(n_classes)
    beta = np.ones(n_classes)
    active = np.ones(n_classes, dtype=bool)
    n_iter = 0
    while n_iter < max_iter and active.any():
        n_iter += 1
        idx = np.flatnonzero(active)
        a, b = alpha[idx], beta[idx]
        ev, gamma, m2, res = _logme_terms(a, b, s, z[:, idx], outside[idx], n)
        new_a = np.clip(gamma / np.maximum(m2, _TINY), _TINY, _HUGE)
        new_b = np.clip((n - gamma) / np.maximum(res, _TINY), _TINY, _HUGE)
        fixed = (np.abs(new_a - a) <= tol * new_a) & (np.abs(new_b - b) <= tol * new_b)
        # Weights switching off: alpha keeps growing; once every shrinkage factor
        # beta s_i^2 / (alpha + beta s_i^2) is below tol the evidence is within tol of L_inf.
        vanishing = (new_a > a) & (ev < evidence_inf[idx]) & (new_b * sigma_max <= tol * new_a)
        alpha[idx], beta[idx] = new_a, new_b
        active[idx[fixed | vanishing]] = False

    evidence, *_ = _logme_terms(alpha, beta, s, z, outside, n)
    limit = evidence_inf > evidence
    evidence = np.where(limit, evidence_inf, evidence)
    alpha = np.where(limit, np.inf, alpha)
    beta = np.where(limit, n / y2, beta)
    return LogMEFit(
        evidence=evidence,
        alpha=alpha,
        beta=beta,
        classes=ids,
        n_iter=n_iter,
        converged=not active.any(),
    )


def logme(
    features: ArrayLike, labels: ArrayLike, *, max_iter: int = 1000, tol: float = 1e-6
) -> float:
    """LogME score of ``features`` (N, D) for integer ``labels`` (N,); higher = better.

    You et al., "LogME: Practical Assessment of Pre-trained Models for Transfer Learning",
    ICML 2021: the maximum, over the prior precision alpha and noise precision beta, of the
    log marginal likelihood of a Bayesian linear regression from the features to each
    one-vs-rest class indicator, divided by N and averaged over the K classes:

        LogME = 1/K sum_k max_{alpha, beta} log p(y_k | F, alpha, beta) / N.

    Features are used as given (no centring or scaling). The fit costs one SVD of F plus
    O(min(N, D) K) per fixed-point iteration; see :func:`logme_fit` for the formulas and for
    the fitted alpha and beta. The score does not depend on which ids name the classes.
    """
    return logme_fit(features, labels, max_iter=max_iter, tol=tol).score


# --------------------------------------------------------------------------------------------
# LEEP and NCE


def leep(source_probs: ArrayLike, labels: ArrayLike) -> float:
    """LEEP score of a source classifier's probabilities (N, Z) for target ``labels``.

    Nguyen, Hassner, Seeger, Archambeau, "LEEP: A New Measure to Evaluate Transferability of
    Learned Representations", ICML 2020. With theta(x_i) the source head's softmax output:

        P(y, z) = 1/N sum_{i: y_i = y} theta(x_i)_z          (empirical joint)
        P(y | z) = P(y, z) / sum_y' P(y', z)
        LEEP = 1/N sum_i log( sum_z P(y_i | z) theta(x_i)_z ),

    the mean log-likelihood of the "expected empirical predictor". It is <= 0; higher =
    better. Rows of ``source_probs`` must be probabilities (softmax outputs, summing to 1
    within 1e-3; they are renormalised exactly).
    """
    theta = _check_probs(source_probs)
    codes, ids = _check_target(labels, theta.shape[0])
    n, n_classes = theta.shape[0], ids.shape[0]
    joint = _one_hot(codes, n_classes).T @ theta / n  # (K, Z)
    marginal = joint.sum(axis=0)  # (Z,)
    cond = np.divide(joint, marginal, out=np.zeros_like(joint), where=marginal > 0)
    # Only the entry of each example's own label is needed: sum_z P(y_i|z) theta_iz.
    eep = np.einsum("iz,iz->i", theta, cond[codes])
    return float(np.mean(np.log(np.maximum(eep, _TINY))))


def nce(source_labels: ArrayLike, labels: ArrayLike) -> float:
    """Negative Conditional Entropy -H(Y | Z) of target labels given source hard labels.

    Tran, Nguyen, Hassner, "Transferability and Hardness of Supervised Classification
    Tasks", ICCV 2019. From the empirical joint distribution of the source labels z_i (e.g.
    the argmax of a source classifier) and the target labels y_i:

        P(y, z) = #{i: y_i = y, z_i = z} / N,   P(z) = sum_y P(y, z),
        NCE = -H(Y | Z) = sum_{y, z} P(y, z) log( P(y, z) / P(z) ),

    with natural logarithms and 0 log 0 = 0. It is <= 0; 0 means the target label is a
    function of the source label; higher = better.
    """
    z_codes, z_ids = _check_labels(source_labels, "source_labels")
    y_codes, y_ids = _check_target(labels, z_codes.shape[0])
    n, n_classes, n_source = y_codes.shape[0], y_ids.shape[0], z_ids.shape[0]
    counts = np.bincount(y_codes * n_source + z_codes, minlength=n_classes * n_source)
    joint = counts.reshape(n_classes, n_source) / n
    marginal = joint.sum(axis=0, keepdims=True)
    nz = joint > 0
    return float(np.sum(joint[nz] * np.log((joint / np.where(marginal > 0, marginal, 1.0))[nz])))


# --------------------------------------------------------------------------------------------
# H-score


def hscore(features: ArrayLike, labels: ArrayLike, shrinkage: bool = False) -> float:
    """H-score of ``features`` (N, D) for integer ``labels`` (N,); higher = better.

    Bao, Li, Huang, Wang, Zheng, "An Information-Theoretic Approach to Transferability in
    Task Transfer Learning", ICIP 2019:

        H(f) = tr( cov(f)^+ cov(E[f | y]) ),

    where cov(f) is the covariance of the features and cov(E[f | y]) = sum_k (n_k / N)
    (mu_k - mu)(mu_k - mu)^T the covariance of the class-conditional means (both with the
    same 1/N normalisation, so the choice cancels). ``^+`` is the Moore-Penrose
    pseudo-inverse, computed from the SVD of the centred features: singular values below
    s_max * max(N, D) * eps are treated as zero (numpy's matrix-rank tolerance). H(f) is the
    sum of the between-class to total variance ratios along the feature space's principal
    directions, between 0 and min(K - 1, D).

    ``shrinkage=True`` uses the regularised H-score of Ibrahim, Ponomareva, Mazumder, "Newer
    is Not Always Better: Rethinking Transferability Metrics, Their Peculiarities,
    Stability and Performance", ECML-PKDD 2022, which is reliable when D is close to or
    above N, where cov(f) is poorly estimated and the plain score is dominated by noise:

        H_a(f) = tr( ((1 - a) cov(f) + a mu I)^-1 (1 - a) cov(E[f | y]) ),   mu = tr cov(f) / D,

    with the Ledoit-Wolf (2004) shrinkage intensity a = min(b^2, d^2) / d^2, where
    d^2 = ||cov(f) - mu I||_F^2 / D and b^2 = sum_i ||x_i x_i^T - cov(f)||_F^2 / (N^2 D) over
    the centred examples x_i (the estimator of sklearn.covariance.LedoitWolf).
    """
    f = _check_features(features)
    n, d = f.shape
    codes, ids = _check_target(labels, n)
    n_classes = ids.shape[0]
    mean = f.mean(axis=0)
    centred = f - mean
    counts = np.bincount(codes, minlength=n_classes).astype(np.float64)
    class_means = (_one_hot(codes, n_classes).T @ f) / counts[:, None]
    # cov(E[f|y]) = B^T B with rows B_k = sqrt(n_k / N) (mu_k - mu).
    between = np.sqrt(counts / n)[:, None] * (class_means - mean)

    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    if s[0] == 0.0:
        return 0.0  # constant features carry no information about the labels
    # Squared length of B's projection on each principal direction v_j; B lies in the span
    # of the centred rows, so nothing is lost outside the r = min(N, D) directions.
    proj = np.sum((between @ vt.T) ** 2, axis=0)  # (r,)
    var = s * s / n  # eigenvalues of cov(f)
    if not shrinkage:
        keep = s > s[0] * max(n, d) * _EPS
        return float(np.sum(proj[keep] / var[keep]))

    mu = float(np.sum(var)) / d
    d2 = (float(np.sum(var * var)) - d * mu * mu) / d
    row_sq = np.sum(centred * centred, axis=1)
    b2 = (float(np.sum(row_sq * row_sq)) / n - float(np.sum(var * var))) / (n * d)
    a = 0.0 if d2 <= 0.0 else min(max(b2, 0.0), d2) / d2
    return float((1.0 - a) * np.sum(proj / ((1.0 - a) * var + a * mu)))


# --------------------------------------------------------------------------------------------
# All at once, and comparing rankings


def score_all(
    features: ArrayLike, labels: ArrayLike, source_probs: ArrayLike | None = None
) -> dict[str, float]:
    """Every score that applies to the given outputs; higher = better for each.

    Always ``logme``, ``hscore`` and ``hscore_shrinkage`` (from ``features``). With
    ``source_probs`` (N, Z), the source head's softmax outputs on the same examples, also
    ``leep`` and ``nce``; NCE uses the argmax of ``source_probs`` as the source hard label.
    """
    f = _check_features(features)
    scores = {
        "logme": logme(f, labels),
        "hscore": hscore(f, labels),
        "hscore_shrinkage": hscore(f, labels, shrinkage=True),
    }
    if source_probs is not None:
        theta = _check_probs(source_probs, f.shape[0])
        scores["leep"] = leep(theta, labels)
        scores["nce"] = nce(np.argmax(theta, axis=1), labels)
    return scores


def kendall_tau(a: ArrayLike, b: ArrayLike, *, weighted: bool = False) -> float:
    """Kendall's rank correlation between two score lists (e.g. LogME vs fine-tuned accuracy).

    Uses scipy.stats.kendalltau (tau-b, which accounts for ties), in [-1, 1]; 1 means the
    score ranks the models exactly as the reference does. ``weighted=True`` gives the
    weighted tau (scipy.stats.weightedtau, hyperbolic weights) that LogME's paper reports,
    which counts swaps among the top-ranked models more.
    """
    x = np.asarray(a)
    y = np.asarray(b)
    if x.ndim != 1 or y.ndim != 1:
        raise DataError(f"kendall_tau needs two 1-D arrays, got shapes {x.shape} and {y.shape}.")
    if x.shape != y.shape:
        raise DataError(
            f"kendall_tau needs two arrays of the same length, got {x.shape[0]} and {y.shape[0]}; "
            "pass one score and one reference value per model."
        )
    if x.shape[0] < 2:
        raise DataError(f"kendall_tau needs at least 2 models, got {x.shape[0]}.")
    try:
        x = x.astype(np.float64)
        y = y.astype(np.float64)
    except (TypeError, ValueError) as exc:
        raise DataError(f"kendall_tau needs numbers: {exc}") from exc
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise DataError("kendall_tau got NaN or infinite values; drop those models first.")
    if np.all(x == x[0]) or np.all(y == y[0]):
        raise DataError(
            "kendall_tau is undefined when all values of one list are equal "
            "(no ranking to compare)."
        )
    if weighted:
        return float(scipy.stats.weightedtau(x, y).statistic)
    return float(scipy.stats.kendalltau(x, y).statistic)
