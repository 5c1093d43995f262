"""``errors.json``: the test examples a model was surest of and got wrong.

:func:`save_errors` writes the ``k`` most confidently wrong predictions with a small PNG
thumbnail (images), a snippet (text) or the file name (audio) each; :func:`load_errors`
reads the file back. Its format (:class:`~headstart.report.schema.ErrorsDoc`)::

    {"format": 1, "split": "test", "n": 1000, "n_wrong": 87, "k": 12,
     "errors": [{"index": 31, "source": "fashion-mnist test #31", "true": "Shirt",
                 "pred": "T-shirt/top", "true_index": 6, "pred_index": 0,
                 "confidence": 0.97,
                 "input": {"kind": "image", "png": "<base64>", "width": 84, "height": 84}
                       or {"kind": "text", "text": "first 300 characters...", "chars": 1840}
                       or {"kind": "file", "text": "clip.wav"}}]}
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from .._io import atomic_write_json
from ..errors import DataError
from .schema import ERRORS_FILE, ErrorRow, ErrorsDoc, read_json

if TYPE_CHECKING:
    from ..data.base import Examples

__all__ = ["ERRORS_FORMAT", "SNIPPET_CHARS", "THUMB_SIDE", "load_errors", "save_errors"]

#: Version of the errors.json format.
ERRORS_FORMAT = 1
#: Longest side of an error thumbnail, in pixels.
THUMB_SIDE = 96
#: Characters of text kept per error snippet.
SNIPPET_CHARS = 300


def _thumbnail(inputs: Any, i: int) -> dict[str, Any]:
    """A small PNG of image ``i`` (array rows or file paths), base64-encoded."""
    from PIL import Image

    try:
        if isinstance(inputs, np.ndarray):
            arr = np.asarray(inputs[i])
            if arr.dtype != np.uint8:
                arr = np.clip(arr, 0, 255).astype(np.uint8)
            if arr.ndim == 3 and arr.shape[-1] == 1:
                arr = arr[..., 0]
            im = Image.fromarray(arr)
        else:
            with Image.open(inputs[i]) as src:
                src.draft("RGB", (THUMB_SIDE * 2, THUMB_SIDE * 2))
                im = src.convert("RGB") if src.mode not in ("L", "RGB") else src.copy()
    except (OSError, ValueError, TypeError) as exc:
        return {"kind": "file", "text": f"{inputs[i]} (unreadable: {exc})"}
    w, h = im.size
    scale = THUMB_SIDE / max(w, h)
    if scale >= 2:  # tiny images (28 x 28): enlarge by a whole factor, pixels kept sharp
        f = int(scale)
        im = im.resize((w * f, h * f), Image.Resampling.NEAREST)
    elif scale < 1:
        im.thumbnail((THUMB_SIDE, THUMB_SIDE), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    im.save(buf, format="PNG", optimize=True)
    return {
        "kind": "image",
        "png": base64.b64encode(buf.getvalue()).decode("ascii"),
        "width": im.size[0],
        "height": im.size[1],
    }


def _snippet(text: Any) -> dict[str, Any]:
    s = " ".join(str(text).split())
    cut = s[:SNIPPET_CHARS].rstrip() + ("…" if len(s) > SNIPPET_CHARS else "")
    return {"kind": "text", "text": cut, "chars": len(s)}


def save_errors(
    run_dir: str | Path,
    examples: Examples,
    y_true: Sequence[int] | np.ndarray,
    proba: np.ndarray,
    k: int = 12,
    *,
    split: str = "test",
) -> Path:
    """Write ``run_dir/errors.json``: the `k` most confidently wrong predictions on `examples`.

    `y_true` are class indices into ``examples.classes`` and `proba` the predicted
    probabilities, one row per example (as :func:`headstart.metrics.classification_metrics`
    takes them). Images get a PNG thumbnail of at most :data:`THUMB_SIDE` pixels (small images
    are enlarged with sharp pixels), texts their first :data:`SNIPPET_CHARS` characters, audio
    its file name. Returns the path written.
    """
    from ..metrics import most_confident_errors

    y = np.asarray(y_true)
    p = np.asarray(proba)
    if len(examples) != len(y) or len(y) != len(p):
        raise DataError(
            f"save_errors needs one label and one probability row per example; got "
            f"{len(examples)} examples, {len(y)} labels and {len(p)} rows. Pass the same split's "
            "examples, labels and predict_proba output."
        )
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise DataError(f"k must be a whole number >= 0 (how many errors to keep); got {k!r}.")
    wrong = most_confident_errors(y, p, k=k)
    classes = list(examples.classes)
    rows: list[ErrorRow] = []
    for e in wrong:
        i = e["index"]
        if examples.modality == "image":
            shown = _thumbnail(examples.inputs, i)
        elif examples.modality == "text":
            shown = _snippet(examples.inputs[i])
        else:
            shown = {"kind": "file", "text": str(examples.inputs[i])}
        rows.append(
            {
                "index": i,
                "source": examples.source_of(i),
                "true": classes[e["true"]] if e["true"] < len(classes) else str(e["true"]),
                "pred": classes[e["pred"]] if e["pred"] < len(classes) else str(e["pred"]),
                "true_index": e["true"],
                "pred_index": e["pred"],
                "confidence": round(e["confidence"], 6),
                "input": shown,
            }
        )
    doc: ErrorsDoc = {
        "format": ERRORS_FORMAT,
        "split": split,
        "n": len(y),
        "n_wrong": int((p.argmax(axis=1) != y).sum()),
        "k": k,
        "errors": rows,
    }
    path = Path(run_dir) / ERRORS_FILE
    atomic_write_json(path, doc)
    return path


def load_errors(run_dir: str | Path) -> ErrorsDoc | None:
    """``errors.json`` of a run folder as a dict (a bare list is accepted too), or None."""
    path = Path(run_dir) / ERRORS_FILE
    if not path.exists():
        return None
    doc = read_json(path)
    if isinstance(doc, list):
        doc = {"format": ERRORS_FORMAT, "split": "test", "errors": doc}
    if not isinstance(doc, dict) or not isinstance(doc.get("errors"), list):
        raise DataError(
            f"{path} is not an errors file (expected a list under 'errors'). "
            "Delete it, or rewrite it with headstart.report.save_errors."
        )
    return cast(ErrorsDoc, doc)
