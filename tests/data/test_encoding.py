"""Each distinct system prompt tokenized once: the ids and the character map must be exactly those of
tokenizing every text whole, for every tokenizer family, and the cache must really be used."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from fcmistral.data.encoding import SharedPrefixEncoder
from fcmistral.data.labels import examples_from_rows
from fcmistral.format.glaive import parse_row
from tests.conftest import REPO
from tests.tokenizer_kinds import metaspace_tokenizer


@pytest.fixture(scope="module", params=["tiny-bytelevel", "metaspace", "mistral-real"])
def tokenizer(request, tiny_tokenizer, sample_rows):
    texts = [r["system"] + r["chat"] for r in sample_rows[:200]]
    return {"tiny-bytelevel": lambda: tiny_tokenizer, "metaspace": lambda: metaspace_tokenizer(texts),
            "mistral-real": lambda: request.getfixturevalue("mistral_tokenizer")}[request.param]()


def whole_encodings(tokenizer, texts):
    return tokenizer.backend_tokenizer.encode_batch(texts, add_special_tokens=True)


def test_ids_and_character_map_equal_whole_text_tokenization(tokenizer, sample_rows):
    texts = [r["system"] + r["chat"] for r in sample_rows]
    cuts = [len(r["system"]) for r in sample_rows]
    encoder = SharedPrefixEncoder(tokenizer)
    got = encoder.encode(texts[:300], cuts[:300]) + encoder.encode(texts[300:], cuts[300:])  # the cache spans batches
    expected = whole_encodings(tokenizer, texts)
    assert [g.ids for g in got] == [e.ids for e in expected]
    for g, e, text, cut in list(zip(got, expected, texts, cuts))[::7]:
        assert g.prefix_tokens == e.char_to_token(cut - 1) + 1
        assert [g.char_to_token(p) for p in range(cut, len(text))] == [e.char_to_token(p) for p in range(cut, len(text))]
    whole = len({r["system"] for r in sample_rows})  # each system prompt tokenized whole once
    assert encoder.stats == {"whole": whole, "cached": len(texts) - whole} and whole < len(texts) / 2


def test_a_cut_inside_a_token_falls_back_to_whole_texts(tokenizer, sample_rows):
    texts = [r["system"] + r["chat"] for r in sample_rows[:50]]
    cuts = [len("SYSTEM: You are a helpful assist")] * len(texts)  # mid-word: a token crosses the cut
    encoder = SharedPrefixEncoder(tokenizer)
    got = encoder.encode(texts, cuts)
    assert [g.ids for g in got] == [e.ids for e in whole_encodings(tokenizer, texts)]
    assert encoder.stats["cached"] == 0


def test_padding_left_on_by_a_transformers_call_does_not_leak_in(tiny_tokenizer, sample_rows):
    parsed = [parse_row(r) for r in sample_rows[:8]]
    before = examples_from_rows(parsed, tiny_tokenizer, 4096)
    tiny_tokenizer(["a", "a much longer text"], padding="longest", truncation=True, max_length=4096)
    assert tiny_tokenizer.backend_tokenizer.padding is not None  # the trap is really set
    after = examples_from_rows(parsed, tiny_tokenizer, 4096)
    assert [a.input_ids for a in after] == [b.input_ids for b in before]
    assert [a.labels for a in after] == [b.labels for b in before]


def test_a_new_process_hits_the_tokenized_data_cache(tiny_model_dir, tmp_path):
    """The encoder is part of the map's fingerprint: it must hash the same in every process, or the
    cache keyed on data, tokenizer and settings would never be hit by a second run."""
    code = ("import sys; from fcmistral.data.loading import load_rows, tokenize_rows; "
            "from fcmistral.modeling import load_tokenizer; "
            "kept, _, _ = tokenize_rows(load_rows('data/sample_heldout.jsonl'), load_tokenizer(sys.argv[1]), 4096); "
            "print(kept._fingerprint, kept.cache_files[0]['filename'])")
    env = {**os.environ, "HF_HOME": str(tmp_path)}
    runs = [subprocess.run([sys.executable, "-c", code, str(tiny_model_dir)], capture_output=True, text=True,
                           env=env, cwd=REPO, check=True).stdout.split() for _ in range(2)]
    assert runs[0] == runs[1] and runs[0][1].startswith(str(tmp_path))


def test_a_pickled_encoder_still_reads_special_tokens_as_text(tiny_tokenizer):
    """datasets pickles the encoder (its cache fingerprint, its worker processes); the Rust
    tokenizer's own pickle forgets the switch that reads '</s>' as text."""
    import pickle

    text = "a </s> b"
    encoder = pickle.loads(pickle.dumps(SharedPrefixEncoder(tiny_tokenizer)))
    (got,) = encoder.encode([text], [0])
    assert tiny_tokenizer.eos_token_id not in got.ids
