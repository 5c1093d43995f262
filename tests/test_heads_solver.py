"""Tests for headstart.heads.solver, the numerical pieces shared by LogisticHead and the
baselines: the softmax objective's gradient, the two-class parametrisation, the C path, the
choice of C and the standardisation helpers."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.optimize
import scipy.sparse as sp

from headstart.heads.solver import (
    SoftmaxObjective,
    choose_C,
    class_weight_vector,
    minimize_lbfgs,
    restandardize,
    softmax,
    standardizer,
    stratified_holdout,
    walk_C_path,
)


def problem(n: int, d: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    X = rng.normal(size=(n, d)) + 1.5 * rng.normal(size=(k, d))[y]
    return X, y


@pytest.mark.parametrize("k", [2, 4])
@pytest.mark.parametrize("sparse", [False, True])
def test_objective_gradient_matches_finite_differences(k, sparse):
    X, y = problem(60, 5, k, seed=k)
    cw = class_weight_vector(y, k, "balanced", np.arange(k))
    obj = SoftmaxObjective(sp.csr_matrix(X) if sparse else X, y, k, cw, np.float64)
    obj.set_C(0.7)
    theta = obj.from_full(np.random.default_rng(0).normal(size=k * 5 + k))
    err = scipy.optimize.check_grad(lambda t: obj(t)[0], lambda t: obj(t)[1], theta)
    assert err < 1e-6 * max(1.0, float(np.abs(obj(theta)[1]).max()))


def test_two_class_layout_round_trips_the_symmetric_model():
    X, y = problem(30, 4, 2, seed=1)
    obj = SoftmaxObjective(X, y, 2, np.ones(2), np.float64)
    u = np.random.default_rng(2).normal(size=5)  # one weight vector and one intercept
    full = obj.to_full(u)
    assert full.shape == (2 * 4 + 2,)
    np.testing.assert_allclose(full[:4], -full[4:8])  # W0 = -W1
    np.testing.assert_allclose(obj.from_full(full), u)


def test_binary_and_multinomial_objectives_agree():
    """The two-class shortcut is the same objective as the general k-class code at the same C."""
    X, y = problem(80, 6, 2, seed=3)
    cw = np.array([1.0, 3.0])
    binary = SoftmaxObjective(X, y, 2, cw, np.float64)
    general = SoftmaxObjective(X, y, 2, cw, np.float64)
    general.binary = False  # evaluate the same model with the k-class formulas
    for obj in (binary, general):
        obj.set_C(0.5)
    theta_b = minimize_lbfgs(binary, np.zeros(14), max_iter=500, tol=1e-10)[0]
    theta_g = minimize_lbfgs(general, np.zeros(14), max_iter=500, tol=1e-10)[0]
    # Same predictions (the k-class optimum is the symmetric one).
    logits = [X @ t[:12].reshape(2, 6).T + t[12:] for t in (theta_b, theta_g)]
    np.testing.assert_allclose(softmax(logits[0]), softmax(logits[1]), atol=1e-6)


def test_walk_C_path_and_choose_C():
    X, y = problem(200, 8, 3, seed=4)
    Xv, yv = problem(100, 8, 3, seed=5)
    obj = SoftmaxObjective(X, y, 3, np.ones(3), np.float64)
    grid = [10.0, 0.01, 1.0, 0.1]
    thetas, scores, total = walk_C_path(
        obj, Xv, yv, np.ones(len(yv)), grid, max_iter=200, tol=1e-6, patience=None
    )
    assert list(scores) == sorted(grid)  # walked from strong to weak regularisation
    assert total == sum(s["n_iter"] for s in scores.values()) > 0
    C = choose_C(scores)
    assert scores[C]["log_loss"] == min(s["log_loss"] for s in scores.values())
    assert thetas[C].shape == (3 * 8 + 3,)
    # Near-ties go to higher accuracy, then to the smaller C.
    tie = {
        1.0: {"log_loss": 0.5, "accuracy": 0.8},
        0.1: {"log_loss": 0.50001, "accuracy": 0.8},
        3.0: {"log_loss": 0.50002, "accuracy": 0.9},
        9.0: {"log_loss": 0.6, "accuracy": 1.0},
    }
    assert choose_C(tie) == 3.0
    assert choose_C({k: {**v, "accuracy": 0.8} for k, v in tie.items()}) == 0.1


def test_standardizer_restandardize_and_holdout():
    rng = np.random.default_rng(6)
    X = rng.normal(3.0, 2.0, size=(50, 4))
    X[:, 2] = 7.0  # constant: scale 1, not 0
    mean, scale = standardizer(X, True)
    np.testing.assert_allclose(mean, X.mean(axis=0))
    assert scale[2] == 1.0 and scale[0] != 1.0
    assert [a.tolist() for a in standardizer(X, False)] == [[0.0] * 4, [1.0] * 4]

    # A linear model re-expressed for another standardisation computes the same logits.
    theta = rng.normal(size=3 * 4 + 3)
    old, new = (mean, scale), standardizer(X[:20] * 2 + 1, True)
    moved = restandardize(theta, 3, 4, old, new)

    def logits(t: np.ndarray, std: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        return ((X - std[0]) / std[1]) @ t[:12].reshape(3, 4).T + t[12:]

    np.testing.assert_allclose(logits(moved, new), logits(theta, old), atol=1e-10)

    y = np.array([0] * 10 + [1] * 5 + [2])
    tr, hold = stratified_holdout(y, 0.2, seed=0)
    assert sorted(np.concatenate([tr, hold]).tolist()) == list(range(16))
    assert np.bincount(y[hold], minlength=3).tolist() == [2, 1, 0]  # the single 2 stays
    np.testing.assert_array_equal(stratified_holdout(y, 0.2, seed=0)[1], hold)


def test_class_weight_vector():
    y = np.array([0, 0, 0, 1])
    classes = np.array(["a", "b", "c"])
    np.testing.assert_allclose(class_weight_vector(y, 3, "balanced", classes), [2 / 3, 2, 1])
    np.testing.assert_allclose(class_weight_vector(y, 3, {"b": 4.0}, classes), [1, 4, 1])
    np.testing.assert_allclose(class_weight_vector(y, 3, None, classes), [1, 1, 1])
