"""Opt-in experiment logging to the tools people already use: TensorBoard and MLflow.

Nothing is logged unless asked (``kind="none"``, the default). ``"tensorboard"`` writes event
files to ``<run>/tb`` (open with ``tensorboard --logdir <run>/tb``); ``"mlflow"`` logs to a
local store, the SQLite file ``<run>/mlflow.db`` (open with ``mlflow ui --backend-store-uri
sqlite:///<run>/mlflow.db``), unless a tracking URI is given. (MLflow 3 refuses its older
``./mlruns`` folder store by default and recommends SQLite for local use.) Neither package is a
dependency of headstart: a missing one is reported with the pip command that installs it.

>>> with Tracker("tensorboard", "runs/fm") as t:        # doctest: +SKIP
...     t.log_params({"backbone": "torchvision:mobilenet_v2", "lr": 1e-3})
...     t.log_metrics({"val_accuracy": 0.91}, step=1)

:func:`log_run` logs a finished ``headstart fit`` folder: its settings, its final scores, and
the per-epoch training history as steps. A run in progress is logged live instead:
:func:`start_run` opens the tracker when the run starts, :func:`record_live` (called by the
training loop after each epoch and by the ladder after each rung) logs those numbers as they
happen to every tracker :meth:`Tracker.listening`, and :func:`finish_run` adds the final scores.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import math
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from .errors import ConfigError

__all__ = [
    "TRACKERS",
    "Tracker",
    "check_tracker",
    "finish_run",
    "log_run",
    "record_live",
    "start_run",
]

TRACKERS = ("none", "tensorboard", "mlflow")

#: Trackers listening to :func:`record_live` now (innermost last).
_LISTENING: list[Tracker] = []


def record_live(kind: str, metrics: Mapping[str, Any]) -> None:
    """Log `metrics` of one step of kind `kind` (``"epoch"``, ``"rung"``) to every tracker
    listening, as ``<kind>/<name>`` at that kind's next step; a no-op when none listens.

    The training loop and the ladder call this, so they need not know about trackers."""
    for t in _LISTENING:
        t.log_step(kind, metrics)


def _missing(package: str, kind: str) -> ConfigError:
    return ConfigError(
        f"Logging to {kind} needs the '{package}' package, which is not installed. Install it "
        f"with `pip install {package}`, or leave out --track {kind}."
    )


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flatten(v, f"{key}."))
        else:
            out[key] = v
    return out


def _param_value(v: Any) -> Any:
    """Numbers as they are; anything else as text (JSON for lists), at most 6,000 characters
    (MLflow's limit per value)."""
    if isinstance(v, (int, float, bool)):
        return v
    return (v if isinstance(v, str) else json.dumps(v, default=str))[:6000]


def check_tracker(kind: str) -> None:
    """Fail now, before a run starts, when the package `kind` logs with is not importable
    (rather than after the run, when the tracker opens)."""
    if kind not in TRACKERS:
        raise ConfigError(
            f"The tracker must be one of {', '.join(TRACKERS)}. Got {kind!r} instead."
        )
    if kind == "none":
        return
    package = "tensorboard" if kind == "tensorboard" else "mlflow"
    try:
        importlib.import_module(package)
    except ImportError:
        raise _missing(package, kind) from None


class Tracker:
    """Log parameters and metrics of one run to TensorBoard, MLflow, or nowhere.

    Parameters
    ----------
    kind: ``"none"`` (default), ``"tensorboard"`` or ``"mlflow"``.
    run_dir: the run folder; TensorBoard writes to ``run_dir/tb``, MLflow to
        ``run_dir/mlflow.db`` unless ``tracking_uri`` is given.
    run_name: the run's name in MLflow (default: the folder's name).
    experiment: the MLflow experiment (default ``"headstart"``).
    tracking_uri: an MLflow tracking URI to use instead of the local file store.
    """

    def __init__(
        self,
        kind: str = "none",
        run_dir: str | Path = ".",
        *,
        run_name: str | None = None,
        experiment: str = "headstart",
        tracking_uri: str | None = None,
    ) -> None:
        if kind not in TRACKERS:
            raise ConfigError(
                f"The tracker must be one of {', '.join(TRACKERS)}. Got {kind!r} instead."
            )
        self.kind = kind
        self.run_dir = Path(run_dir)
        self.location: str | None = None
        self._writer: Any = None
        self._mlflow: Any = None
        self._steps: dict[str, int] = {}
        if kind == "tensorboard":
            try:
                import tensorboard  # noqa: F401
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise _missing("tensorboard", kind) from None
            log_dir = self.run_dir / "tb"
            self._writer = SummaryWriter(log_dir=str(log_dir))
            self.location = str(log_dir)
        elif kind == "mlflow":
            try:
                import mlflow
            except ImportError:
                raise _missing("mlflow", kind) from None
            uri = tracking_uri or "sqlite:///" + str((self.run_dir / "mlflow.db").resolve())
            self.run_dir.mkdir(parents=True, exist_ok=True)
            mlflow.set_tracking_uri(uri)
            try:
                mlflow.set_experiment(experiment)
            except Exception as exc:  # e.g. mlflow-skinny without SQLAlchemy for SQLite
                raise ConfigError(
                    f"MLflow could not open the store {uri}: {exc}. Install the full package "
                    "(`pip install mlflow`, which brings SQLite support), or pass a tracking "
                    "URI of a server you run."
                ) from None
            self._run = mlflow.start_run(run_name=run_name or self.run_dir.resolve().name)
            self._mlflow = mlflow
            self.location = uri

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Settings of the run (nested dicts are flattened to ``a.b`` keys)."""
        flat = {k: v for k, v in _flatten(params).items() if v is not None}
        if self._writer is not None:
            rows = "\n".join(
                f"| {k} | {json.dumps(v, default=str)} |" for k, v in sorted(flat.items())
            )
            self._writer.add_text("params", "| parameter | value |\n|---|---|\n" + rows, 0)
        elif self._mlflow is not None:
            # MLflow keeps at most 6,000 characters per value; lists and dicts go as JSON.
            self._mlflow.log_params({k: _param_value(v) for k, v in flat.items()})

    def log_metrics(self, metrics: Mapping[str, float | None], step: int | None = None) -> None:
        """Numbers at one step (an epoch, a number of labels); None and NaN are skipped."""
        clean = {
            k: float(v)
            for k, v in metrics.items()
            if v is not None and isinstance(v, (int, float)) and math.isfinite(float(v))
        }
        if self._writer is not None:
            for k, v in clean.items():
                self._writer.add_scalar(k, v, global_step=step)
        elif self._mlflow is not None:
            self._mlflow.log_metrics(clean, step=step)

    def log_step(self, kind: str, metrics: Mapping[str, Any]) -> None:
        """`metrics` as ``<kind>/<name>`` at the next step of `kind` (1, 2, ...)."""
        self._steps[kind] = step = self._steps.get(kind, 0) + 1
        self.log_metrics({f"{kind}/{k}": v for k, v in metrics.items()}, step=step)

    @contextlib.contextmanager
    def listening(self) -> Iterator[Tracker]:
        """While inside, :func:`record_live` logs to this tracker."""
        _LISTENING.append(self)
        try:
            yield self
        finally:
            _LISTENING.remove(self)

    def close(self) -> None:
        """Flush and finish (idempotent)."""
        if self._writer is not None:
            self._writer.flush()
            self._writer.close()
            self._writer = None
        if self._mlflow is not None:
            self._mlflow.end_run()
            self._mlflow = None

    def __enter__(self) -> Tracker:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def start_run(kind: str, run_dir: str | Path, params: Mapping[str, Any]) -> Tracker | None:
    """Open the tracker a run logs to as it goes, with its settings; None for ``"none"``."""
    if kind == "none":
        return None
    t = Tracker(kind, run_dir)
    t.log_params(params)
    return t


def finish_run(t: Tracker | None, run_dir: str | Path) -> str | None:
    """Log a finished run's final scores to the tracker :func:`start_run` opened (its epochs
    and rungs were logged live), close it, and return where it logged."""
    if t is None:
        return None
    with t:
        metrics = json.loads((Path(run_dir) / "metrics.json").read_text())
        t.log_params(
            {
                "backbone_resolved": metrics.get("backbone"),
                "strategy_chosen": metrics.get("strategy"),
            }
        )
        t.log_metrics(_final_scores(metrics))
    return t.location


def _final_scores(metrics: Mapping[str, Any]) -> dict[str, Any]:
    final = {}
    for split in ("val", "test"):
        m = metrics.get(split) or {}
        for key in ("accuracy", "macro_f1", "log_loss", "ece", "roc_auc"):
            final[f"{split}/{key}"] = m.get(key)
    if "baseline" in metrics:
        final["baseline/test_accuracy"] = (metrics["baseline"].get("test") or {}).get("accuracy")
    f = (metrics.get("finetune") or {}).get("forgetting") or {}
    final["forgetting/cka"] = f.get("cka")
    final["forgetting/source_top1_agreement"] = f.get("source_top1_agreement")
    return final


def log_run(run_dir: str | Path, kind: str = "none", **tracker_kw: Any) -> str | None:
    """Log a finished `headstart fit` folder: settings, final scores, per-epoch history.

    Returns where it was logged (``run_dir/tb``, the MLflow URI), or None for ``"none"``.
    """
    if kind not in TRACKERS:
        raise ConfigError(
            f"The tracker must be one of {', '.join(TRACKERS)}. Got {kind!r} instead."
        )
    if kind == "none":
        return None
    d = Path(run_dir)
    metrics = json.loads((d / "metrics.json").read_text())
    config = json.loads((d / "config.json").read_text()) if (d / "config.json").exists() else {}
    with Tracker(kind, d, **tracker_kw) as t:
        t.log_params(
            {
                **config.get("config", {}),
                "backbone_resolved": metrics.get("backbone"),
                "strategy_chosen": metrics.get("strategy"),
            }
        )
        for epoch in (metrics.get("finetune") or {}).get("history", []):
            t.log_metrics(
                {
                    "epoch/train_loss": epoch.get("train_loss"),
                    "epoch/val_loss": epoch.get("val_loss"),
                    "epoch/val_accuracy": epoch.get("val_accuracy"),
                },
                step=int(epoch["epoch"]),
            )
        t.log_metrics(_final_scores(metrics))
        return t.location
