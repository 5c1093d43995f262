"""The baseline as a contender: transfer, the cheap non-transfer model, or a stack of the two.

After the ladder has chosen a transfer model, ``auto`` fits the modality's non-transfer
baseline (:func:`headstart.baselines.fit_baseline`: TF-IDF, pixels or log-mel statistics +
logistic regression) on the same training split and compares the two on the validation
split. For images ``auto`` also hands in the small CNN trained from scratch
(:mod:`headstart.baselines.scratch`, fitted before the ladder when its measured cost fits);
the best single non-transfer model on validation is then "the baseline". A **stack** is
always tried (it only refits small models on validation probabilities): a logistic model
over the models' class log-probabilities with one weight per model and one bias per class
(``softmax(a·log p_transfer + b·log p_baseline + ... + c)``, weights ``>= 0``; a few plus
n_classes numbers, so a few hundred validation examples fit it without overfitting).
The stack's validation score is honest: it is fitted on the validation probabilities of the
two train-only models by stratified k-fold cross-validation (:data:`STACK_FOLDS`), and each
fold is scored by a stack that did not see it.

Which one is kept (:func:`select`): transfer, unless a contender beats it on validation by
more than ``LadderConfig.noise_z`` **paired** standard errors (the three are scored on the
same examples, so the noise of a difference is that of the per-example disagreements,
McNemar's view). When neither does, the noise decides nothing either way and the point
estimate is the best guess: the baseline is kept if its validation accuracy is higher than
transfer's (it is also the cheaper model to run), transfer otherwise (ties included). The
stack, which needs every model to predict, must always win beyond the noise. The stack nests each model (a weight at 0), so it also beats one when its
accuracy is not lower and its cross-validated log-loss is lower than that model's,
recalibrated alone the same way, by more than ``noise_z`` paired standard errors: log-loss
is a proper score that resolves a real gain on a few hundred examples where 0/1 accuracy
cannot, and the recalibrated reference keeps a mere change of temperature from counting.
When both contenders beat transfer, the baseline (one cheap model) is kept unless the
stack beats it too. The final stack is refitted on the whole validation
split; the baseline and the transfer head used at prediction are those the fit keeps
(refitted on train + validation where they refit), so the stack sees slightly more
confident inputs than it was fitted on: the usual price of stacking without a third split.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..config import LadderConfig
from ..data.base import Examples

#: Folds of the cross-validation that scores the stack on the validation split (fewer when
#: the rarest validation class has fewer examples; none below 2).
STACK_FOLDS = 5
#: Probabilities are clipped here before the logarithm (a model's 0 would be -inf).
_EPS = 1e-7
#: L2 strength on the per-class biases (keeps them finite when a class is perfectly
#: separated in a fold).
_BIAS_L2 = 1e-3

CHOICES = ("transfer", "baseline", "stack")


def paired_se(a_correct: np.ndarray, b_correct: np.ndarray) -> float:
    """Standard error of ``mean(a) - mean(b)`` when both are 0/1 scores of the same examples."""
    d = np.asarray(a_correct, float) - np.asarray(b_correct, float)
    n = max(1, len(d))
    var = float(np.mean(d**2) - np.mean(d) ** 2)
    return math.sqrt(max(var, 0.0) / n)


def _logs(probas: list[np.ndarray]) -> np.ndarray:
    """(n_models, n, n_classes) log-probabilities, clipped away from -inf."""
    return np.log(np.clip(np.stack([np.asarray(p, float) for p in probas]), _EPS, 1.0))


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    out: np.ndarray = e / e.sum(axis=1, keepdims=True)
    return out


@dataclass
class PooledStack:
    """``softmax(sum_m weights[m] · log p_m + bias)``: a weighted product of the models'
    probabilities, recalibrated per class."""

    weights: np.ndarray
    bias: np.ndarray

    @classmethod
    def fit(cls, probas: list[np.ndarray], y: np.ndarray, n_classes: int) -> PooledStack:
        from scipy.optimize import minimize

        L = _logs(probas)
        m = len(probas)
        Y = np.zeros((len(y), n_classes))
        Y[np.arange(len(y)), y] = 1.0

        def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
            w, b = theta[:m], theta[m:]
            Z = np.tensordot(w, L, axes=1) + b
            P = _softmax(Z)
            n = len(y)
            value = -float(np.sum(Y * np.log(np.clip(P, 1e-300, 1.0)))) / n
            value += _BIAS_L2 * float(b @ b)
            G = (P - Y) / n
            grad = np.concatenate([np.einsum("mnc,nc->m", L, G), G.sum(0) + 2 * _BIAS_L2 * b])
            return value, grad

        theta0 = np.concatenate([np.full(m, 1.0 / m), np.zeros(n_classes)])
        bounds = [(0.0, None)] * m + [(None, None)] * n_classes
        res = minimize(loss, theta0, jac=True, method="L-BFGS-B", bounds=bounds)
        return cls(np.asarray(res.x[:m]), np.asarray(res.x[m:]))

    def predict_proba(self, probas: list[np.ndarray]) -> np.ndarray:
        return _softmax(np.tensordot(self.weights, _logs(probas), axes=1) + self.bias)

    def to_dict(self) -> dict[str, Any]:
        return {"weights": self.weights.tolist(), "bias": self.bias.tolist()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PooledStack:
        return cls(np.asarray(d["weights"], float), np.asarray(d["bias"], float))


def out_of_fold(
    probas: list[np.ndarray], y: np.ndarray, n_classes: int, seed: int
) -> np.ndarray | None:
    """The stack's probabilities on each example from a stack fitted on the other folds
    (stratified k-fold); None when the rarest class has fewer than 2 examples."""
    from sklearn.model_selection import StratifiedKFold

    counts = np.bincount(y, minlength=n_classes)
    k = min(STACK_FOLDS, int(counts[counts > 0].min()))
    if k < 2:
        return None
    out = np.zeros((len(y), n_classes))
    for fit_idx, held in StratifiedKFold(k, shuffle=True, random_state=seed).split(y, y):
        stack = PooledStack.fit([p[fit_idx] for p in probas], y[fit_idx], n_classes)
        out[held] = stack.predict_proba([p[held] for p in probas])
    return out


def _pts(x: float) -> str:
    return f"{100 * x:+.1f} points"


def nll_gain(nll_a: np.ndarray, nll_b: np.ndarray) -> tuple[float, float]:
    """(mean log-loss of ``b`` minus that of ``a``, its paired standard error): how much ``a``
    lowers the per-example negative log-likelihoods ``b`` has on the same examples."""
    d = np.asarray(nll_b, float) - np.asarray(nll_a, float)
    n = max(1, len(d))
    return float(d.mean()), float(d.std()) / math.sqrt(n)


def per_example_nll(proba: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``-log p(true class)`` per example, clipped like the stack's inputs."""
    p = np.asarray(proba, float)[np.arange(len(y)), y]
    out: np.ndarray = -np.log(np.clip(p, _EPS, 1.0))
    return out


