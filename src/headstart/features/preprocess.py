"""Turn raw inputs into the tensors a backbone expects, exactly as its weights were trained.

Images: shorter side resized to ``resize``, centre crop ``size``, scaled to [0, 1], normalised
by the weights' mean/std. Arrays (the built-in sets) are resized as whole batches with
``torch.nn.functional.interpolate`` (antialiased); image files are decoded and resized with
Pillow in a thread pool, which releases the GIL, so decoding overlaps inference.

Text: tokenised with the backbone's tokenizer. Texts longer than the window keep their head
and tail ("head+tail", Sun et al. 2019, *How to Fine-Tune BERT for Text Classification?*:
the start and the end of a review carry most of its sentiment) or only the head.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..backbones.base import ImagePreprocess, TextPreprocess
from ..errors import DataError

_TORCH_MODE = {"bilinear": "bilinear", "bicubic": "bicubic", "nearest": "nearest"}


# -------------------------------------------------------------------------------- images
def to_nchw_float(batch: np.ndarray, keep_grey: bool = False) -> torch.Tensor:
    """A batch of image arrays, (N,H,W) grey or (N,H,W,C), as a float (N,3,H,W) tensor.

    Values keep their 0..255 scale; an alpha channel is dropped; grey images are expanded to
    three channels unless ``keep_grey`` (then (N,1,H,W)).
    """
    arr = np.ascontiguousarray(batch)
    if not arr.flags.writeable:  # e.g. a memory-mapped data set
        arr = arr.copy()
    t = torch.from_numpy(arr)
    if t.ndim == 3:  # (N, H, W) grey
        t = t.unsqueeze(1)
    elif t.ndim == 4 and t.shape[-1] in (1, 3, 4) and t.shape[1] not in (1, 3):
        t = t.permute(0, 3, 1, 2)
    else:
        raise DataError(
            f"image array batch has shape {tuple(batch.shape)}; expected (N,H,W) or (N,H,W,C)"
        )
    if t.shape[1] == 4:
        t = t[:, :3]
    if t.shape[1] == 1 and not keep_grey:
        t = t.expand(-1, 3, -1, -1)
    return t.float()


def resize_crop_normalise(
    x: torch.Tensor, pre: ImagePreprocess, *, scaled: bool = False
) -> torch.Tensor:
    """(N,3,H,W) float in [0,255] (or [0,1] if ``scaled``) → normalised (N,3,size,size)."""
    h, w = x.shape[-2:]
    scale = pre.resize / min(h, w)
    nh, nw = max(pre.size, round(h * scale)), max(pre.size, round(w * scale))
    if (nh, nw) != (h, w):
        mode = _TORCH_MODE.get(pre.interpolation, "bilinear")
        kw: dict[str, Any] = (
            {"antialias": True, "align_corners": False} if mode != "nearest" else {}
        )
        x = F.interpolate(x, size=(nh, nw), mode=mode, **kw)
    top, left = (nh - pre.size) // 2, (nw - pre.size) // 2
    return normalise(x[..., top : top + pre.size, left : left + pre.size], pre, scaled=scaled)


def normalise(x: torch.Tensor, pre: ImagePreprocess, *, scaled: bool = False) -> torch.Tensor:
    """(N,3,size,size) float in [0,255] (or [0,1] if ``scaled``), already resized and
    cropped → normalised by the backbone's mean and std."""
    if not scaled:
        x = x / 255.0
    if pre.interpolation == "bicubic":
        x = x.clamp(0.0, 1.0)  # bicubic overshoots
    mean = torch.tensor(pre.mean, dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(pre.std, dtype=x.dtype).view(1, 3, 1, 1)
    return ((x - mean) / std).contiguous()


def load_resized_image(path: Any, pre: ImagePreprocess) -> np.ndarray:
    """The image file at ``path``, shorter side resized to ``pre.resize`` and centre-cropped
    to ``pre.size``, as uint8 (size, size, 3)."""
    from PIL import Image

    from ..data.images import open_image

    img = open_image(path)
    w, h = img.size
    scale = pre.resize / min(w, h)
    nw, nh = max(pre.size, round(w * scale)), max(pre.size, round(h * scale))
    resample = {"bicubic": Image.Resampling.BICUBIC, "nearest": Image.Resampling.NEAREST}.get(
        pre.interpolation, Image.Resampling.BILINEAR
    )
    if (nw, nh) != (w, h):
        img = img.resize((nw, nh), resample, reducing_gap=None)
    left, top = (nw - pre.size) // 2, (nh - pre.size) // 2
    img = img.crop((left, top, left + pre.size, top + pre.size))
    return np.asarray(img, dtype=np.uint8)


def image_batches(
    inputs: Sequence[Any] | np.ndarray,
    pre: ImagePreprocess,
    batch_size: int,
    start: int = 0,
    stop: int | None = None,
    workers: int = 2,
) -> Iterator[torch.Tensor]:
    """Yield normalised (B,3,S,S) float tensors for ``inputs[start:stop]`` in order."""
    stop = len(inputs) if stop is None else stop
    if isinstance(inputs, np.ndarray):
        for i in range(start, stop, batch_size):
            yield resize_crop_normalise(to_nchw_float(inputs[i : min(i + batch_size, stop)]), pre)
        return
    spans = [(i, min(i + batch_size, stop)) for i in range(start, stop, batch_size)]
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        # Decode one batch ahead of the one being inferred.
        def decode(span: tuple[int, int]) -> list[np.ndarray]:
            return list(pool.map(lambda p: load_resized_image(p, pre), inputs[span[0] : span[1]]))

        ahead = pool.submit(decode, spans[0]) if spans else None
        for k in range(len(spans)):
            arrays = ahead.result() if ahead is not None else []
            ahead = pool.submit(decode, spans[k + 1]) if k + 1 < len(spans) else None
            # load_resized_image already resized and cropped: only normalise (resizing again
            # would crop twice, a tighter view than the recipe a bundle or export states).
            yield normalise(to_nchw_float(np.stack(arrays)), pre)


def image_tensor(inputs: Sequence[Any] | np.ndarray, pre: ImagePreprocess) -> torch.Tensor:
    """All of ``inputs`` as one normalised batch (for small batches: prediction, probes)."""
    return torch.cat(list(image_batches(inputs, pre, batch_size=max(1, len(inputs)))))


# ---------------------------------------------------------------------------------- text
_TOKENIZERS: dict[str, Any] = {}


def get_tokenizer(pre: TextPreprocess) -> Any:
    tok = _TOKENIZERS.get(pre.tokenizer)
    if tok is None:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(pre.tokenizer, trust_remote_code=False)
        _TOKENIZERS[pre.tokenizer] = tok
    return tok


def _special_template(tok: Any) -> tuple[list[int], list[int]]:
    """The special tokens a tokenizer puts before and after a single text ([CLS] … [SEP])."""
    bare = tok("x", add_special_tokens=False)["input_ids"]
    full = tok("x")["input_ids"]
    for pos in range(len(full) - len(bare) + 1):
        if full[pos : pos + len(bare)] == bare:
            return full[:pos], full[pos + len(bare) :]
    return [], []


def tokenize(texts: Sequence[str], pre: TextPreprocess) -> list[list[int]]:
    """Token ids with special tokens, at most ``max_length`` long, per ``pre.truncation``."""
    tok = get_tokenizer(pre)
    prefix, suffix = _special_template(tok)
    body = pre.max_length - len(prefix) - len(suffix)
    enc = tok(list(texts), add_special_tokens=False, truncation=False, verbose=False)["input_ids"]
    out = []
    for ids in enc:
        if len(ids) > body:
            if pre.truncation == "head+tail":
                head = body // 4
                ids = ids[:head] + ids[len(ids) - (body - head) :]
            else:
                ids = ids[:body]
        out.append(prefix + ids + suffix)
    return out


def pad_batch(seqs: Sequence[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
    n = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), n), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), n), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, : len(s)] = 1
    return {"input_ids": ids, "attention_mask": mask}
