"""Mistral-7B-v0.1's real tokenizer, built from mistral-common's sentencepiece model, encodes and
decodes exactly as sentencepiece does."""

from __future__ import annotations

import json
import random

import pytest

from tests.conftest import SHARED_DATA, read_jsonl

ALPHABET = list("abcXYZ019 ,.:'\"{}[]_-\n\t") + ["  ", "   ", "é", "ß", "中文", "😀", "\u00a0", "▁", "<s>x", "’"]


def random_strings(count: int, seed: int = 0) -> list[str]:
    """Strings heavy in what tokenizers disagree on: leading, trailing and repeated spaces, tabs,
    newlines, accents, CJK, emoji, the ``▁`` character itself."""
    rng = random.Random(seed)
    return ["".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 30))) for _ in range(count)]


@pytest.fixture(scope="module")
def sentencepiece_processor():
    import sentencepiece

    from fcmistral.artifacts.mistral_tokenizer import sentencepiece_model_path

    return sentencepiece.SentencePieceProcessor(model_file=str(sentencepiece_model_path()))


def test_encodes_and_decodes_as_sentencepiece(mistral_tokenizer, sentencepiece_processor, sample_rows):
    texts = [r["system"] + r["chat"] for r in sample_rows] + [r["chat"] for r in sample_rows[:100]]
    texts += random_strings(3000)
    if (SHARED_DATA / "glaive_real_row.jsonl").exists():
        texts += [r["system"] + r["chat"] for r in read_jsonl(SHARED_DATA / "glaive_real_row.jsonl")]
    # split_special_tokens: "<s>" written in a text is text to sentencepiece, while a Hugging Face
    # tokenizer (this one, and the hub's tokenizer.json of Mistral-7B) reads it as the BOS token.
    ours = mistral_tokenizer(texts, add_special_tokens=False, split_special_tokens=True)["input_ids"]
    theirs = sentencepiece_processor.encode(texts)
    disagree = [t for t, a, b in zip(texts, ours, theirs) if a != b]
    assert not disagree, f"{len(disagree)} of {len(texts)} differ, e.g. {json.dumps(disagree[:3])}"
    for ids in theirs[::50]:
        assert mistral_tokenizer.decode(ids) == sentencepiece_processor.decode(ids)


def test_the_original_hard_coded_ids_and_special_tokens(mistral_tokenizer):
    """The original repository masked labels with ids it hard-coded for these words at a line start."""
    ids = mistral_tokenizer("SYSTEM: x\n\n\nUSER: hi\n\n\nASSISTANT: <functioncall>\n\n\nFUNCTION RESPONSE: {}")["input_ids"]
    assert ids[0] == 1 and 11123 in ids and 4816 in ids and 16368 in ids  # <s>, USER, ASS, FUNCTION
    assert len(mistral_tokenizer) == 32000 and ids[-1] != mistral_tokenizer.eos_token_id  # BOS yes, EOS no
    assert mistral_tokenizer.pad_token == "<unk>"  # fcmistral's pad: never EOS, no new embedding row
    assert mistral_tokenizer.backend_tokenizer.pre_tokenizer is None  # no Metaspace put back on load


def test_a_tokenizer_that_is_not_mistrals_is_refused(tmp_path, monkeypatch):
    import fcmistral.artifacts.mistral_tokenizer as builder
    from fcmistral.errors import UserError

    real = builder.sentencepiece_model_path()
    fake = tmp_path / "mistral_common" / "data" / real.name
    fake.parent.mkdir(parents=True)
    fake.write_bytes(real.read_bytes()[:-1] + b"x")
    monkeypatch.setattr(builder.importlib.util, "find_spec",
                        lambda name: type("Spec", (), {"submodule_search_locations": [str(fake.parent.parent)]}))
    with pytest.raises(UserError, match="is not Mistral-7B-v0.1's tokenizer"):
        builder.sentencepiece_model_path()
