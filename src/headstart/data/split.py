"""Stratified, seeded splits and subsets of integer labels.

Every class keeps its share (largest-remainder rounding), small classes are guaranteed a
minimum, and the same labels and seed always give the same indices. Within each class the
examples are taken in one seeded order that does not depend on how many are taken, so a
budget of 100 examples is (almost always) contained in the budget of 200 for the same seed,
which keeps learning curves comparable.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from headstart.errors import DataError


def _as_labels(labels: Sequence[int] | np.ndarray) -> np.ndarray:
    y = np.asarray(labels)
    if y.ndim != 1:
        raise DataError(f"labels must be one-dimensional, got shape {y.shape}.")
    if y.size and not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"labels must be integer class indices, got dtype {y.dtype}.")
    y = y.astype(np.int64)
    if (y < 0).any():
        n = int((y < 0).sum())
        raise DataError(
            f"{n} examples have no label (-1); a stratified split needs every label. "
            "Label them or leave them out first."
        )
    return y


def _allocate(
    counts: np.ndarray, n: int, min_per_class: int, keep_per_class: int, rng: np.random.Generator
) -> np.ndarray:
    """How many to take from each class: proportional, within [lo, hi], summing to n."""
    hi = np.maximum(counts - keep_per_class, 0)
    lo = np.minimum(min_per_class, hi)
    if n < lo.sum() or n > hi.sum():
        raise ValueError(f"cannot take {n}: must be between {lo.sum()} and {hi.sum()}")
    ideal = n * counts / counts.sum()
    take = np.clip(np.floor(ideal).astype(np.int64), lo, hi)
    tiebreak = rng.random(len(counts))
    while take.sum() != n:
        short = take.sum() < n
        gap = ideal - take  # positive: under-served
        gap = np.where(short, gap, -gap)
        room = take < hi if short else take > lo
        order = np.lexsort((tiebreak, -np.where(room, gap, -np.inf)))
        k = order[0]
        take[k] += 1 if short else -1
    return take


def _take(
    labels: np.ndarray,
    n: int,
    seed: int,
    min_per_class: int,
    keep_per_class: int,
    what: str,
) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n_classes = int(labels.max()) + 1 if labels.size else 0
    counts = np.bincount(labels, minlength=n_classes)
    # One permutation per class, drawn before `n` matters, so subsets nest across sizes.
    perms = [rng.permutation(np.flatnonzero(labels == k)) for k in range(n_classes)]
    try:
        take = _allocate(counts, n, min_per_class, keep_per_class, rng)
    except ValueError:
        present = int((counts > 0).sum())
        usable = int(np.maximum(counts - keep_per_class, 0).sum())
        if n > usable:
            extra = f" (keeping {keep_per_class} per class for the rest)" if keep_per_class else ""
            raise DataError(
                f"Cannot take {what} of {n} examples: only {usable} are available{extra} "
                f"out of {labels.size} in {present} classes. Ask for fewer."
            ) from None
        raise DataError(
            f"Cannot take {what} of {n} examples with at least {min_per_class} from each of "
            f"the {present} classes: that needs at least "
            f"{int(np.minimum(min_per_class, np.maximum(counts - keep_per_class, 0)).sum())}. "
            "Ask for more examples, or merge or remove small classes."
        ) from None
    parts = [p[:t] for p, t in zip(perms, take, strict=True)]
    chosen = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    return rng.permutation(chosen.astype(np.int64))


def stratified_subset(
    labels: Sequence[int] | np.ndarray,
    n: int,
    seed: int = 0,
    *,
    min_per_class: int = 1,
) -> np.ndarray:
    """Indices of exactly `n` examples, each class represented in proportion to its size.

    Every class gets at least `min_per_class` examples (fewer only when it has fewer).
    Returned in a seeded random order; the same `labels`, `n` and `seed` give the same
    indices.

    Raises
    ------
    DataError
        when `n` is larger than the number of examples, or smaller than
        ``min_per_class`` times the number of classes.
    """
    y = _as_labels(labels)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise DataError(f"The subset size must be a whole number >= 0, got {n!r}.")
    return _take(y, int(n), seed, min_per_class, 0, "a stratified subset")


def stratified_split(
    labels: Sequence[int] | np.ndarray,
    size: float | int,
    seed: int = 0,
    *,
    min_per_class: int = 1,
    keep_per_class: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into ``(rest, part)``, stratified by class.

    `size` is the size of `part`: a fraction in (0, 1) of all examples, or a whole number.
    `part` gets at least `min_per_class` of every class and `rest` keeps at least
    `keep_per_class` of every class (a class too small for both gives `part` fewer).
    Both index arrays are in a seeded random order; the same inputs and seed give the same
    split.
    """
    y = _as_labels(labels)
    if isinstance(size, bool) or not isinstance(size, (int, float, np.integer, np.floating)):
        raise DataError(f"The split size must be a fraction or a count, got {size!r}.")
    if isinstance(size, (float, np.floating)):
        if not 0.0 < size < 1.0:
            raise DataError(f"The split fraction must be between 0 and 1 (exclusive), got {size}.")
        n = round(float(size) * y.size)
        counts = np.bincount(y) if y.size else np.zeros(0, np.int64)
        floor = int(np.minimum(min_per_class, np.maximum(counts - keep_per_class, 0)).sum())
        n = max(n, floor)
        n = min(n, int(np.maximum(counts - keep_per_class, 0).sum()))
        what = f"a {size:g} split"
    else:
        n = int(size)
        what = "a split"
    part = _take(y, n, seed, min_per_class, keep_per_class, what)
    mask = np.ones(y.size, dtype=bool)
    mask[part] = False
    rest = np.random.default_rng([seed, 1]).permutation(np.flatnonzero(mask))
    return rest, part


def budget_split(
    labels: Sequence[int] | np.ndarray, n: int | None, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) indices: a stratified budget of ``n`` (None: all), then a stratified
    ``val_fraction`` of it carved as validation (at least one per class kept for training).

    ``headstart fit --train-size n --seed s`` and a ``curve`` cell of budget ``n`` and seed
    ``s`` both draw their splits here, so on the same labelled pool they train and validate
    on the same examples.
    """
    y = _as_labels(labels)
    idx = (
        np.arange(len(y))
        if n is None or n >= len(y)
        else stratified_subset(y, n, seed, min_per_class=2)
    )
    rest, part = stratified_split(y[idx], val_fraction, seed + 1, keep_per_class=1)
    return idx[rest], idx[part]
