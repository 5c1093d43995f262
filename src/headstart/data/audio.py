"""Reading audio files as 16 kHz mono float32, with errors that name the file and the fix.

Decoding uses ``soundfile`` (libsndfile): WAV, FLAC, OGG (Vorbis and Opus), AIFF, and MP3
when the bundled libsndfile is 1.1 or newer. Formats libsndfile does not read (M4A/AAC,
WMA, ...) raise a :class:`~headstart.errors.DataError` that gives the ``ffmpeg`` command to
convert them.

What :func:`read_audio` returns, and why:

* **Mono.** Several channels are mixed by averaging them (not by keeping the first one),
  so a voice panned to one side is kept, at half level.
* **Resampled to ``target_sr``** (16 kHz, what Whisper-style models were trained on) with a
  polyphase filter (:func:`scipy.signal.resample_poly`, the exact rational ratio, Kaiser
  window), which keeps the band below the new Nyquist frequency and removes what lies above
  it instead of folding it back as aliasing.
* **Not clipped or normalised.** Samples are float32 in about [-1, 1]; a resampled
  full-scale signal may overshoot 1 slightly.
* **Length policy.** A clip of at least ``min_seconds`` (default :data:`MIN_SECONDS`,
  0.1 s) is accepted as it is: it is *not* padded here; the model's feature extractor pads
  it (Whisper pads every clip with silence to its 30-second window). So a 0.1-second clip
  is accepted. A shorter clip is rejected, because clips that short are in practice empty
  or cut-off recordings; pass ``min_seconds=0`` to accept any non-empty clip. A clip longer
  than ``max_seconds`` (default :data:`MAX_SECONDS`, 30 s, Whisper's window) is trimmed to
  its first ``max_seconds`` with a logged warning; pass ``max_seconds=None`` to keep it
  whole.
"""

from __future__ import annotations

import logging
import math
import os
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

import numpy as np

from headstart.data.base import Examples
from headstart.data.folders import drop_unreadable, scan_class_folders
from headstart.errors import ConfigError, DataError

__all__ = [
    "AUDIO_EXTENSIONS",
    "MAX_SECONDS",
    "MIN_SECONDS",
    "TARGET_SR",
    "UNSUPPORTED_AUDIO_EXTENSIONS",
    "audio_problem",
    "is_audio_file",
    "read_audio",
    "read_audio_folder",
    "resample",
]

log = logging.getLogger("headstart")

OnError = Literal["raise", "skip"]

#: Sample rate that :func:`read_audio` returns by default (Whisper's).
TARGET_SR = 16000
#: Shortest clip accepted by default, in seconds: a 0.1 s clip is accepted (and later padded).
MIN_SECONDS = 0.1
#: Longest clip kept whole by default, in seconds (Whisper's window); longer ones are trimmed.
MAX_SECONDS = 30.0

