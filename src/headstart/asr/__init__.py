"""Speech-recognition adaptation: fine-tune Whisper on (audio, transcript) pairs, offline.

    result = fit_transcription("dictation/train.csv", backbone="hf:openai/whisper-tiny.en",
                               out="runs/asr", test_csv="dictation/test.csv",
                               general_csv="dictation/general.csv")
    result.metrics["test"]["wer_before"], result.metrics["test"]["wer_after"]
    evaluate_transcription("runs/asr/model", "held_out.csv")
    transcribe("runs/asr/model", ["clip.wav"])

Word error rate (:func:`word_error_rate`) is measured before and after on held-out domain
recordings (``test_csv``) and, to measure forgetting, on general English sentences
(``general_csv``). Both sides are normalised alike (:func:`normalize_text`): lower case,
punctuation removed, numbers written as words ("500" → "five hundred").

Modules: :mod:`~headstart.asr.text` (numbers as words, normalising, WER),
:mod:`~headstart.asr.tables` (reading (audio, transcript) tables; the built-in
``dictation`` set), :mod:`~headstart.asr.decode` (features, greedy decoding, scoring),
:mod:`~headstart.asr.train` (:func:`fit_transcription`) and :mod:`~headstart.asr.bundle`
(saved models: :func:`transcribe`, :func:`evaluate_transcription`). What fine-tuning does
to Whisper's layers is in :mod:`headstart.backbones.whisper`.
"""

from __future__ import annotations

from .bundle import (
    TRANSCRIBER_KIND,
    evaluate_transcription,
    is_transcription_bundle,
    load_transcription_bundle,
    transcribe,
)
from .decode import DEFAULT_ASR_BACKBONE
from .tables import Transcripts, read_transcripts
from .text import WERResult, normalize_text, number_to_words, word_error_rate
from .train import TranscriptionConfig, TranscriptionResult, fit_transcription, summarise

__all__ = [
    "DEFAULT_ASR_BACKBONE",
    "TRANSCRIBER_KIND",
    "TranscriptionConfig",
    "TranscriptionResult",
    "Transcripts",
    "WERResult",
    "evaluate_transcription",
    "fit_transcription",
    "is_transcription_bundle",
    "load_transcription_bundle",
    "normalize_text",
    "number_to_words",
    "read_transcripts",
    "summarise",
    "transcribe",
    "word_error_rate",
]
