"""A sentencepiece-style tokenizer trained in the test on the sample data, beside the tiny model's
byte-level BPE and Mistral-7B-v0.1's real tokenizer (the mistral_tokenizer fixture)."""

from __future__ import annotations

from tokenizers import (
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)
from transformers import PreTrainedTokenizerFast


def metaspace_tokenizer(texts: list[str]) -> PreTrainedTokenizerFast:
    """A sentencepiece-style tokenizer (``▁`` for spaces, byte fallback), as Mistral's is.

    As in Mistral's vocabulary, a newline never merges with its neighbours (there it is the byte
    token <0x0A>), so turn boundaries fall between tokens.
    """
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    tok.normalizer = normalizers.Replace(" ", "▁")
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split("\n", behavior="isolated"), pre_tokenizers.Split("▁", behavior="merged_with_next")]
    )
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=600, special_tokens=["<unk>", "<s>", "</s>"],
                                                      initial_alphabet=[f"<0x{i:02X}>" for i in range(256)]))
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")

