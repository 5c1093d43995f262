"""Choose before you train: rank candidate backbones on a sample of the user's data.

:func:`rank_backbones` extracts features of one stratified sample per backbone (through the
same content-addressed cache that ``fit`` uses, so nothing is computed twice) and measures,
for each backbone:

* the transferability scores of :mod:`headstart.selection.transferability`: LogME, H-score (the
  shrinkage version, see below), and, for backbones with a source classifier (ImageNet
  heads), LEEP and NCE;
* a cross-validated linear-probe accuracy on the sample (mean and standard deviation over
  stratified folds);
* its cost: extraction milliseconds per example as measured here, and its parameters.

Backbones are ranked by **LogME**. It needs only features and labels (so every backbone
gets a score, with or without a source head), it is the score with the best rank
correlation to fine-tuned and linear-probe accuracy across the published benchmarks (You et
al., ICML 2021; Ibrahim et al., ECML-PKDD 2022, where it is among the most stable), and it
is cheap: one SVD of the sample's features. The H-score reported is the Ledoit-Wolf
shrinkage variant, because the plain H-score is dominated by noise when the feature
dimension is close to or above the sample size, which is the usual case here (1280-d
features, a few hundred examples).

Cost accounting. Ranking must cost little more than extracting the sample once per backbone
(issue 4 allows 5 %). Scores cost one or two SVDs of the sample's features. The
cross-validated probe is therefore a closed-form *ridge (least-squares) classifier* rather
than :class:`~headstart.heads.LogisticHead`: per fold, one eigendecomposition of the
training fold's Gram matrix gives the solution for every regularisation strength, which is
chosen by exact leave-one-out accuracy on the training fold (as ``RidgeClassifierCV``) and
then scored on the held-out fold, so the estimate stays honest (nested). ``probe="logistic"``
runs the same folds with :class:`~headstart.heads.LogisticHead` (C from a small grid on an
inner holdout); it is several times slower (the measured timings are in
``benchmarks/RESULTS-rank.md``). Every row records its load, extraction, scoring and probe
seconds, so the overhead is visible in the table itself.

:func:`candidates` lists the installed backbones of a modality and :func:`choose_backbone`
ranks them for ``fit --backbone auto``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..backbones.base import Backbone
from ..data.base import Examples
from ..errors import ConfigError, DataError, HeadstartError
from .cost import extraction_cost, one_blas_thread

log = logging.getLogger("headstart")

__all__ = [
    "PRIMARY_SCORE",
    "RankRow",
    "RankTable",
    "candidates",
    "choose_backbone",
    "probe_cv",
    "rank_backbones",
    "ridge_cv_accuracy",
    "source_probabilities",
]

#: The score that orders the table (see the module docstring for why).
PRIMARY_SCORE = "logme"
#: Ridge strengths tried per fold, as multiples of the mean eigenvalue of the Gram matrix
#: of standardised features (so that the grid means the same for every feature dimension).
RIDGE_GRID: tuple[float, ...] = tuple(float(x) for x in np.logspace(-3, 3, 13))
#: The grid of C for ``probe="logistic"`` (inverse L2 strength, scikit-learn's convention).
LOGISTIC_GRID: tuple[float, ...] = (0.01, 0.1, 1.0)
PROBES = ("ridge", "logistic")


# --------------------------------------------------------------------------------- results
@dataclass
class RankRow:
    """One backbone's measurements on the sample. Scores: higher = better transfer."""

    name: str
    logme: float
    hscore: float  # Ledoit-Wolf shrinkage H-score (Ibrahim et al. 2022)
    nce: float | None  # None without a source classifier
    leep: float | None  # None without a source classifier
    probe_accuracy: float  # mean over the CV folds
    probe_std: float  # standard deviation over the CV folds
    ms_per_example: float  # extraction cost per example on this machine
    params_m: float  # backbone parameters, millions (source head excluded)
    feature_dim: int
    n: int  # examples in the sample
    cached: bool  # features came from the cache (no extraction in this call)
    cost_from: str  # "extraction" (this call), "cache record", or "re-measured"
    engine: str
    seconds: dict[str, float] = field(default_factory=dict)  # load, extract, scores, probe
    hscore_plain: float | None = None
    rank: int = 0

    def score(self, name: str) -> float | None:
        """A score by name ('logme', 'hscore', 'nce', 'leep', 'probe_accuracy')."""
        if name not in ("logme", "hscore", "hscore_plain", "nce", "leep", "probe_accuracy"):
            raise ConfigError(
                f"Unknown score {name!r}: use one of logme, hscore, hscore_plain, nce, leep, "
                "probe_accuracy."
            )
        value = getattr(self, name)
        return None if value is None else float(value)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RankTable:
    """Backbones ranked by :data:`PRIMARY_SCORE` (rows in rank order, best first)."""

    rows: list[RankRow]
    n: int
    n_classes: int
    seed: int
    cv: int
    probe: str
    data: str = ""
    primary: str = PRIMARY_SCORE
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.rows)

    def names(self) -> list[str]:
        return [r.name for r in self.rows]

    def row(self, name: str) -> RankRow:
        for r in self.rows:
            if r.name == name:
                return r
        from ..errors import did_you_mean

        raise ConfigError(f"{name!r} was not ranked here." + did_you_mean(name, self.names()))

    def best(self, cost_budget_ms: float | None = None) -> RankRow:
        """The best-ranked backbone whose extraction costs at most ``cost_budget_ms`` per example.

        Without a budget, the top row. Raises ConfigError when no backbone fits the budget,
        naming the cheapest one.
        """
        if cost_budget_ms is None:
            return self.rows[0]
        if not (isinstance(cost_budget_ms, int | float) and cost_budget_ms > 0):
            raise ConfigError(
                f"The cost budget must be a positive number of milliseconds per example, got "
                f"{cost_budget_ms!r}."
            )
        for r in self.rows:
            if r.ms_per_example <= cost_budget_ms:
                return r
        cheapest = min(self.rows, key=lambda r: r.ms_per_example)
        raise ConfigError(
            f"No ranked backbone extracts within {cost_budget_ms:g} ms per example on this "
            f"machine; the cheapest is {cheapest.name} at {cheapest.ms_per_example:.1f} ms. "
            "Raise the budget or add cheaper candidates."
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "data": self.data,
            "n": self.n,
            "n_classes": self.n_classes,
            "seed": self.seed,
            "cv": self.cv,
            "probe": self.probe,
            "primary": self.primary,
            "notes": list(self.notes),
            "rows": [r.to_dict() for r in self.rows],
        }

    def format(self) -> str:
        """The table as text, one backbone per line, best first."""

        def num(x: float | None, spec: str) -> str:
            return "-" if x is None or not math.isfinite(x) else format(x, spec)

        w = max(8, *(len(r.name) for r in self.rows))
        head = (
            f"{'rank':>4}  {'backbone':<{w}}  {'LogME':>7}  {'H-score':>7}  {'NCE':>7}  "
            f"{'LEEP':>7}  {'probe acc (' + str(self.cv) + '-fold)':>19}  {'ms/ex':>7}  {'params':>7}"
        )
        lines = [
            f"{self.data or 'data'}: {self.n} examples, {self.n_classes} classes (stratified "
            f"sample, seed {self.seed}); ranked by {self.primary}",
            head,
        ]
        for r in self.rows:
            probe = f"{num(r.probe_accuracy, '.3f')} ± {num(r.probe_std, '.3f')}"
            lines.append(
                f"{r.rank:>4}  {r.name:<{w}}  {num(r.logme, '.3f'):>7}  {num(r.hscore, '.3f'):>7}  "
                f"{num(r.nce, '.3f'):>7}  {num(r.leep, '.3f'):>7}  {probe:>19}  "
                f"{num(r.ms_per_example, '.1f'):>7}  {r.params_m:>6.1f}M"
            )
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


