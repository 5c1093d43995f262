"""Fine-tuning as a strategy: LP-FT from the probe, the top groups trained, forgetting measured."""

from __future__ import annotations

import copy
import time
from typing import Any

from ..config import FinetuneConfig
from ..errors import ConfigError
from ..metrics import classification_metrics
from .base import Context, StrategyResult, short_metrics

#: Examples of the validation split on which pretrained and tuned features are compared.
PROBE_SIZE = 256
#: Fields of the training result a rung summary keeps (the rest goes to the report).
RUNG_FIELDS = (
    "unfrozen",
    "n_trainable",
    "lr_ratio",
    "lrs",
    "epochs",
    "best_epoch",
    "epochs_run",
    "stopped",
    "examples_per_s",
    "start_val_accuracy",
    "kept_start",
    "forgetting",
    "guard",
    "history",
    "peft",
)


class Finetune:
    """Train the head (started from the extraction probe) and the top ``unfreeze`` groups.

    Every call starts from a copy of the pristine backbone, so rungs of a ladder never
    inherit each other's drift. Validation scores are computed the way extraction's are:
    features of the tuned backbone on the validation split, through ``ctx.features``, then
    the head; so the ladder compares like with like.
    """

    name = "finetune"

    def __init__(
        self,
        config: FinetuneConfig | None = None,
        *,
        unfreeze: int | None = None,
        measure_forgetting: bool = True,
        budgeted: bool = False,
    ) -> None:
        self.config = copy.deepcopy(config or FinetuneConfig())
        if self.config.peft != "none" and budgeted:  # a ladder rung
            raise ConfigError(
                f"--peft {self.config.peft} runs with --strategy finetune: the ladder "
                "(--strategy auto) has no LoRA rung yet. Pass --strategy finetune, or --peft none."
            )
        if unfreeze is not None:
            self.config.unfreeze = unfreeze
        if self.config.keep_epoch == "auto":
            # a rung's validation score decides the ladder's choice, so it must not also
            # have chosen the epoch: the best of ~10 noisy epochs on a few hundred examples
            # reads points above the weights' real accuracy (RESULTS.md, issue 12)
            self.config.keep_epoch = "last" if budgeted else "best"
        self.measure_forgetting = measure_forgetting
        #: stop before an epoch that would end past the context's deadline (ladder rungs);
        #: a rung the user asked for by name runs all its epochs
        self.budgeted = budgeted

    def groups(self, backbone: Any) -> int:
        """How many layer groups this strategy trains on ``backbone``."""
        n = len(backbone.layer_groups())
        if self.config.peft != "none":  # adapters in every block; no pretrained group trains
            return n
        return n if self.config.unfreeze == -1 else min(self.config.unfreeze, n)

    def fit(self, ctx: Context, start: StrategyResult) -> StrategyResult:
        """Fine-tune from ``start`` (an extraction result, whose probe is the initial head)."""
        from .training import finetune

        if ctx.val is None:
            raise ValueError("fine-tuning needs a validation split (early stopping, keep_start)")
        t0 = time.perf_counter()
        pristine = ctx.backbone
        k = self.groups(pristine)
        backbone = copy.deepcopy(pristine)
        if self.config.peft == "lora":
            from ..backbones.lora import LoraSpec, attach_lora

            attach_lora(backbone, LoraSpec.from_config(self.config))
        head = copy.deepcopy(start.probe)
        reference = {n: p.detach().clone() for n, p in pristine.named_parameters()}
        left = ctx.time_left() if self.budgeted else None
        model, res = finetune(
            backbone,
            head.to_torch(),
            ctx.train,
            ctx.val,
            self.config,
            seed=ctx.seed,
            time_budget_s=None if left is None else max(1.0, left),
            checkpoint=None if ctx.checkpoint_dir is None else ctx.checkpoint_dir / f"rung-{k}.pt",
            progress=ctx.progress,
        )
        backbone.mark_tuned()
        head.load_torch(model.head)
        Fv = ctx.features(backbone, ctx.val)
        val_proba = head.predict_proba(Fv)
        val = classification_metrics(ctx.val.labels, val_proba, ctx.classes)
        detail: dict[str, Any] = {
            **res.to_dict(),
            "lr_ratio": self.config.lr_ratio,  # the rung's own (the ladder may choose it)
            "epochs": self.config.epochs,  # planned; epochs_run: how many ran
            "val_metrics": short_metrics(val),
        }
        if self.measure_forgetting:
            detail["forgetting"] = self._forgetting(pristine, backbone, reference, ctx, Fv)
        tuned = {
            key[len("backbone.") :]: v
            for key, v in res.tuned_state.items()
            if key.startswith("backbone.")
        }
        if self.config.peft != "none":  # the bundle saves the adapter itself, in PEFT's format
            from ..backbones.lora import describe_adapter

            tuned = {}
            detail["peft"] = describe_adapter(backbone)
            detail["trainable_share"] = res.n_trainable / sum(
                p.numel() for m in (backbone, model.head) for p in m.parameters()
            )
        return StrategyResult(
            "finetune",
            k,
            backbone,
            head,
            val,
            time.perf_counter() - t0,
            detail,
            tuned,
            val_proba=val_proba,
        )

    @staticmethod
    def _forgetting(
        pristine: Any, tuned: Any, reference: dict[str, Any], ctx: Context, Fv: Any
    ) -> dict[str, Any]:
        """Pretrained vs tuned: feature CKA and source-classifier agreement on a probe batch
        of the user's data, weight drift per group, and (images) the same on natural photos."""
        from ..backbones.lora import has_adapter, merge_adapter
        from ..forgetting import classifier_agreement, linear_cka, source_forgetting, weight_drift

        # an adapter's drift is that of the merged weights, under the pristine parameter names
        drifted = merge_adapter(tuned) if has_adapter(tuned) else tuned
        p = min(PROBE_SIZE, len(Fv))
        before, after = ctx.pristine("val")[:p], Fv[:p]
        out: dict[str, Any] = {
            "probe_size": p,
            "cka": linear_cka(before, after),
            "weight_drift": {
                g: round(v, 6)
                for g, v in weight_drift(drifted, reference, drifted.layer_groups()).items()
            },
        }
        agree = classifier_agreement(pristine, before, after)
        if agree is not None:
            out["source_top1_agreement"] = agree
        if pristine.modality == "image":
            out.update(source_forgetting(pristine, tuned))
        return out
