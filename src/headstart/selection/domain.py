"""How far the user's data lies from a backbone's pretraining domain, measured and calibrated.

Two measurements, each a plain statistic of what the backbone outputs on the data:

**Feature shift from a shipped reference** (every backbone with a reference file).
``src/headstart/reference/<backbone>.npz`` holds the per-dimension mean and standard
deviation of the backbone's pooled features on a reference sample of natural photographs
(320 random crops of 8 public photos, listed in the file; regenerate with
``benchmarks/make_domain_reference.py``). The shift is the squared 2-Wasserstein distance
between the diagonal Gaussians fitted to data and reference, relative to their total
variance::

    shift = (||mu_data - mu_ref||^2 + ||sigma_data - sigma_ref||^2) / (||sigma_data||^2 + ||sigma_ref||^2)

It is 0 for identical statistics, independent of the features' scale and dimension, and
needs 2 x D numbers per backbone (about 11 KB).

**Source-classifier entropy** (backbones with a source head, e.g. ImageNet's 1,000 classes):
the entropy of the source classifier's softmax divided by log(#classes), averaged over the
examples, in [0, 1]. Data like the classifier's training data gets confident predictions;
data unlike any source class spreads its probability (Hendrycks & Gimpel, ICLR 2017, use
the same signal to detect out-of-distribution inputs).

**Calibration** (stored in each reference file, numbers below from
``benchmarks/make_domain_reference.py`` on the 2-core development machine). *Near*: colour
crops of natural photos the reference statistics did not see (the 8 photos split in two
halves of 4; one half's statistics against the other half's 160 crops). *Far*:
Fashion-MNIST, MNIST and digits, 200 stratified examples each, against the full reference;
the calibration keeps the least far of the three (Fashion-MNIST for every backbone). A
greyscale copy of the held-out crops is measured as an intermediate case:

=========================== ============ =========== =========== ========= ========= ========
shift                        near photos  grey photos  Fashion-MNIST  MNIST    digits   threshold
=========================== ============ =========== =========== ========= ========= ========
torchvision:mobilenet_v2     0.412        0.442        0.745      0.965     1.311    0.579
timm:tf_efficientnet_lite0   0.632        0.699        0.730      1.175     1.573    0.681
timm:tf_efficientnet_lite1   0.653        0.696        0.795      1.200     1.454    0.724
timm:tf_efficientnet_lite2   0.566        0.597        0.871      1.438     1.737    0.718
hf:facebook/dinov2-small     0.567        0.532        0.200      0.671     0.814    (none)
=========================== ============ =========== =========== ========= ========= ========

=========================== ============ =========== =========== ========= ========= ========
source entropy               ref. photos  grey photos  Fashion-MNIST  MNIST    digits   threshold
=========================== ============ =========== =========== ========= ========= ========
torchvision:mobilenet_v2     0.292        0.341        0.412      0.540     0.641    0.352
timm:tf_efficientnet_lite0   0.452        0.434        0.590      0.685     0.778    0.521
timm:tf_efficientnet_lite1   0.592        0.605        0.617      0.759     0.842    0.604
timm:tf_efficientnet_lite2   0.582        0.571        0.629      0.734     0.782    0.606
=========================== ============ =========== =========== ========= ========= ========

A measurement's threshold is the midpoint between its near and least-far calibration
values, and it is *used* for a backbone only when those are at least :data:`MARGIN` apart.
The verdict comes from the feature shift where it is usable, else from the entropy where
that is usable, else it is *unknown*. For DINOv2-small neither is: its feature statistics
put Fashion-MNIST closer to the photos than held-out photos are, so it gets no verdict
rather than a wrong one; for lite1 and lite2 the entropy margin is under 0.05, and for
lite0 greyscale photos fall on the far side of the shift threshold. The report's ``distance`` puts the measured value on the
calibrated scale: 0 = like held-out natural photos, 1 = like Fashion-MNIST.

Limits, measured: crops of a *single* photo (a narrow set) read as far on the feature
shift (1.3 to 1.5 for flower.jpg, which is not in the reference) even though they are
natural photos, while a mix of three photos reads near (0.27 to 0.35); per-photo entropy
varies from 0.06 to 0.79. The calibration describes diverse data sets, which is what
``advise`` measures.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..backbones.base import Backbone
from ..data.base import Examples
from ..errors import ConfigError, DataError

__all__ = [
    "MARGIN",
    "REFERENCE_DIR",
    "DomainReport",
    "Reference",
    "domain_distance",
    "feature_shift",
    "load_reference",
    "measure_domain",
    "reference_path",
    "source_entropy",
]

#: Where the shipped reference statistics live (one .npz per backbone).
REFERENCE_DIR = Path(__file__).resolve().parent.parent / "reference"
#: A measurement is used only when its near and far calibration values are this far apart.
MARGIN = 0.05
#: Format of the .npz files; bump when their contents change meaning.
REFERENCE_FORMAT = 1


# ------------------------------------------------------------------------------ reference
@dataclass(frozen=True)
class Reference:
    """Feature statistics of a backbone on the shipped natural-image (or text) sample."""

    backbone: str
    weights_sha256: str
    mean: np.ndarray
    std: np.ndarray
    n: int
    source_entropy: float | None
    description: str
    meta: dict[str, Any] = field(default_factory=dict)

    def calibration(self, measure: str) -> dict[str, float] | None:
        """Near value, least-far value and threshold of 'shift' or 'entropy', if usable.

        Read from ``meta["calibration"]`` as written by ``make_domain_reference.py``:
        ``near_shift`` (list), ``full_ref_far_shift`` ({data set: value}), ``near_entropy``,
        ``far_entropy`` ({data set: value}). None when absent or not separated by MARGIN.
        """
        if measure not in ("shift", "entropy"):
            raise ConfigError(f"measure must be 'shift' or 'entropy', got {measure!r}.")
        cal = self.meta.get("calibration") or {}
        try:
            if measure == "shift":
                near = max(float(v) for v in cal["near_shift"])
                far = min(float(v) for v in cal["full_ref_far_shift"].values())
            else:
                near = float(cal["near_entropy"])
                far = min(float(v) for v in cal["far_entropy"].values())
        except (KeyError, TypeError, ValueError, AttributeError):
            return None
        if not far - near >= MARGIN:
            return None
        return {"near": near, "far": far, "threshold": (near + far) / 2}

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as fh:
            np.savez_compressed(
                fh,
                mean=self.mean.astype(np.float32),
                std=self.std.astype(np.float32),
                info=np.array(
                    json.dumps(
                        {
                            "format": REFERENCE_FORMAT,
                            "backbone": self.backbone,
                            "weights_sha256": self.weights_sha256,
                            "n": self.n,
                            "source_entropy": self.source_entropy,
                            "description": self.description,
                            "meta": self.meta,
                        }
                    )
                ),
            )


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_")


def reference_path(backbone_name: str, directory: Path | None = None) -> Path:
    """``REFERENCE_DIR/<backbone name with ':' and '/' replaced>.npz``."""
    return (directory or REFERENCE_DIR) / f"{_slug(backbone_name)}.npz"


def load_reference(backbone: Backbone | str, directory: Path | None = None) -> Reference | None:
    """The shipped reference for ``backbone``, or None when there is none for its weights.

    A reference is only valid for the weights it was computed with: when ``backbone`` is a
    loaded :class:`Backbone` whose weights hash differs (another checkpoint, fine-tuned
    weights, random initialisation), None is returned.
    """
    name = backbone if isinstance(backbone, str) else backbone.name
    path = reference_path(name, directory)
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            info = json.loads(str(z["info"]))
            mean, std = z["mean"].astype(np.float64), z["std"].astype(np.float64)
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(
            f"The domain reference {path} cannot be read ({exc}). Regenerate it with "
            "benchmarks/make_domain_reference.py or reinstall headstart."
        ) from exc
    if info.get("format") != REFERENCE_FORMAT:
        return None
    if not isinstance(backbone, str) and info["weights_sha256"] != backbone.weights.current_sha256:
        return None
    return Reference(
        backbone=info["backbone"],
        weights_sha256=info["weights_sha256"],
        mean=mean,
        std=std,
        n=int(info["n"]),
        source_entropy=info.get("source_entropy"),
        description=info.get("description", ""),
        meta=info.get("meta", {}),
    )


# ------------------------------------------------------------------------------ measures
def source_entropy(logits: np.ndarray) -> float:
    """Mean over examples of the source softmax's entropy divided by log(#classes), in [0, 1]."""
    z = np.asarray(logits, dtype=np.float64)
    if z.ndim != 2 or z.shape[1] < 2 or z.shape[0] < 1:
        raise DataError(f"source logits must be shaped (examples, classes >= 2), got {z.shape}.")
    z = z - z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    h = -(np.exp(logp) * logp).sum(axis=1)
    return float(np.mean(h) / math.log(z.shape[1]))


