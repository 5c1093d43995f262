"""Models that know nothing pretrained: the numbers transfer learning has to beat.

* :mod:`~headstart.baselines.linear`: pixels, TF-IDF or log-mel statistics + logistic
  regression (:func:`fit_baseline`), fitted beside every ``headstart fit``;
* :mod:`~headstart.baselines.cnn`: small CNNs trained from scratch (``headstart curve``'s
  ``cnn`` strategy).
"""

from .linear import AUDIO_MELS, IMAGE_SIDE, TEXT_CS, Baseline, fit_baseline, log_mel_statistics

__all__ = [
    "AUDIO_MELS",
    "IMAGE_SIDE",
    "TEXT_CS",
    "Baseline",
    "fit_baseline",
    "log_mel_statistics",
]