#: File name endings (lower case) read as audio. Other files in an audio folder are ignored.
AUDIO_EXTENSIONS: frozenset[str] = frozenset(
    {".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".au"}
)
#: Audio formats that libsndfile cannot decode: found in a folder, they raise with a fix.
UNSUPPORTED_AUDIO_EXTENSIONS: frozenset[str] = frozenset(
    {".m4a", ".aac", ".mp4", ".wma", ".amr", ".webm", ".3gp"}
)

_SKIP_HINT = "Remove or replace the file, or load the data with on_error='skip' to leave it out."


def _convert_hint(p: Path) -> str:
    return f"Convert it to WAV or FLAC, e.g.: ffmpeg -i '{p}' -ac 1 -ar 16000 '{p.with_suffix('.wav')}'"


def is_audio_file(path: str | os.PathLike[str]) -> bool:
    """True when the file name ends in one of :data:`AUDIO_EXTENSIONS` (case-insensitive)."""
    return Path(path).suffix.lower() in AUDIO_EXTENSIONS


def _soundfile() -> Any:
    try:
        import soundfile
    except ImportError as exc:  # pragma: no cover - soundfile is a dependency
        raise DataError(
            "Reading audio needs the 'soundfile' package. Install it with: pip install soundfile"
        ) from exc
    return soundfile


def _check_file(p: Path, where: str) -> None:
    """Raise DataError when ``p`` is missing, not a regular file, empty, or of a known-unreadable type."""
    if not p.exists():
        raise DataError(
            f"Audio file not found: {where}. Check the path (relative paths in a table are read "
            f"from the table's folder), or remove the entry. {_SKIP_HINT}"
        )
    if not p.is_file():
        raise DataError(f"{where} is not a regular file (a folder?). {_SKIP_HINT}")
    if p.stat().st_size == 0:
        raise DataError(
            f"Audio file {where} is empty (0 bytes): the recording or copy failed. {_SKIP_HINT}"
        )
    suffix = p.suffix.lower()
    if suffix in UNSUPPORTED_AUDIO_EXTENSIONS:
        raise DataError(
            f"Cannot decode {where}: '{suffix}' audio (AAC/M4A, WMA, ...) needs a decoder that "
            f"libsndfile does not have. {_convert_hint(p)}"
        )
    if suffix == ".mp3":
        sf = _soundfile()
        if "MP3" not in sf.available_formats():
            raise DataError(
                f"Cannot decode {where}: this soundfile's libsndfile "
                f"({sf.__libsndfile_version__}) has no MP3 decoder (added in libsndfile 1.1.0). "
                "Fix: pip install --upgrade soundfile (its wheels bundle a newer libsndfile). "
                f"Or {_convert_hint(p)}"
            )


def _decode_error(p: Path, where: str, exc: BaseException) -> DataError:
    sf = _soundfile()
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return DataError(
        f"Cannot decode audio {where}: {reason}. The file is corrupt, truncated, or not in a "
        f"format libsndfile {sf.__libsndfile_version__} reads (WAV, FLAC, OGG/Vorbis/Opus, "
        f"AIFF, MP3). {_convert_hint(p)} {_SKIP_HINT}"
    )


def resample(x: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Resample ``x`` (last axis) from ``orig_sr`` to ``target_sr`` Hz with a polyphase filter.

    The ratio is reduced to lowest terms (44.1 kHz to 16 kHz is up 160, down 441), so the
    output has ``ceil(n * target_sr / orig_sr)`` samples. Returns float32.
    """
    if orig_sr <= 0 or target_sr <= 0:
        raise ConfigError(f"Sample rates must be positive, got {orig_sr} -> {target_sr}.")
    if orig_sr == target_sr:
        return np.asarray(x, dtype=np.float32)
    from scipy.signal import resample_poly

    ratio = Fraction(int(target_sr), int(orig_sr))
    y = resample_poly(np.asarray(x, dtype=np.float64), ratio.numerator, ratio.denominator, axis=-1)
    return y.astype(np.float32)


def read_audio(
    path: str | os.PathLike[str],
    target_sr: int = TARGET_SR,
    *,
    max_seconds: float | None = MAX_SECONDS,
    min_seconds: float = MIN_SECONDS,
    source: str | None = None,
) -> np.ndarray:
    """Decode an audio file to a 1-D float32 array at ``target_sr`` Hz, mono.

    See the module docstring for the policy: channels are averaged; the signal is resampled
    with :func:`resample`; clips shorter than ``min_seconds`` are rejected, clips of
    ``min_seconds`` or more are returned unpadded (the model's feature extractor pads them);
    clips longer than ``max_seconds`` are trimmed to their start with a logged warning
    (``max_seconds=None`` keeps everything). ``source`` names the entry in messages (for
    example ``"clips.csv:row 12"``); by default the path is used.

    Raises
    ------
    DataError
        when the file is missing, empty (0 bytes), has no samples, is too short, holds
        non-finite samples, or cannot be decoded (with the command that converts it).
    ConfigError
        when ``target_sr``, ``min_seconds`` or ``max_seconds`` is out of range.
    """
    if int(target_sr) != target_sr or target_sr <= 0:
        raise ConfigError(f"target_sr must be a positive integer (Hz), got {target_sr!r}.")
    if not min_seconds >= 0:
        raise ConfigError(f"min_seconds must be >= 0, got {min_seconds!r}.")
    if max_seconds is not None and not max_seconds > 0:
        raise ConfigError(f"max_seconds must be > 0 or None, got {max_seconds!r}.")
    if max_seconds is not None and max_seconds < min_seconds:
        raise ConfigError(f"max_seconds ({max_seconds}) is below min_seconds ({min_seconds}).")
    p = Path(path)
    where = f"{p} ({source})" if source else str(p)
    _check_file(p, where)
    sf = _soundfile()
    try:
        with sf.SoundFile(str(p)) as fh:
            sr, total = int(fh.samplerate), int(fh.frames)
            limit = total
            if max_seconds is not None and total > math.floor(max_seconds * sr):
                limit = math.floor(max_seconds * sr)
            data = fh.read(frames=limit, dtype="float32", always_2d=True)
    except (RuntimeError, sf.SoundFileError, ValueError, EOFError, OSError) as exc:
        raise _decode_error(p, where, exc) from exc
    n = data.shape[0]
    if n == 0:
        raise DataError(f"Audio file {where} decodes to no samples (a header only). {_SKIP_HINT}")
    if limit < total:
        log.warning(
            "%s lasts %.1f s; kept its first %.1f s (max_seconds=%s). Split long recordings "
            "into clips, or pass max_seconds=None to keep them whole.",
            where, total / sr, limit / sr, max_seconds,
        )  # fmt: skip
    duration = n / sr
    if duration < min_seconds - 1e-9:
        raise DataError(
            f"Audio clip {where} lasts {duration:.3f} s, shorter than min_seconds={min_seconds} "
            f"({n} samples at {sr} Hz). Clips that short are usually empty or cut off: "
            f"re-export the clip, remove it, or pass min_seconds=0 to accept it (it is then "
            f"padded with silence by the feature extractor). {_SKIP_HINT}"
        )
    if not np.isfinite(data).all():
        raise DataError(f"Audio file {where} holds NaN or infinite samples. {_SKIP_HINT}")
    mono = data.mean(axis=1, dtype=np.float64) if data.shape[1] > 1 else data[:, 0]
    return resample(mono, sr, int(target_sr))


def audio_problem(path: str | os.PathLike[str], *, decode: bool = False) -> str | None:
    """Why ``path`` cannot be used as audio, in a few words, or None when it looks fine.

    Without ``decode`` only the file and its header are checked (fast); with it the whole
    file is decoded by :func:`read_audio` with default settings.
    """
    p = Path(path)
    try:
        _check_file(p, str(p))
        if decode:
            read_audio(p)
            return None
        sf = _soundfile()
        try:
            info = sf.info(str(p))
        except (RuntimeError, sf.SoundFileError, ValueError, EOFError, OSError) as exc:
            raise _decode_error(p, str(p), exc) from exc
        if info.frames == 0:
            return "no audio samples"
    except DataError as e:
        return str(e)
    return None


def read_audio_folder(root: str | os.PathLike[str], on_error: OnError = "raise") -> Examples:
    """Read ``root/<class name>/<audio file>`` (files may sit in nested folders inside a class).

    Classes are the sub-folder names, sorted. Hidden files and folders are ignored, and so
    are files that are not audio (counted in ``meta["ignored_files"]``). Each file's header is
    checked (cheap); with ``on_error="skip"`` unreadable ones are left out and listed in
    ``meta["skipped"]`` as ``(path, reason)``. Audio in a format libsndfile cannot decode
    (``.m4a``, ``.aac`` ...) raises with the conversion command rather than being ignored.
    """
    if on_error not in ("raise", "skip"):
        raise ConfigError(f"on_error must be 'raise' or 'skip', got {on_error!r}.")
    root, class_dirs, paths, labels, ignored, unsupported = scan_class_folders(
        root,
        kind="audio",
        wanted=is_audio_file,
        shown=AUDIO_EXTENSIONS,
        example="yes/1.wav, no/2.wav",
        unsupported=UNSUPPORTED_AUDIO_EXTENSIONS,
    )
    if unsupported:
        first = Path(unsupported[0])
        raise DataError(
            f"{len(unsupported)} file(s) in {root} are audio in a format libsndfile cannot "
            f"decode, e.g. {first}. {_convert_hint(first)} (for a whole folder: for f in "
            f'*{first.suffix}; do ffmpeg -i "$f" -ac 1 -ar 16000 "${{f%.*}}.wav"; done), '
            "then remove the originals."
        )
    problems: list[tuple[str, str]] = []
    good: list[int] = []
    for i, path in enumerate(paths):
        why = audio_problem(path)
        if why is None:
            good.append(i)
        elif on_error == "raise":
            raise DataError(why)
        else:
            problems.append((path, why))
    if problems:
        log.warning("skipped %d unreadable audio files in %s", len(problems), root)
    paths, labels = drop_unreadable(root, "audio", class_dirs, paths, labels, good, len(problems))
    return Examples(
        modality="audio",
        inputs=paths,
        labels=np.asarray(labels, dtype=np.int64),
        classes=class_dirs,
        name=str(root),
        meta={"format": "audio folder", "ignored_files": ignored, "skipped": problems},
    )
