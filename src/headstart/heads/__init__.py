"""Classification heads trained on frozen backbone features.

Both heads are scikit-learn estimators (``__init__`` stores arguments only, learned state ends
in ``_``, ``fit`` returns ``self``, ``predict`` starts with ``check_is_fitted``), so they work in
pipelines, ``clone`` and ``GridSearchCV``, and both can be saved and rebuilt without pickle:

>>> head = LogisticHead().fit(X_train, y_train, X_val, y_val)      # doctest: +SKIP
>>> config, state = head.get_config(), head.get_state()            # JSON + arrays
>>> same = LogisticHead.from_state(config, state)                  # identical predictions
>>> module = head.to_torch()                                       # raw features -> logits

:class:`LogisticHead` (:mod:`~headstart.heads.logistic`)
    Multinomial logistic regression on standardised features. The L2 strength ``C`` is chosen
    on validation data by walking a grid from strong to weak regularisation with warm starts
    (full-batch L-BFGS, float32 matrix products), then the model is refitted on train + val.
:class:`MLPHead` (:mod:`~headstart.heads.mlp`)
    One hidden layer in torch, early stopping on validation loss, best weights restored.

The package's modules: :mod:`~headstart.heads.base` (the shared base class, parameter checks,
:class:`HeadModule`, saving and loading), :mod:`~headstart.heads.solver` (the softmax
objective, L-BFGS, the C path, standardisation: also used by :mod:`headstart.baselines`),
:mod:`~headstart.heads.logistic` and :mod:`~headstart.heads.mlp`. This module holds the
registry: :func:`make_head` builds a head by name, :func:`head_from_state` rebuilds a saved one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from headstart.errors import ConfigError, did_you_mean
from headstart.heads.base import HeadBase, HeadModule
from headstart.heads.logistic import DEFAULT_CS, LogisticHead
from headstart.heads.mlp import MLPHead

__all__ = [
    "DEFAULT_CS",
    "HEADS",
    "HeadBase",
    "HeadModule",
    "LogisticHead",
    "MLPHead",
    "head_from_state",
    "make_head",
]

#: Head classes by name, as accepted by :func:`make_head`.
HEADS: dict[str, type[HeadBase]] = {"logistic": LogisticHead, "mlp": MLPHead}


def make_head(name: str, **kw: Any) -> LogisticHead | MLPHead:
    """Build an unfitted head by name ('logistic' or 'mlp') with hyper-parameters `kw`."""
    if name not in HEADS:
        raise ConfigError(
            f"Unknown head {name!r}; known heads: {', '.join(HEADS)}.{did_you_mean(name, HEADS)}"
        )
    cls = HEADS[name]
    known = cls().get_params()
    unknown = sorted(set(kw) - set(known))
    if unknown:
        hints = "".join(did_you_mean(u, known) for u in unknown)
        raise ConfigError(
            f"Head {name!r} has no hyper-parameter(s) {unknown}; it takes "
            f"{', '.join(known)}.{hints}"
        )
    return cls(**kw)  # type: ignore[return-value]


def head_from_state(
    config: Mapping[str, Any], state: Mapping[str, np.ndarray]
) -> LogisticHead | MLPHead:
    """Rebuild a fitted head of whichever type `config` names (see ``get_config``)."""
    kind = config.get("type")
    if kind not in HEADS:
        raise ConfigError(
            f"The head config has type {kind!r}; known types: {', '.join(HEADS)}. The file was "
            "not written by headstart's get_config, or by a newer version."
        )
    return HEADS[kind].from_state(config, state)  # type: ignore[return-value]
