"""Tokenizers of the two families the project must serve, trained in the test on the sample data:
byte-level BPE (the tiny model's, built by fcmistral.demo.tiny) and sentencepiece-style BPE (Mistral's)."""

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


def mistral_legacy_tokenizer(texts: list[str]) -> PreTrainedTokenizerFast:
    """The layout of Mistral-7B-v0.1's tokenizer.json: ``▁`` prepended to the whole text by the
    normalizer and no pre-tokenizer, so BPE runs over the text as one word (the vocabulary, like
    Mistral's, has no merge across a newline)."""
    hf = metaspace_tokenizer(texts)
    tok = hf.backend_tokenizer
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.pre_tokenizer = None
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