def feature_shift(features: np.ndarray, reference: Reference) -> float:
    """Relative squared W2 distance between diagonal-Gaussian fits of data and reference."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise DataError(f"features must be shaped (examples >= 2, dims), got {f.shape}.")
    if f.shape[1] != reference.mean.shape[0]:
        raise DataError(
            f"features have {f.shape[1]} dimensions but the reference for {reference.backbone} "
            f"has {reference.mean.shape[0]}: extract them with the same backbone and pooling."
        )
    mu, sd = f.mean(axis=0), f.std(axis=0)
    num = float(np.sum((mu - reference.mean) ** 2) + np.sum((sd - reference.std) ** 2))
    den = float(np.sum(sd**2) + np.sum(reference.std**2))
    return num / den if den > 0 else 0.0


# ------------------------------------------------------------------------------- report
@dataclass
class DomainReport:
    """Measured distance of some data from a backbone's pretraining domain."""

    backbone: str
    n: int
    source_entropy: float | None  # mean normalised entropy of the source classifier, [0, 1]
    reference_entropy: float | None  # the same on the shipped reference sample
    feature_shift: float | None  # relative diagonal W2 from the shipped reference
    verdict: str  # "near" | "far" | "unknown"
    distance: float | None = None  # calibrated: 0 = held-out natural photos, 1 = Fashion-MNIST
    measure: str = ""  # which measurement decided the verdict ("shift", "entropy" or "")
    thresholds: dict[str, float] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)

    @property
    def far(self) -> bool:
        return self.verdict == "far"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        return "; ".join(self.reasons)


