"""Strategies: how a pretrained backbone becomes a model for the user's labels.

* :class:`Extract`: the backbone frozen, a head trained on its cached features;
* :class:`Finetune`: the head (from the extraction probe, LP-FT) and the top layer groups
  trained, forgetting measured;
* :func:`run_strategy`: ``extract``, ``finetune`` or ``auto`` (the ladder of
  :mod:`headstart.strategies.ladder`) over a :class:`Context`.

``fit``, ``curve`` and :class:`~headstart.TransferClassifier` all go through
:func:`run_strategy`, so the same settings compute the same model everywhere.
"""

from .auto import LadderResult, run_strategy
from .base import Context, StrategyResult
from .extract import Extract
from .finetune import Finetune

__all__ = ["Context", "Extract", "Finetune", "LadderResult", "StrategyResult", "run_strategy"]
