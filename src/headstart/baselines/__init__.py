"""Models that know nothing pretrained: the numbers transfer learning has to beat.

* :mod:`~headstart.baselines.linear`: pixels, TF-IDF or log-mel statistics + logistic
  regression (:func:`fit_baseline`), fitted beside every ``headstart fit``; saved and loaded
  safely by :mod:`~headstart.baselines.store` (:func:`save_baseline`, :func:`load_baseline`);
* :mod:`~headstart.baselines.cnn`: small CNNs trained from scratch (``headstart curve``'s
  ``cnn`` strategy); :mod:`~headstart.baselines.scratch` makes the image one a saved,
  reloadable baseline, ``auto``'s second image contender.
"""

from .linear import AUDIO_MELS, IMAGE_SIDE, TEXT_CS, Baseline, fit_baseline, log_mel_statistics
from .store import load_baseline, save_baseline

__all__ = [
    "AUDIO_MELS",
    "IMAGE_SIDE",
    "TEXT_CS",
    "Baseline",
    "fit_baseline",
    "load_baseline",
    "log_mel_statistics",
    "save_baseline",
]