def select(
    correct: dict[str, np.ndarray],
    noise_z: float,
    nll: dict[str, np.ndarray] | None = None,
    stack_of: str = "transfer and the baseline",
    baseline_name: str = "",
) -> tuple[str, str]:
    """Which of ``correct``'s models (``transfer``, ``baseline``, optional ``stack``; per-example
    0/1 validation scores) to keep, and why: see the module docstring.

    ``nll``: per-example cross-validated log-losses of the stack and of each model
    recalibrated alone (the stack with the other weight at 0). The stack nests both, so it
    also beats one when its accuracy is not lower and its log-loss (a proper score, far less
    noisy than 0/1 accuracy) is lower beyond ``noise_z`` paired standard errors.
    """
    acc = {k: float(np.mean(v)) for k, v in correct.items()}

    def beats_acc(a: str, b: str) -> bool:
        return acc[a] - acc[b] > noise_z * paired_se(correct[a], correct[b])

    def beats_nll(a: str, b: str) -> bool:
        if nll is None or a not in nll or b not in nll or acc[a] < acc[b]:
            return False
        gain, se = nll_gain(nll[a], nll[b])
        return gain > noise_z * se

    def beats(a: str, b: str) -> bool:
        return beats_acc(a, b) or (a == "stack" and beats_nll(a, b))

    def vs(a: str, b: str) -> str:
        se = paired_se(correct[a], correct[b])
        said = f"{_pts(acc[a] - acc[b])} against {b}, noise {noise_z:g} × {100 * se:.1f} points"
        if nll is not None and a in nll and b in nll:
            gain, lse = nll_gain(nll[a], nll[b])
            said += (
                f"; log-loss {nll[a].mean():.3f} against {nll[b].mean():.3f} for {b} "
                f"recalibrated alone, {-gain:+.3f}, noise {noise_z:g} × {lse:.3f}"
            )
        return said

    winners = [k for k in ("baseline", "stack") if k in acc and beats(k, "transfer")]
    if not winners:
        said = ", ".join(f"{k} {acc[k]:.3f}" for k in correct)
        said = (
            f"validation: {said}; no contender beat transfer beyond the noise "
            f"({noise_z:g} paired standard errors)"
        )
        if "baseline" in acc and acc["baseline"] > acc["transfer"]:
            # the noise resolves nothing either way, so the point estimate is the best guess,
            # and the baseline is also the cheaper model; the stack needs both to predict
            return "baseline", (
                f"{said}; the non-transfer baseline"
                f"{f' ({baseline_name})' if baseline_name else ''} scored higher "
                f"({vs('baseline', 'transfer')}): transfer alone did not pay, kept the baseline"
            )
        return "transfer", f"{said}: kept transfer"
    if winners == ["stack"] or (len(winners) == 2 and beats("stack", "baseline")):
        return "stack", (
            f"the stack of {stack_of} reached {acc['stack']:.3f} on validation "
            f"(cross-validated; {vs('stack', 'transfer')}"
            + (f"; {vs('stack', 'baseline')}" if len(winners) == 2 else "")
            + "): kept the stack, since transfer alone did not pay as much"
        )
    return "baseline", (
        f"the non-transfer baseline{f' ({baseline_name})' if baseline_name else ''} reached "
        f"{acc['baseline']:.3f} on validation "
        f"({vs('baseline', 'transfer')}): transfer alone did not pay, kept the baseline"
    )


