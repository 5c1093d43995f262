"""Checks of a run's arguments that must pass before any work starts.

A run that will fail on its output folder, its tracker or an impossible input size should
fail in the first second, not after the data is read and the features extracted. Each check
raises :class:`~headstart.errors.ConfigError` naming the flag, the value and the fix; the
verbs of the command line (``fit``, ``curve``, ``evaluate``) call them first, and
:func:`headstart.fit.fit_run` does too, for callers of the Python API.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import ConfigError

if TYPE_CHECKING:
    from .config import FitConfig

__all__ = [
    "MIN_IMAGE_SIZE",
    "check_fit_config",
    "check_image_size",
    "check_out_dir",
    "check_out_file",
]

#: Smallest input side accepted: backbones downsample by 16-32 (CNN strides, ViT patches of
#: 14-16 px), so a smaller image leaves no spatial extent to compute features on.
MIN_IMAGE_SIZE = 16


def check_image_size(size: int | None, flag: str = "--image-size") -> None:
    """Refuse an input side a backbone cannot run on (None: the backbone's own size)."""
    if size is None:
        return
    if isinstance(size, bool) or not isinstance(size, int) or size < MIN_IMAGE_SIZE:
        raise ConfigError(
            f"{flag} {size!r} is too small: pretrained backbones need images of at least "
            f"{MIN_IMAGE_SIZE} px a side (they downsample by 16-32). Leave out {flag} to use "
            f"the backbone's own size, or give e.g. {flag} 224."
        )


def _nearest_existing(path: Path) -> Path:
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _probe_writable(folder: Path) -> str | None:
    """Why a file cannot be created in `folder`, or None. Tried for real (as root, os.access
    says yes even to a read-only mount)."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=".headstart-probe-", dir=folder)
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(tmp)
    return None


def check_out_dir(path: str | os.PathLike[str], flag: str = "--out") -> None:
    """The output folder: an existing folder we can write into, or one we can create."""
    p = Path(path).expanduser()
    if p.exists() and not p.is_dir():
        raise ConfigError(
            f"{flag} {os.fspath(path)} is an existing file, not a folder. Give a folder path "
            f"(new or existing), e.g. {flag} {p.with_suffix('')}-run."
        )
    base = _nearest_existing(p.absolute())
    if not base.is_dir():
        raise ConfigError(
            f"{flag} {os.fspath(path)}: {base} is a file, so no folder can be made below it. "
            f"Give a {flag} folder whose parents are folders."
        )
    why = _probe_writable(base)
    if why is not None:
        raise ConfigError(
            f"{flag} {os.fspath(path)}: cannot write into {base} ({why}). Give a {flag} folder "
            "you can write to, or fix the folder's permissions."
        )


def check_out_file(path: str | os.PathLike[str], flag: str = "--out") -> None:
    """An output file: not a folder, and its folder writable (or creatable)."""
    p = Path(path).expanduser()
    if p.is_dir():
        raise ConfigError(
            f"{flag} {os.fspath(path)} is a folder; {flag} takes a file name, e.g. "
            f"{flag} {p / 'metrics.json'}."
        )
    check_out_dir(p.parent if str(p.parent) else Path("."), flag)


def check_fit_config(cfg: FitConfig) -> None:
    """Everything about a fit's arguments that can be known wrong before it reads any data."""
    from .tracking import check_tracker

    check_image_size(cfg.backbone.image_size)
    check_out_dir(cfg.run_dir)
    check_tracker(cfg.track)
