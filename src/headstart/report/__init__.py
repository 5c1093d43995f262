"""Run reports: the self-contained ``report.html`` of a fit or a `curve` study, and the
``errors.json`` of a run's most confident mistakes.

* :mod:`~headstart.report.schema`: the files of a run folder and the structure of each
  (shared with the code that writes them);
* :mod:`~headstart.report.plots`: the figures, as PNG bytes;
* :mod:`~headstart.report.pages`: the HTML pages (:func:`write_report`);
* :mod:`~headstart.report.errors`: ``errors.json`` (:func:`save_errors`, :func:`load_errors`);
* :mod:`~headstart.report.card`: ``MODEL_CARD.md`` in the bundle (:func:`write_model_card`).
"""

from __future__ import annotations

from .card import CARD_FILE, model_card, write_model_card
from .errors import SNIPPET_CHARS, THUMB_SIDE, load_errors, save_errors
from .pages import write_report
from .plots import STRATEGY_COLOURS, plot_learning_curve, png_data_uri
from .schema import ERRORS_FILE, REPORT_FILE, STRATEGY_LABELS

__all__ = [
    "CARD_FILE",
    "ERRORS_FILE",
    "REPORT_FILE",
    "SNIPPET_CHARS",
    "STRATEGY_COLOURS",
    "STRATEGY_LABELS",
    "THUMB_SIDE",
    "load_errors",
    "model_card",
    "plot_learning_curve",
    "png_data_uri",
    "save_errors",
    "write_model_card",
    "write_report",
]