@dataclass
class Contest:
    """The outcome: which predictor is kept, the fitted baseline and stack, and why."""

    chosen: str
    baseline: Any  # headstart.baselines.Baseline or ScratchCNN: the best single contender
    stack: PooledStack | None
    val_accuracy: dict[str, float]
    reason: str
    val_proba: np.ndarray | None = None
    seconds: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)
    #: the other non-transfer models in the stack, after ``baseline`` (its inputs are
    #: ``[transfer, baseline, *others]``): the small CNN beside pixels + logistic regression
    others: list[Any] = field(default_factory=list)

    @property
    def baselines(self) -> list[Any]:
        """Every non-transfer model, in the stack's order (the best single one first)."""
        return [self.baseline, *self.others]

    @property
    def needs_transfer(self) -> bool:
        return self.chosen != "baseline"

    def predict_proba(self, transfer_proba: np.ndarray | None, examples: Examples) -> np.ndarray:
        """The kept predictor's probabilities; ``transfer_proba`` is the transfer model's on
        the same ``examples`` (not needed when the baseline is kept)."""
        if self.chosen == "transfer":
            assert transfer_proba is not None
            return transfer_proba
        base = np.asarray(self.baseline.predict_proba(examples), float)
        if self.chosen == "baseline":
            return base
        assert self.stack is not None and transfer_proba is not None
        rest = [np.asarray(b.predict_proba(examples), float) for b in self.others]
        return self.stack.predict_proba([transfer_proba, base, *rest])

    def to_dict(self) -> dict[str, Any]:
        """For ``decisions.json`` and the bundle's ``headstart.json``."""
        return {
            "chosen": self.chosen,
            "reason": self.reason,
            "baseline": self.baseline.name,
            "others": [b.name for b in self.others],
            "val_accuracy": dict(self.val_accuracy),
            "stack": None if self.stack is None else self.stack.to_dict(),
            "seconds": round(self.seconds, 3),
            **self.details,
        }

    @classmethod
    def from_dict(
        cls, d: dict[str, Any], baseline: Any, others: list[Any] | None = None
    ) -> Contest:
        stack = None if d.get("stack") is None else PooledStack.from_dict(d["stack"])
        return cls(
            d["chosen"], baseline, stack, dict(d.get("val_accuracy", {})), d["reason"],
            others=list(others or []),
        )  # fmt: skip


