"""Small networks trained from scratch: the usual small-data references transfer must beat.

* :class:`SmallCNN`: 5 conv layers (~140k parameters) on native-resolution pixels (at most
  64 px), random shifts of up to 2 px;
* :class:`SmallTextCNN`: a Kim (2014) text CNN on word ids, its vocabulary built from the
  training texts only (:func:`text_words`, :func:`build_vocab`, :func:`text_ids`).

Both train with AdamW, warm-up then cosine (transformers' schedule, as fine-tuning does), and
early stopping on validation accuracy with the best epoch restored. ``headstart curve`` runs
them as its ``cnn`` strategy.
"""

from __future__ import annotations

import math
import re
import time
from typing import Any

import numpy as np

from ..data.base import Examples
from ..errors import DataError

__all__ = [
    "SmallCNN",
    "SmallTextCNN",
    "build_vocab",
    "cnn_module",
    "image_pixels",
    "stretch_epochs",
    "text_ids",
    "text_words",
]


def image_pixels(ex: Examples, side: int | None = None) -> tuple[Any, int]:
    """(uint8 tensor (N, C, H, W), side): the images, square, at a size a small CNN can afford.

    Arrays keep their channels and native size up to 64 px (larger ones are resized to 64);
    image files are decoded to RGB at ``side`` (default 64).
    """
    import torch
    import torch.nn.functional as F
    from PIL import Image

    if isinstance(ex.inputs, np.ndarray):
        x = np.asarray(ex.inputs)
        if x.ndim == 3:
            x = x[:, None]
        elif x.ndim == 4:
            x = np.moveaxis(x[..., :3], -1, 1)
        else:
            raise DataError(f"Image arrays must be (N, H, W) or (N, H, W, C); got {x.shape}.")
        # a copy: the data set's arrays are read-only memory maps, which torch warns about
        t = torch.from_numpy(np.array(x, copy=True))
        s = side or min(64, max(t.shape[2], t.shape[3]))
        if t.shape[2:] != (s, s):
            t = (
                F.interpolate(
                    t.float(), size=(s, s), mode="bilinear", antialias=True, align_corners=False
                )
                .round()
                .clamp(0, 255)
                .to(torch.uint8)
            )
        return t, s
    s = side or 64
    out = np.empty((len(ex), 3, s, s), dtype=np.uint8)
    for i, path in enumerate(ex.inputs):
        try:
            with Image.open(path) as im:
                im.draft("RGB", (s * 2, s * 2))
                out[i] = np.moveaxis(
                    np.asarray(im.convert("RGB").resize((s, s), Image.Resampling.BILINEAR)), -1, 0
                )
        except (OSError, ValueError) as exc:
            raise DataError(
                f"Cannot read image {ex.source_of(i)} for the CNN baseline: {exc}. "
                "Remove or replace the file."
            ) from exc
    return torch.from_numpy(out), s


def cnn_module(in_ch: int, n_classes: int, width: int = 32) -> Any:
    from torch import nn

    def block(i: int, o: int) -> list[nn.Module]:
        return [nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True)]

    w = width
    return nn.Sequential(
        *block(in_ch, w),
        *block(w, w),
        nn.MaxPool2d(2),
        *block(w, 2 * w),
        *block(2 * w, 2 * w),
        nn.MaxPool2d(2),
        *block(2 * w, 4 * w),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Dropout(0.25),
        nn.Linear(4 * w, n_classes),
    )


def stretch_epochs(
    epochs: int, patience: int, min_steps: int, steps_per_epoch: int
) -> tuple[int, int]:
    """(epochs, patience) so that training runs at least `min_steps` optimiser steps.

    Small budgets have one or two steps per epoch; their epochs are stretched, and patience
    with them, so that early stopping still waits the same share of training (a patience of
    a few one-step epochs would stop during the warm-up).
    """
    stretched = max(epochs, math.ceil(min_steps / max(1, steps_per_epoch)))
    return stretched, max(patience, math.ceil(patience * stretched / epochs))


