"""Choosing before training: which backbone, and whether to extract or fine-tune.

* :mod:`~headstart.selection.rank`: :func:`rank_backbones` scores candidate backbones on a
  sample of the data (LogME, H-score, LEEP, NCE, a cross-validated probe, the cost);
  :func:`candidates` lists the installed ones, :func:`choose_backbone` picks the best.
* :mod:`~headstart.selection.advise`: :func:`advise` measures the data, the backbone and the
  domain distance and recommends extraction or fine-tuning, with the reasons.
* :mod:`~headstart.selection.transferability`: the scores themselves, on arrays.
* :mod:`~headstart.selection.domain`: how far the data lies from the backbone's source
  domain (:func:`domain_distance`).
* :mod:`~headstart.selection.cost`: extraction milliseconds per example.
"""

from __future__ import annotations

from .advise import Advice, advise
from .cost import measure_cost
from .domain import DomainReport, domain_distance, load_reference, measure_domain
from .rank import (
    RankRow,
    RankTable,
    candidates,
    choose_backbone,
    probe_cv,
    rank_backbones,
    take_sample,
)
from .transferability import LogMEFit, hscore, kendall_tau, leep, logme, logme_fit, nce, score_all

__all__ = [
    "Advice",
    "DomainReport",
    "LogMEFit",
    "RankRow",
    "RankTable",
    "advise",
    "candidates",
    "choose_backbone",
    "domain_distance",
    "hscore",
    "kendall_tau",
    "leep",
    "load_reference",
    "logme",
    "logme_fit",
    "measure_cost",
    "measure_domain",
    "nce",
    "probe_cv",
    "rank_backbones",
    "score_all",
    "take_sample",
]