def contend(
    train: Examples,
    val: Examples,
    transfer_val_proba: np.ndarray,
    cfg: LadderConfig,
    *,
    seed: int = 0,
    extra: list[Any] | None = None,
) -> Contest:
    """Fit the baseline on ``train``, compare it (and, where it is close, the stack) with the
    transfer model's validation probabilities; see the module docstring.

    ``extra``: other non-transfer models already fitted on ``train`` (with ``val_proba`` on
    ``val``; ``auto`` passes the small CNN for images). The best single one on validation
    accuracy (ties: the cheaper linear baseline) is "the baseline"; the stack takes them all.
    """
    import time

    from ..baselines import fit_baseline

    t0 = time.perf_counter()
    n_classes = len(train.classes)
    y = val.labels
    fitted = [fit_baseline(train, val), *(extra or [])]
    accs = [float(np.mean(np.asarray(b.val_proba).argmax(1) == y)) for b in fitted]
    ranked = [fitted[i] for i in sorted(range(len(fitted)), key=lambda i: (-accs[i], i))]
    baseline, others = ranked[0], ranked[1:]
    p_t = np.asarray(transfer_val_proba, float)
    p_b = np.asarray(baseline.val_proba, float)
    p_o = [np.asarray(b.val_proba, float) for b in others]
    correct = {"transfer": p_t.argmax(1) == y, "baseline": p_b.argmax(1) == y}
    stack: PooledStack | None = None
    probas = {"transfer": p_t, "baseline": p_b}
    details: dict[str, Any] = {}
    if others:
        details["baselines_val_accuracy"] = {
            b.name: round(a, 4) for b, a in zip(fitted, accs, strict=True)
        }
    if extra:
        details["scratch_seconds"] = {b.name: round(float(b.fit_seconds), 2) for b in extra}
    stack_of = " + ".join(["transfer", *(b.name for b in ranked)])
    # The stack is always tried: it costs a few small fits on validation probabilities, and
    # its cross-validated comparison below is the test that guards against noise. A weaker
    # but different model can still add to transfer (measured: pixels + logistic regression,
    # 4.5 validation points below transfer, lifted Fashion-MNIST 1,000 by a test point).
    oof = out_of_fold([p_t, p_b, *p_o], y, n_classes, seed)
    nll: dict[str, np.ndarray] | None = None
    if oof is not None:
        correct["stack"] = oof.argmax(1) == y
        probas["stack"] = oof
        counts = np.bincount(y)
        details["stack_folds"] = min(STACK_FOLDS, int(counts[counts > 0].min()))
        # each model recalibrated alone, cross-validated the same way: the stack's gain
        # over these is what the other model adds, not a temperature
        alone = {k: out_of_fold([probas[k]], y, n_classes, seed) for k in ("transfer", "baseline")}
        nll = {k: per_example_nll(p, y) for k, p in alone.items() if p is not None}
        nll["stack"] = per_example_nll(oof, y)
        details["val_log_loss"] = {k: round(float(v.mean()), 4) for k, v in nll.items()}
    chosen, reason = select(
        correct, cfg.noise_z, nll, stack_of=stack_of, baseline_name=baseline.name
    )
    if chosen == "stack":
        stack = PooledStack.fit([p_t, p_b, *p_o], y, n_classes)
    return Contest(
        chosen,
        baseline,
        stack,
        {k: float(np.mean(v)) for k, v in correct.items()},
        reason,
        val_proba=probas[chosen],
        seconds=time.perf_counter() - t0,
        details=details,
        others=others,
    )