class SmallCNN:
    """A small CNN trained from scratch on raw pixels: AdamW, warm-up + cosine, random shifts,
    early stopping on validation accuracy with the best epoch restored."""

    def __init__(
        self,
        *,
        epochs: int = 30,
        lr: float = 2e-3,
        batch_size: int = 64,
        min_steps: int = 500,
        patience: int = 6,
        seed: int = 0,
    ) -> None:
        self.epochs = epochs
        self.lr = lr
        self.batch_size = batch_size
        self.min_steps = min_steps
        self.patience = patience
        self.seed = seed

    def schedule(self, n_train: int) -> tuple[int, int, int]:
        """(epochs, patience, steps per epoch) a training set of ``n_train`` runs at most."""
        steps_per_epoch = math.ceil(n_train / self.batch_size)
        epochs, patience = stretch_epochs(
            self.epochs, self.patience, self.min_steps, steps_per_epoch
        )
        return epochs, patience, steps_per_epoch

    def measure_step(self, xt: Any, y_train: np.ndarray, n_classes: int, steps: int = 3) -> float:
        """Seconds per optimiser step (one batch forward and backward, augmentation included)
        on a fresh network, after one warm-up step: what :meth:`fit` will pay per step."""
        import torch
        from torch import nn

        torch.manual_seed(self.seed)
        self.device_ = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        model = self._build(xt, n_classes).to(self.device_)
        opt = torch.optim.AdamW(model.parameters(), lr=self.lr)
        gen = torch.Generator().manual_seed(self.seed)
        yt = torch.as_tensor(y_train)
        n = min(self.batch_size, len(yt))
        times = []
        for _ in range(steps + 1):
            t0 = time.perf_counter()
            b = torch.randint(0, len(yt), (n,), generator=gen)
            self._step(model, opt, nn.CrossEntropyLoss(), xt[b], yt[b], gen)
            times.append(time.perf_counter() - t0)
        return float(np.median(times[1:]))

    def _step(self, model: Any, opt: Any, loss_fn: Any, xb: Any, yb: Any, gen: Any) -> Any:
        """One optimiser step on a batch (augmented, normalised); the loss, detached."""
        loss = loss_fn(model(self._prep(self._augment(xb, gen))), yb.to(self.device_))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.detach()

    def fit(
        self,
        xt: Any,
        y_train: np.ndarray,
        xv: Any,
        y_val: np.ndarray,
        n_classes: int,
        *,
        deadline: float | None = None,
    ) -> SmallCNN:
        """Train on uint8 pixels ``(N, C, H, W)`` (see :func:`image_pixels`) and class indices.

        ``deadline``: a ``time.perf_counter()`` value after which no new epoch starts (the best
        epoch so far is kept, ``stopped_early_`` says so).
        """
        import torch
        from torch import nn
        from transformers import get_cosine_schedule_with_warmup

        torch.manual_seed(self.seed)
        self.device_ = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        yt = torch.as_tensor(y_train)
        self.model_ = self._build(xt, n_classes).to(self.device_)
        epochs, patience, steps_per_epoch = self.schedule(len(yt))
        total = epochs * steps_per_epoch
        opt = torch.optim.AdamW(self.model_.parameters(), lr=self.lr, weight_decay=5e-4)
        # the schedule every headstart training loop uses: linear warm-up (5 %), cosine to 0
        sched = get_cosine_schedule_with_warmup(opt, max(1, total // 20), total)
        gen = torch.Generator().manual_seed(self.seed)
        loss_fn = nn.CrossEntropyLoss()
        best: tuple[float, float] = (-1.0, float("inf"))
        best_state, bad, self.history_ = None, 0, []
        self.stopped_early_ = False
        for epoch in range(epochs):
            if deadline is not None and epoch and time.perf_counter() > deadline:
                self.stopped_early_ = True
                break
            t0 = time.perf_counter()
            self.model_.train()
            order = torch.randperm(len(yt), generator=gen)
            loss_sum = 0.0
            for i in range(0, len(order), self.batch_size):
                b = order[i : i + self.batch_size]
                loss = self._step(self.model_, opt, loss_fn, xt[b], yt[b], gen)
                sched.step()
                loss_sum += float(loss) * len(b)
            p = self.predict_proba(xv)
            val_acc = float((p.argmax(1) == y_val).mean())
            val_loss = float(-np.log(np.clip(p[np.arange(len(p)), y_val], 1e-12, 1)).mean())
            self.history_.append(
                {
                    "epoch": epoch + 1,
                    "train_loss": loss_sum / len(yt),
                    "val_accuracy": val_acc,
                    "val_loss": val_loss,
                    "seconds": time.perf_counter() - t0,
                }
            )
            if (val_acc, -val_loss) > (best[0], -best[1]):
                best, bad = (val_acc, val_loss), 0
                best_state = {k: v.detach().clone() for k, v in self.model_.state_dict().items()}
                self.best_epoch_ = epoch + 1
            else:
                bad += 1
                if bad >= patience:
                    break
        if best_state is not None:
            self.model_.load_state_dict(best_state)
        self.val_accuracy_ = best[0]
        self.n_params_ = sum(p.numel() for p in self.model_.parameters())
        return self

    def _build(self, xt: Any, n_classes: int) -> Any:
        """The network for training inputs ``xt``; also fixes the input normalisation."""
        f = xt.float() / 255.0
        self.mean_ = f.mean(dim=(0, 2, 3), keepdim=True)
        self.std_ = f.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-3)
        return cnn_module(xt.shape[1], n_classes)

    def _augment(self, x: Any, gen: Any) -> Any:
        return self._shift(x, gen)

    @staticmethod
    def _shift(x: Any, gen: Any, pad: int = 2) -> Any:
        """Random translations by up to `pad` pixels (edge pixels repeated)."""
        import torch
        import torch.nn.functional as F

        n, _, h, w = x.shape
        padded = F.pad(x.float(), (pad, pad, pad, pad), mode="replicate")
        dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
        dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
        return torch.stack([padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(n)])

    def _prep(self, x: Any) -> Any:
        return ((x.float() / 255.0 - self.mean_) / self.std_).to(self.device_)

    def predict_proba(self, x: Any) -> np.ndarray:
        """Class probabilities for uint8 pixels ``(N, C, H, W)``."""
        import torch

        self.model_.eval()
        out = []
        with torch.inference_mode():
            for i in range(0, len(x), 512):
                out.append(
                    torch.softmax(self.model_(self._prep(x[i : i + 512])).float(), 1).cpu().numpy()
                )
        return np.concatenate(out).astype(np.float64)


_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_TAG = re.compile(r"<[^>]{0,40}>")


def text_words(texts: Any) -> list[list[str]]:
    """Lower-cased word tokens of each text (HTML tags such as ``<br />`` dropped)."""
    return [_WORD.findall(_TAG.sub(" ", str(t).lower())) for t in texts]


def build_vocab(docs: list[list[str]], max_size: int = 30000, min_count: int = 2) -> dict[str, int]:
    """Word -> id for the ``max_size`` most frequent words seen ``min_count`` times (ties by
    first appearance); ids start at 2 (0: padding, 1: unknown word)."""
    from collections import Counter

    counts = Counter(w for d in docs for w in d)
    common = [w for w, c in counts.most_common(max_size) if c >= min_count]
    return {w: i + 2 for i, w in enumerate(common)}


def text_ids(docs: list[list[str]], vocab: dict[str, int], max_len: int = 400) -> Any:
    """(N, L) int64 token ids, zero-padded; a document longer than ``max_len`` keeps its first
    and last ``max_len / 2`` words (a review's verdict is often at its end)."""
    import torch

    rows = []
    for d in docs:
        if len(d) > max_len:
            d = d[: max_len // 2] + d[len(d) - (max_len - max_len // 2) :]
        rows.append([vocab.get(w, 1) for w in d] or [1])
    out = torch.zeros((len(rows), max(len(r) for r in rows)), dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.tensor(r, dtype=torch.long)
    return out


def _text_cnn_module(vocab_size: int, n_classes: int, dim: int = 64, channels: int = 64) -> Any:
    """Kim (2014)'s CNN for sentence classification, small: word embeddings, convolutions of
    widths 3, 4 and 5, max over time, dropout, linear."""
    import torch
    from torch import nn

    class TextCNN(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(vocab_size, dim, padding_idx=0)
            self.convs = nn.ModuleList(
                nn.Conv1d(dim, channels, k, padding=k // 2) for k in (3, 4, 5)
            )
            self.drop = nn.Dropout(0.5)
            self.fc = nn.Linear(3 * channels, n_classes)

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            pad = (ids == 0).unsqueeze(1)  # (N, 1, L)
            e = self.embed(ids).transpose(1, 2)  # (N, dim, L)
            pooled = []
            for conv in self.convs:
                h = torch.relu(conv(e))[..., : ids.shape[1]]
                pooled.append(h.masked_fill(pad, 0.0).amax(dim=2))  # ReLU >= 0: 0 is neutral
            return self.fc(self.drop(torch.cat(pooled, dim=1)))

    return TextCNN()


class SmallTextCNN(SmallCNN):
    """The small-CNN reference for text: a Kim-style text CNN (~2 M parameters, mostly the
    word embeddings) on token ids from :func:`text_ids`, trained from scratch with the same
    loop, schedule and early stopping as :class:`SmallCNN` (no augmentation)."""

    def __init__(self, *, vocab_size: int, **kw: Any) -> None:
        super().__init__(**kw)
        self.vocab_size = vocab_size

    def _build(self, xt: Any, n_classes: int) -> Any:
        return _text_cnn_module(self.vocab_size, n_classes)

    def _augment(self, x: Any, gen: Any) -> Any:
        return x

    def _prep(self, x: Any) -> Any:
        n = int((x != 0).sum(dim=1).max())  # trim the batch's padding
        return x[:, : max(n, 5)].to(self.device_)