def domain_distance(
    backbone: Backbone,
    features: np.ndarray,
    source_logits: np.ndarray | None = None,
    *,
    reference: Reference | None = None,
) -> DomainReport:
    """Measure how far data (its ``features`` from ``backbone``) lies from the pretraining domain.

    ``source_logits`` are the source classifier's logits on the same examples; when None
    and the backbone has a source head, they are computed from ``features``. ``reference``
    defaults to the shipped one (:func:`load_reference`).
    """
    f = np.asarray(features)
    if f.ndim != 2 or f.shape[0] < 2:
        raise DataError(
            f"domain_distance needs features of 2 or more examples, got shape {f.shape}."
        )
    if source_logits is None and backbone.source_head is not None:
        import torch

        with torch.inference_mode():
            out = backbone.source_logits(torch.from_numpy(np.ascontiguousarray(f, np.float32)))
        source_logits = None if out is None else out.float().numpy()
    ref = reference if reference is not None else load_reference(backbone)
    ent = source_entropy(source_logits) if source_logits is not None else None
    shift = feature_shift(f, ref) if ref is not None else None
    cal_shift = ref.calibration("shift") if ref is not None else None
    cal_ent = ref.calibration("entropy") if ref is not None and ent is not None else None
    reasons: list[str] = []
    thresholds: dict[str, float] = {}
    verdict, measure, distance = "unknown", "", None
    if shift is not None:
        text = (
            f"the feature statistics are {shift:.2f} (relative W2) from the natural-photo reference"
        )
        if cal_shift is not None:
            thresholds["shift"] = cal_shift["threshold"]
            verdict = "far" if shift > cal_shift["threshold"] else "near"
            measure = "shift"
            distance = (shift - cal_shift["near"]) / (cal_shift["far"] - cal_shift["near"])
            text += (
                f" ({cal_shift['near']:.2f} for held-out photos, {cal_shift['far']:.2f} for "
                f"Fashion-MNIST: {'far' if verdict == 'far' else 'near'} side of "
                f"{cal_shift['threshold']:.2f})"
            )
        else:
            text += " (not used: its calibration does not separate photos from far data sets)"
        reasons.append(text)
    if ent is not None:
        text = f"the source classifier's mean normalised entropy on the data is {ent:.2f}"
        if ref is not None and ref.source_entropy is not None:
            text += f" ({ref.source_entropy:.2f} on the reference photos)"
        if cal_ent is not None:
            thresholds["entropy"] = cal_ent["threshold"]
            if measure == "":
                verdict = "far" if ent > cal_ent["threshold"] else "near"
                measure = "entropy"
                distance = (ent - cal_ent["near"]) / (cal_ent["far"] - cal_ent["near"])
            text += f", {'above' if ent > cal_ent['threshold'] else 'below'} its threshold {cal_ent['threshold']:.2f}"
        reasons.append(text)
    if verdict == "unknown":
        reasons.append(
            f"no calibrated measurement for {backbone.name} (a shipped reference whose calibration "
            "separates natural photos from far data), so near or far is not decided"
        )
    return DomainReport(
        backbone=backbone.name,
        n=int(f.shape[0]),
        source_entropy=ent,
        reference_entropy=ref.source_entropy if ref is not None else None,
        feature_shift=shift,
        verdict=verdict,
        distance=distance,
        measure=measure,
        thresholds=thresholds,
        reasons=reasons,
    )


def measure_domain(
    backbone: Backbone,
    examples: Examples,
    *,
    sample: int = 256,
    seed: int = 0,
    cache_dir: str | Path | None = None,
    progress: bool = False,
) -> DomainReport:
    """Extract (through the cache) a stratified sample of ``examples`` and measure its distance."""
    from ..features.cache import extract_features
    from .rank import take_sample

    if isinstance(sample, bool) or not isinstance(sample, int) or sample < 2:
        raise ConfigError(f"sample must be a whole number >= 2, got {sample!r}.")
    sub = take_sample(examples, sample, seed, cv=1)
    feats = extract_features(backbone, sub, cache_dir=cache_dir, progress=progress).load()
    return domain_distance(backbone, feats)
