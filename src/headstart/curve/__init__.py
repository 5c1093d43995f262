"""The data-efficiency study: from scratch vs feature extraction vs fine-tuning, per label budget.

``headstart curve fashion-mnist --fractions 0.01,0.05,0.1,0.5,1.0 --seeds 3`` trains, for each
fraction of the training labels and each seed, every strategy on *the same* train/validation
split, and scores each on one fixed test split:

``extract``
    the linear probe of ``headstart fit --strategy extract``: a logistic head on frozen
    pretrained features, C chosen on validation, refitted on train + val;
``finetune``
    LP-FT as in ``headstart fit --strategy finetune``: the probe as the starting head, the top
    ``unfreeze`` layer groups trained at ``lr / lr_ratio``;
``scratch``
    the same architecture randomly initialised (``pretrained=False``), every layer trained
    at one learning rate suited to training from scratch (AdamW, ``scratch_lr``);
``cnn``
    a small network trained from scratch, the usual small-data reference: for images a CNN
    (5 conv layers, ~140k parameters) on the native-resolution pixels; for text a Kim (2014)
    text CNN on word ids (its vocabulary from the cell's training texts). Asking for
    ``scratch`` on image or text data adds it (on text it is the affordable from-scratch
    reference: the same transformer from scratch costs as much as fine-tuning it);
``baseline``
    pixels or TF-IDF + logistic regression (:mod:`headstart.baselines`).

Work is shared: the backbone's features of the whole label pool and the test split are
extracted once (through the feature cache), and each subset indexes into them. Each finished
cell (strategy × fraction × seed) is written atomically to ``out/cells/<cell>.json`` with a
key over everything that decides its result; an interrupted study run again reuses every
finished cell whose key matches and computes only the rest.

Layout: :mod:`.config` (what a study computes), :mod:`.study` (the data, features and one
method per strategy), :mod:`.cells` (the resumable cells and :func:`run_curve`),
:mod:`.summary` (the table and the headline).

The result is ``curve.json`` (the table: mean ± std over seeds), ``results.md``, ``curve.png``
(the learning curve) and ``report.html``, with the headline: "with 1% of the labels,
fine-tuned transfer reaches X% of the from-scratch model trained on 100%".
"""

from ..report.schema import STRATEGY_LABELS
from .cells import run_curve
from .config import CURVE_STRATEGIES, CurveConfig
from .study import scratch_config
from .summary import CurveResult, headline, summarise_cells

__all__ = [
    "CURVE_STRATEGIES",
    "STRATEGY_LABELS",
    "CurveConfig",
    "CurveResult",
    "headline",
    "run_curve",
    "scratch_config",
    "summarise_cells",
]
