"""A one-hidden-layer MLP head in torch, early-stopped on validation loss: :class:`MLPHead`."""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted
from torch import nn

from headstart.heads.base import (
    FitData,
    HeadBase,
    HeadModule,
    check_class_weight,
    check_number,
    limit_threads,
)
from headstart.heads.solver import class_weight_vector, standardizer, stratified_holdout

__all__ = ["MLPHead"]


def _mlp_layers(d: int, hidden: int, k: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, k))


def _linear_layers(net: nn.Sequential) -> tuple[nn.Linear, nn.Linear]:
    """The first and last Linear layers of :func:`_mlp_layers`' network."""
    first, last = net[0], net[3]
    assert isinstance(first, nn.Linear) and isinstance(last, nn.Linear)
    return first, last


class MLPHead(HeadBase):
    """One-hidden-layer MLP (Linear-ReLU-Dropout-Linear) with early stopping on val loss.

    Trained with AdamW on mini-batches of standardised features and a class-weighted
    cross-entropy. After each epoch the (class-weighted) validation loss is measured; training
    stops after `patience` epochs without improvement and the best epoch's weights are
    restored. Without validation data a stratified `val_fraction` of the training data is held
    out (and not trained on); if the data is too small for that, the training loss is
    monitored instead. Given the same data and `random_state` (an int), fitting is
    deterministic on a given machine and thread count; the global torch RNG is left untouched.

    Parameters
    ----------
    hidden: width of the hidden layer.
    dropout: dropout probability after the hidden layer (training only).
    weight_decay, lr: AdamW's decoupled weight decay and learning rate.
    max_epochs, patience: epoch limit; stop after `patience` epochs without a better
        monitored loss (an improvement must exceed a relative 1e-4).
    batch_size: examples per optimisation step.
    class_weight: 'balanced' (default), None or {label: weight}, as for LogisticHead.
    standardize: learn per-feature mean and scale on the training part and apply them.
    val_fraction: share of each class held out for early stopping when no val data is given.
    random_state: seed for initialisation, shuffling, dropout and the holdout (None: random).
    n_threads: cap on torch's and BLAS's threads during fit; None (default) uses one thread
        when a batch's products are small (batch_size x n_features x hidden under 1e9) and
        the libraries' settings otherwise (see LogisticHead).

    Attributes
    ----------
    classes_, mean_, scale_, w1_ (hidden, d), b1_ (hidden,), w2_ (n_classes, hidden),
    b2_ (n_classes,): the fitted network (float32) on standardised features.
    n_iter_: epochs run. best_epoch_: the epoch (1-based) whose weights were kept.
    loss_curve_, val_loss_curve_: training / monitored loss per epoch.
    """

    _type = "mlp"
    _state_keys = ("w1", "b1", "w2", "b2", "mean", "scale")
    _fitted_keys = ("n_iter", "best_epoch", "loss_curve", "val_loss_curve")

    def __init__(
        self,
        hidden: int = 512,
        dropout: float = 0.2,
        weight_decay: float = 1e-4,
        lr: float = 1e-3,
        max_epochs: int = 200,
        patience: int = 10,
        batch_size: int = 256,
        class_weight: str | Mapping[Any, float] | None = "balanced",
        standardize: bool = True,
        val_fraction: float = 0.2,
        random_state: int | None = 0,
        n_threads: int | None = None,
    ) -> None:
        self.hidden = hidden
        self.dropout = dropout
        self.weight_decay = weight_decay
        self.lr = lr
        self.max_epochs = max_epochs
        self.patience = patience
        self.batch_size = batch_size
        self.class_weight = class_weight
        self.standardize = standardize
        self.val_fraction = val_fraction
        self.random_state = random_state
        self.n_threads = n_threads

    def _validate_params(self, classes: np.ndarray) -> None:
        name = type(self).__name__
        check_number(name, "hidden", self.hidden, low=1, integer=True)
        check_number(name, "dropout", self.dropout, low=0, high=1)
        check_number(name, "weight_decay", self.weight_decay, low=0)
        check_number(name, "lr", self.lr, low=0, low_open=True)
        check_number(name, "max_epochs", self.max_epochs, low=1, integer=True)
        check_number(name, "patience", self.patience, low=1, integer=True)
        check_number(name, "batch_size", self.batch_size, low=1, integer=True)
        check_number(name, "val_fraction", self.val_fraction, low=0, high=1, low_open=True)
        check_class_weight(name, self.class_weight, classes)
        if self.random_state is not None:
            check_number(name, "random_state", self.random_state, low=0, integer=True)

    def fit(
        self, X: Any, y: Any, X_val: Any = None, y_val: Any = None, sample_weight: Any = None
    ) -> MLPHead:
        """Train on (`X`, `y`), early-stopping on (`X_val`, `y_val`) or an internal holdout.

        `sample_weight` (n,) multiplies each training example's loss (and its share of
        'balanced' class weights); validation examples weigh by their class only."""
        data = FitData(self, X, y, X_val, y_val, sample_weight)
        hidden = self.hidden if isinstance(self.hidden, numbers.Integral) else 0
        batch = self.batch_size if isinstance(self.batch_size, numbers.Integral) else 0
        work = min(batch, data.X.shape[0]) * data.X.shape[1] * hidden
        with limit_threads(type(self).__name__, self.n_threads, work):
            return self._fit(data)

    def _fit(self, data: FitData) -> MLPHead:
        self._validate_params(data.classes)
        k, d = len(data.classes), data.X.shape[1]
        seed = (
            int(self.random_state)
            if self.random_state is not None
            else int(np.random.default_rng().integers(2**31))
        )
        X_va: np.ndarray | None
        y_va: np.ndarray | None
        s_va: np.ndarray | None = None
        if data.X_val is not None and data.y_val_idx is not None:
            X_tr, y_tr, X_va, y_va = data.X, data.y_idx, data.X_val, data.y_val_idx
            s_tr = data.sample_weight
        else:
            tr, va = stratified_holdout(data.y_idx, self.val_fraction, seed)
            X_tr, y_tr, s_tr = data.X[tr], data.y_idx[tr], data.sample_weight[tr]
            X_va, y_va = (data.X[va], data.y_idx[va]) if len(va) else (None, None)
            s_va = data.sample_weight[va] if len(va) else None

        self.classes_ = data.classes
        self.mean_, self.scale_ = standardizer(X_tr, self.standardize, s_tr)

        def tensor(a: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(((a - self.mean_) / self.scale_).astype(np.float32))

        xt, yt = tensor(X_tr), torch.from_numpy(y_tr)
        # per-example loss weights: class weight x sample weight
        cw_tr = class_weight_vector(y_tr, k, self.class_weight, data.classes, s_tr)
        w_tr = torch.from_numpy(cw_tr[y_tr] * s_tr)
        if X_va is not None and y_va is not None:
            xv, yv = tensor(X_va), torch.from_numpy(y_va)
            s_v = np.ones(len(y_va)) if s_va is None else s_va
            cw_va = class_weight_vector(y_va, k, self.class_weight, data.classes, s_v)
            w_va = torch.from_numpy(cw_va[y_va] * s_v)
        else:
            xv, yv, w_va = xt, yt, w_tr
        w_tr, w_va = w_tr.float(), w_va.float()

        def weighted_ce(logits: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
            ce = nn.functional.cross_entropy(logits, y, reduction="none")
            return (ce * w).sum() / w.sum().clamp_min(1e-12)

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            gen = torch.Generator().manual_seed(seed)
            net = _mlp_layers(d, int(self.hidden), k, float(self.dropout))
            opt = torch.optim.AdamW(net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
            best_loss, best_state, best_epoch = math.inf, None, 0
            losses: list[float] = []
            val_losses: list[float] = []
            n = len(yt)
            bs = min(int(self.batch_size), n)
            for epoch in range(1, int(self.max_epochs) + 1):
                net.train()
                perm = torch.randperm(n, generator=gen)
                total = 0.0
                for start in range(0, n, bs):
                    idx = perm[start : start + bs]
                    loss = weighted_ce(net(xt[idx]), yt[idx], w_tr[idx])
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    total += float(loss.detach()) * len(idx)
                losses.append(total / n)
                net.eval()
                with torch.no_grad():
                    vloss = float(weighted_ce(net(xv), yv, w_va))
                val_losses.append(vloss)
                if vloss < best_loss - 1e-4 * max(abs(best_loss), 1e-3) or best_state is None:
                    best_loss, best_epoch = vloss, epoch
                    best_state = {key: v.detach().clone() for key, v in net.state_dict().items()}
                elif epoch - best_epoch >= self.patience:
                    break
            assert best_state is not None
            net.load_state_dict(best_state)

        first, last = _linear_layers(net)
        self.w1_ = first.weight.detach().numpy().copy()
        self.b1_ = first.bias.detach().numpy().copy()
        self.w2_ = last.weight.detach().numpy().copy()
        self.b2_ = last.bias.detach().numpy().copy()
        self.n_iter_ = len(losses)
        self.best_epoch_ = best_epoch
        self.loss_curve_ = losses
        self.val_loss_curve_ = val_losses
        return self

    @classmethod
    def _state_shapes(
        cls, n_classes: int, n_features: int, state: Mapping[str, np.ndarray]
    ) -> dict[str, tuple[int, ...]]:
        k, d, h = n_classes, n_features, int(np.shape(state["w1"])[0])
        return {"w1": (h, d), "b1": (h,), "w2": (k, h), "b2": (k,), "mean": (d,), "scale": (d,)}

    def _logits(self, X: np.ndarray) -> np.ndarray:
        # float64 numpy so that a row's prediction does not depend on the batch around it
        h = ((X - self.mean_) / self.scale_) @ self.w1_.T.astype(np.float64) + self.b1_
        np.maximum(h, 0, out=h)
        return h @ self.w2_.T.astype(np.float64) + self.b2_

    def to_torch(self) -> HeadModule:
        """A float32 module mapping raw features (n, d) to logits, in eval mode (dropout off).

        Equal to :meth:`decision_function` up to float32 rounding (for two classes,
        ``logits[:, 1] - logits[:, 0]`` equals it).
        """
        check_is_fitted(self)
        net = _mlp_layers(
            self.w1_.shape[1], self.w1_.shape[0], self.w2_.shape[0], float(self.dropout)
        )
        with torch.no_grad():
            first, last = _linear_layers(net)
            for layer, w, b in ((first, self.w1_, self.b1_), (last, self.w2_, self.b2_)):
                layer.weight.copy_(torch.as_tensor(w, dtype=torch.float32))
                layer.bias.copy_(torch.as_tensor(b, dtype=torch.float32))
        return HeadModule(self.mean_, self.scale_, net).eval()

    def load_torch(self, module: HeadModule) -> MLPHead:
        """Take the weights of a (fine-tuned) :meth:`to_torch` module back into this head."""
        check_is_fitted(self)
        layers: Any = module.layers
        first, last = layers[0], layers[3]
        self.w1_ = first.weight.detach().cpu().numpy().copy()
        self.b1_ = first.bias.detach().cpu().numpy().copy()
        self.w2_ = last.weight.detach().cpu().numpy().copy()
        self.b2_ = last.bias.detach().cpu().numpy().copy()
        return self
