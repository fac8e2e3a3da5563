"""Build the tiny Mistral used by the tests and the demo: a locally trained tokenizer and a
random-init ``MistralForCausalLM`` with the real architecture, saved as a normal model folder.

Nothing can be downloaded on our machines, so the project makes its own stand-in for
Mistral-7B; every script loads it through the same ``from_pretrained`` path as the real model.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import MistralConfig, MistralForCausalLM, PreTrainedTokenizerFast

from fcmistral.chat_template import add_chat_template
from fcmistral.format.glaive import parse_row

SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>"]
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "data" / "sample_train.jsonl"  # the repository's data/


def train_tokenizer(texts: list[str], vocab_size: int = 2048) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer that, like Mistral's, adds ``<s>`` but not ``</s>``.

    ``<pad>`` is its own token (never EOS: a pad equal to EOS would mask the EOS labels).
    ``<|endoftext|>`` is deliberately *not* a special token, as in Mistral's vocabulary.
    """
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    # Digits one by one, as Mistral's sentencepiece model does (split_digits): a number is then
    # copied digit by digit instead of as rare multi-digit tokens, which the demo's model learnt
    # much more slowly (its held-out misses were numeric arguments written as words).
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", tok.token_to_id("<s>"))]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>"
    )


def tiny_config(tokenizer: PreTrainedTokenizerFast, hidden_size: int = 128, layers: int = 4) -> MistralConfig:
    """The real Mistral architecture (GQA, SwiGLU, RoPE, RMSNorm), shrunk to a few MB."""
    return MistralConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        sliding_window=None,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )


def build_tiny_model(out_dir: str | Path, data_path: str | Path = DEFAULT_DATA, seed: int = 0) -> Path:
    """Write tokenizer and random-init model into ``out_dir`` and return it."""
    with open(data_path, encoding="utf-8") as f:
        texts = [parse_row(json.loads(line)).text for line in f if line.strip()]
    tokenizer = train_tokenizer(texts)
    add_chat_template(tokenizer)
    torch.manual_seed(seed)
    config = tiny_config(tokenizer)
    model = MistralForCausalLM(config)
    # With the default init (std 0.02) a head row has norm ~0.02*sqrt(d), so after the final
    # RMSNorm no logit margin can exceed ~2.6: the loss floors near 5 whatever LoRA learns (the
    # head is frozen). A std of 1/sqrt(d) makes confident predictions reachable, as in a
    # pretrained model.
    torch.nn.init.normal_(model.lm_head.weight, std=config.hidden_size**-0.5)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description="Build the tiny random-init Mistral and its locally trained tokenizer.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--out_dir", default="artifacts/tiny-mistral", help="model folder to write")
    parser.add_argument("--data_path", default=str(DEFAULT_DATA), help="glaive JSONL to train the tokenizer on")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    out = build_tiny_model(args.out_dir, args.data_path, args.seed)
    print(f"tiny model written to {out}")


if __name__ == "__main__":
    main()
