"""One exception root for headstart, each subclass also a builtin so users can catch either.

Every message says what was wrong, what was given, and how to fix it.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

import sklearn.exceptions


class HeadstartError(Exception):
    """Root of every error headstart raises on purpose."""


class DataError(HeadstartError, ValueError):
    """The data given cannot be used as it is (corrupt file, empty table, unknown column...)."""


class BackboneError(HeadstartError, ValueError):
    """A backbone name or file cannot be resolved."""


class BundleError(DataError):
    """A model bundle is damaged, inconsistent or unsafe: refused before anything is loaded."""


class WeightsNotFoundError(BackboneError, FileNotFoundError):
    """Pretrained weights are not installed, cached or downloadable here."""


class CacheError(HeadstartError, OSError):
    """A cache entry is corrupt or cannot be written."""


class ConfigError(HeadstartError, ValueError):
    """A configuration value is out of range or inconsistent with another."""


class NotFittedError(HeadstartError, sklearn.exceptions.NotFittedError):
    """A model was used before it was fitted.

    A subclass of scikit-learn's, so `except sklearn.exceptions.NotFittedError` and
    `sklearn.utils.validation.check_is_fitted` callers catch it too.
    """


def did_you_mean(given: str, choices: Iterable[str], n: int = 3) -> str:
    """Return ' Did you mean: a, b?' for close matches of `given` among `choices`, or ''."""
    choices = list(choices)
    close = difflib.get_close_matches(given, choices, n=n, cutoff=0.5)
    if not close:
        # Also try matching only the part after a source prefix ('torchvision:resnt18').
        tail = given.split(":", 1)[-1]
        close = [
            c
            for c in choices
            if c.split(":", 1)[-1]
            in difflib.get_close_matches(
                tail, [x.split(":", 1)[-1] for x in choices], n=n, cutoff=0.6
            )
        ][:n]
    return f" Did you mean: {', '.join(close)}?" if close else ""
