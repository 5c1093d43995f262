"""Feature extraction: the backbone frozen, a head trained on its cached features."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from ..config import ExtractConfig
from ..metrics import classification_metrics
from .base import Context, StrategyResult, short_metrics


def _selection_info(head: Any) -> dict[str, Any]:
    """What the head chose on validation (C, its scores, iterations, best epoch)."""
    info: dict[str, Any] = {}
    for attr in ("C_", "val_scores_", "n_iter_", "best_epoch_"):
        if hasattr(head, attr):
            v = getattr(head, attr)
            if isinstance(v, dict):
                v = {str(k): v2 for k, v2 in v.items()}
            info[attr.rstrip("_")] = v
    return info


class Extract:
    """Train ``config.head`` on the pristine backbone's features.

    With a validation split the head's hyper-parameters (the logistic head's C, the MLP's
    epochs) are chosen on it and the validation scores are those of the head fitted on the
    training split alone (the *probe*); the final logistic head is then refitted on train +
    validation with the chosen C. Without one, the head selects on an internal hold-out.
    """

    name = "extract"

    def __init__(
        self, config: ExtractConfig | None = None, head_params: dict[str, Any] | None = None
    ):
        self.config = config or ExtractConfig()
        self.head_params = dict(head_params or {})

    def _head(self, seed: int, **over: Any) -> Any:
        from ..heads import make_head

        return make_head(self.config.head, random_state=seed, **{**self.head_params, **over})

    def fit(self, ctx: Context) -> StrategyResult:
        t0 = time.perf_counter()
        F = ctx.pristine("train")
        y = ctx.train.labels
        w = ctx.sample_weight
        if ctx.val is None:
            head = self._head(ctx.seed).fit(F, y, sample_weight=w)
            return StrategyResult(
                "extract",
                0,
                ctx.backbone,
                head,
                None,
                time.perf_counter() - t0,
                {"head_selection": _selection_info(head)},
                probe=head,
            )
        Fv = ctx.pristine("val")
        logistic = self.config.head == "logistic"
        probe = self._head(ctx.seed, **({"refit": False} if logistic else {}))
        probe.fit(F, y, X_val=Fv, y_val=ctx.val.labels, sample_weight=w)
        val_proba = probe.predict_proba(Fv)
        val = classification_metrics(ctx.val.labels, val_proba, ctx.classes)
        head = probe
        if logistic:  # refit on train + val with the chosen C
            head = self._head(ctx.seed, C=float(probe.C_), refit=False)
            w_all = None if w is None else np.concatenate([w, np.ones(len(Fv))])
            head.fit(
                np.concatenate([F, Fv]), np.concatenate([y, ctx.val.labels]), sample_weight=w_all
            )
        detail = {"val": short_metrics(val), "head_selection": _selection_info(probe)}
        return StrategyResult(
            "extract",
            0,
            ctx.backbone,
            head,
            val,
            time.perf_counter() - t0,
            detail,
            probe=probe,
            val_proba=val_proba,
        )
