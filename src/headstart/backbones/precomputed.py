"""``backbone="precomputed"``: the inputs already are features (a 2-D numeric array).

It stands where a backbone stands so the estimator, the strategies and the heads run
unchanged: features of an input are the input itself. It has no layers to fine-tune and no
weights to save, so only the ``extract`` strategy runs on it and it cannot be bundled.
"""

from __future__ import annotations

from typing import Any, cast

import torch

from .base import Backbone, LayerGroup, WeightsInfo

#: The backbone name (``TransferClassifier(backbone=PRECOMPUTED)``) that reads X as features.
PRECOMPUTED = "precomputed"


class PrecomputedFeatures(Backbone):
    """The identity on (N, D) feature rows: a stand-in backbone for precomputed features."""

    def __init__(self, feature_dim: int) -> None:
        super().__init__()
        self.name = PRECOMPUTED
        # not a real input modality: the estimator refuses anything but numeric 2-D arrays
        self.modality = cast(Any, "features")
        self.feature_dim = int(feature_dim)
        self.pooling = "none"
        self.weights = WeightsInfo(pretrained=False, source="features given by the user", sha256="")

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features

    def example_inputs(self, batch_size: int = 2) -> dict[str, torch.Tensor]:
        return {"features": torch.zeros(batch_size, self.feature_dim)}

    def layer_groups(self) -> list[LayerGroup]:
        return []