# ---------------------------------------------------------------------------- the probe
def _standardise(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    mean = train.mean(axis=0)
    scale = train.std(axis=0)
    scale[scale < 1e-12 * np.maximum(1.0, np.abs(mean))] = 1.0
    return [(a - mean) / scale for a in (train, *others)]


def _ridge_fold(
    x_tr: np.ndarray, y_tr: np.ndarray, x_te: np.ndarray, y_te: np.ndarray, n_classes: int
) -> float:
    """Test-fold accuracy of a ridge classifier whose strength is chosen by exact LOO."""
    a, b = _standardise(x_tr.astype(np.float64), x_te.astype(np.float64))
    n = a.shape[0]
    y = np.zeros((n, n_classes))
    y[np.arange(n), y_tr] = 1.0
    y_mean = y.mean(axis=0)
    yc = y - y_mean
    gram = a @ a.T
    evals, u = np.linalg.eigh(gram)
    evals = np.clip(evals, 0.0, None)
    uty = u.T @ yc
    u2 = u * u
    scale = max(float(np.trace(gram)) / n, 1e-12)
    best_acc, best_lam = -1.0, 0.0
    for lam in (scale * g for g in RIDGE_GRID):
        shrink = evals / (evals + lam)
        fitted = u @ (shrink[:, None] * uty)
        h = u2 @ shrink  # diagonal of the hat matrix
        loo = yc - (yc - fitted) / np.maximum(1.0 - h, 1e-12)[:, None]
        acc = float(np.mean(np.argmax(loo, axis=1) == y_tr))
        if acc >= best_acc:  # ties go to the stronger regularisation (later in the grid)
            best_acc, best_lam = acc, lam
    pred = (b @ a.T) @ (u @ (uty / (evals + best_lam)[:, None])) + y_mean
    return float(np.mean(np.argmax(pred, axis=1) == y_te))


def _logistic_fold(
    x_tr: np.ndarray, y_tr: np.ndarray, x_te: np.ndarray, y_te: np.ndarray, seed: int
) -> float:
    from ..heads import LogisticHead

    head = LogisticHead(Cs=LOGISTIC_GRID, path_patience=None, random_state=seed)
    head.fit(x_tr, y_tr)
    return float(np.mean(head.predict(x_te) == y_te))


def _folds(y: np.ndarray, cv: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    from sklearn.model_selection import StratifiedKFold

    return list(StratifiedKFold(n_splits=cv, shuffle=True, random_state=seed).split(y, y))


def probe_cv(
    features: np.ndarray, labels: np.ndarray, *, cv: int = 5, seed: int = 0, probe: str = "ridge"
) -> tuple[float, float, int]:
    """Stratified ``cv``-fold linear-probe accuracy: (mean, std over folds, folds used).

    ``cv`` is lowered to the size of the smallest class when that is smaller (every fold
    must see every class); it must stay >= 2. ``probe`` is "ridge" (closed form, see the
    module docstring) or "logistic" (:class:`~headstart.heads.LogisticHead`).
    """
    if probe not in PROBES:
        raise ConfigError(f"probe must be one of {PROBES}, got {probe!r}.")
    x = np.asarray(features)
    _, y = np.unique(np.asarray(labels), return_inverse=True)
    y = y.reshape(-1)
    counts = np.bincount(y)
    k = min(int(cv), int(counts.min()))
    if k < 2:
        raise DataError(
            f"A {cv}-fold probe needs at least 2 examples of every class in the sample; the "
            f"smallest class has {int(counts.min())}. Use a larger sample or merge small classes."
        )
    accs = []
    for tr, te in _folds(y, k, seed):
        if probe == "ridge":
            accs.append(_ridge_fold(x[tr], y[tr], x[te], y[te], len(counts)))
        else:
            accs.append(_logistic_fold(x[tr], y[tr], x[te], y[te], seed))
    return float(np.mean(accs)), float(np.std(accs)), k


def ridge_cv_accuracy(
    features: np.ndarray, labels: np.ndarray, *, cv: int = 5, seed: int = 0
) -> tuple[float, float]:
    """Mean and standard deviation of the closed-form ridge probe's CV accuracy."""
    mean, std, _ = probe_cv(features, labels, cv=cv, seed=seed, probe="ridge")
    return mean, std


# ------------------------------------------------------------------------------ helpers
def source_probabilities(backbone: Backbone, features: np.ndarray) -> np.ndarray | None:
    """Softmax of the backbone's source classifier on pooled features, or None without one."""
    if backbone.source_head is None:
        return None
    import torch

    with torch.inference_mode():
        logits = backbone.source_logits(
            torch.from_numpy(np.ascontiguousarray(features, np.float32))
        )
    if logits is None:
        return None
    z = logits.double().numpy()
    z -= z.max(axis=1, keepdims=True)
    p = np.exp(z)
    return p / p.sum(axis=1, keepdims=True)


def _n_params(backbone: Backbone) -> float:
    return sum(p.numel() for p in backbone.parameters()) / 1e6


def _check_args(examples: Examples, backbones: Sequence[Any], sample: int, cv: int) -> None:
    if not isinstance(examples, Examples):
        raise ConfigError(
            f"rank_backbones needs an Examples object, got {type(examples).__name__}."
        )
    if not backbones:
        raise ConfigError("Give at least one backbone to rank (e.g. --backbones a,b,c).")
    names = [b if isinstance(b, str) else getattr(b, "name", repr(b)) for b in backbones]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"Backbone(s) listed twice: {', '.join(dupes)}. Give each once.")
    if isinstance(sample, bool) or not isinstance(sample, int | np.integer) or sample < 4:
        raise ConfigError(f"sample must be a whole number of examples >= 4, got {sample!r}.")
    if isinstance(cv, bool) or not isinstance(cv, int | np.integer) or cv < 2:
        raise ConfigError(f"cv must be a whole number of folds >= 2, got {cv!r}.")
    if len(examples) == 0:
        raise DataError(f"{examples.name or 'the data'} has no examples to rank backbones on.")
    if (examples.labels < 0).any():
        raise DataError(
            f"{int((examples.labels < 0).sum())} examples have no label (-1); ranking needs "
            "labelled examples. Drop the unlabelled ones first."
        )
    if int((examples.class_counts() > 0).sum()) < 2:
        raise DataError("The data has a single class; ranking backbones needs at least two.")


def take_sample(examples: Examples, sample: int, seed: int, cv: int = 2) -> Examples:
    """A stratified sample of ``sample`` examples (all of them, unchanged, when fewer).

    Returning the examples unchanged keeps their fingerprint, so the features ``rank``
    extracts are the very cache entry a later ``fit`` on the same split reads.
    """
    from ..data.split import stratified_subset

    if sample >= len(examples):
        return examples
    counts = examples.class_counts()
    per = int(min(cv, counts[counts > 0].min()))
    idx = stratified_subset(examples.labels, sample, seed, min_per_class=per)
    return examples.subset(idx, name=f"{examples.name or 'data'} (sample of {sample})")


# --------------------------------------------------------------------------------- rank
def rank_backbones(
    examples: Examples,
    backbones: Sequence[str | Backbone],
    *,
    sample: int = 500,
    seed: int = 0,
    cv: int = 5,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    probe: str = "ridge",
    engine: str = "auto",
    batch_size: int | None = None,
    pretrained: bool = True,
    skip_failed: bool = False,
) -> RankTable:
    """Rank ``backbones`` (names or loaded :class:`Backbone` objects) on a sample of ``examples``.

    A stratified sample of ``sample`` examples (``data.split.stratified_subset`` with
    ``seed``; all examples when there are fewer) goes through
    :func:`~headstart.features.cache.extract_features` for each backbone, with ``cache_dir`` (the
    default cache when None), and is scored as the module docstring describes. Backbones
    are loaded one at a time and released after scoring. Rows come back best first by
    :data:`PRIMARY_SCORE`; a backbone whose features cannot be scored (e.g. all zero) is
    ranked last with its failure in ``notes``. With ``skip_failed``, a backbone that cannot
    be loaded is left out with a note instead of raising.
    """
    from ..backbones.registry import load_backbone
    from ..features.cache import extract_features
    from .transferability import hscore, leep, logme, nce

    _check_args(examples, backbones, sample, cv)
    if probe not in PROBES:
        raise ConfigError(f"probe must be one of {PROBES}, got {probe!r}.")
    sub = take_sample(examples, int(sample), seed, cv)
    present = np.unique(sub.labels)
    y = sub.labels
    rows: list[RankRow] = []
    notes: list[str] = []
    if len(sub) < len(examples):
        notes.append(f"scores use a stratified sample of {len(sub)} of {len(examples)} examples")
    for item in backbones:
        t0 = time.perf_counter()
        try:
            bb = load_backbone(item, pretrained=pretrained) if isinstance(item, str) else item
        except HeadstartError as exc:
            if not skip_failed:
                raise
            notes.append(f"{item} left out: {exc}")
            continue
        bb.eval()
        t_load = time.perf_counter() - t0
        fs = extract_features(
            bb, sub, cache_dir=cache_dir, progress=progress, engine=engine, batch_size=batch_size
        )
        feats = fs.load()
        t_extract = time.perf_counter() - t0 - t_load
        ms, cost_from = extraction_cost(bb, fs, sub, engine, batch_size)
        t1 = time.perf_counter()
        scores: dict[str, float | None] = {
            "logme": math.nan,
            "hscore": math.nan,
            "hscore_plain": math.nan,
            "nce": None,
            "leep": None,
        }
        with one_blas_thread():
            try:
                f64 = feats.astype(np.float64)
                scores["logme"] = logme(f64, y)
                scores["hscore"] = hscore(f64, y, shrinkage=True)
                scores["hscore_plain"] = hscore(f64, y)
                probs = source_probabilities(bb, feats)
                if probs is not None:
                    scores["leep"] = leep(probs, y)
                    scores["nce"] = nce(np.argmax(probs, axis=1), y)
            except DataError as exc:
                notes.append(f"{bb.name}: could not be scored ({exc})")
            t2 = time.perf_counter()
            try:
                acc, std, folds = probe_cv(feats, y, cv=cv, seed=seed, probe=probe)
            except DataError as exc:
                acc, std, folds = math.nan, math.nan, 0
                notes.append(f"{bb.name}: no probe accuracy ({exc})")
        t3 = time.perf_counter()
        if folds and folds < cv and not any("folds" in n for n in notes):
            notes.append(f"the probe used {folds} folds: the smallest class has {folds} examples")
        rows.append(
            RankRow(
                name=bb.name,
                logme=float(scores["logme"]),  # type: ignore[arg-type]
                hscore=float(scores["hscore"]),  # type: ignore[arg-type]
                nce=scores["nce"],
                leep=scores["leep"],
                probe_accuracy=acc,
                probe_std=std,
                ms_per_example=ms,
                params_m=round(_n_params(bb), 3),
                feature_dim=int(bb.feature_dim),
                n=len(sub),
                cached=fs.computed_shards == 0,
                cost_from=cost_from,
                engine=fs.engine,
                seconds={"load": t_load, "extract": t_extract, "scores": t2 - t1, "probe": t3 - t2},
                hscore_plain=scores["hscore_plain"],
            )
        )
        if isinstance(item, str):
            del bb
    if not rows:
        raise ConfigError("No backbone could be ranked: " + "; ".join(notes))
    rows.sort(
        key=lambda r: (not math.isfinite(r.logme), -r.logme if math.isfinite(r.logme) else 0.0)
    )
    for i, r in enumerate(rows, 1):
        r.rank = i
    return RankTable(
        rows=rows,
        n=len(sub),
        n_classes=len(present),
        seed=seed,
        cv=cv,
        probe=probe,
        data=examples.name,
        notes=notes,
    )


# -------------------------------------------------------------------------- auto choice
def candidates(modality: str) -> list[str]:
    """Known backbones of ``modality`` whose weights are installed or cached here."""
    from ..backbones.registry import KNOWN, weights_status

    if modality not in ("image", "text", "audio"):
        raise ConfigError(f"modality must be 'image', 'text' or 'audio', got {modality!r}.")
    out = []
    for k in KNOWN:
        if k.modality != modality:
            continue
        try:
            status = weights_status(k.name)
        except Exception:  # a broken hub cache should not stop the others
            continue
        if status.startswith(("installed", "cached")):
            out.append(k.name)
    return out


def choose_backbone(
    examples: Examples,
    modality: str | None = None,
    cost_budget_ms: float | None = None,
    sample: int = 300,
    **kw: Any,
) -> tuple[str, RankTable]:
    """Rank the installed candidates for the data's modality; return the best within budget.

    ``kw`` goes to :func:`rank_backbones` (seed, cv, cache_dir, progress, engine, ...).
    A candidate that fails to load is left out with a note. Raises ConfigError when no
    backbone of the modality is installed.
    """
    from ..backbones.registry import DEFAULT_BACKBONE

    modality = modality or examples.modality
    names = candidates(modality)
    if not names:
        default = DEFAULT_BACKBONE.get(modality, "")
        raise ConfigError(
            f"--backbone auto found no installed {modality} backbone to rank. Install one "
            f"(`headstart backbones --modality {modality}` lists them and their packages)"
            + (f", or name one, e.g. --backbone {default}." if default else ".")
        )
    table = rank_backbones(examples, names, sample=sample, skip_failed=True, **kw)
    return table.best(cost_budget_ms).name, table
