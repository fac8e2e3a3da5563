"""Offline generation: a model loaded for generation (merged folder, or base plus adapter), batched
replies, and vLLM where it is usable. Used by evaluation and by the terminal chat; the server has
its own engine (fcmistral.serving.engine)."""

from __future__ import annotations

from dataclasses import replace

import torch
from transformers import LogitsProcessor, LogitsProcessorList, RepetitionPenaltyLogitsProcessor

from fcmistral.constraint import CallConstraint, RowGuide, adjust_rows, guides_for
from fcmistral.modeling import load_adapter, load_model, load_tokenizer, text_encoder, tokenizer_source
from fcmistral.prepacked import prepack_linears
from fcmistral.prompt import END_OF_TURN


def load_generation_tokenizer(model_path: str, adapter_path: str | None = None):
    """The tokenizer generation uses (left padding); the adapter folder's wins when it has one."""
    return load_tokenizer(tokenizer_source(model_path, adapter_path), padding_side="left")


def load_for_generation(model_path: str, adapter_path: str | None = None, load_in_4bit: bool = False,
                        dtype: torch.dtype | None = None, prepack: bool = True):
    """Model and tokenizer in eval mode, computing in ``dtype`` (default: the hardware's choice).

    With ``prepack``, a model without an adapter computing in bf16 on a CPU gets its linear layers'
    weights reordered once for oneDNN (fcmistral.prepacked: the same results, faster one-row
    products); an adapter's LoRA layers wrap plain ``nn.Linear`` layers, so those stay plain.
    """
    tokenizer = load_generation_tokenizer(model_path, adapter_path)
    model = load_model(model_path, load_in_4bit=load_in_4bit, tokenizer=tokenizer, dtype=dtype)
    if adapter_path:
        model = load_adapter(model, adapter_path)
    elif prepack:
        prepack_linears(model)
    model.eval()
    return model, tokenizer


def length_sorted_batches(prompts: list[str], batch_size: int) -> list[list[int]]:
    """Indices of ``prompts`` in batches of similar length, longest first.

    Left padding makes every prompt of a batch as long as its longest one; batching prompts of
    similar length removes most of that wasted prefill (and a too-large batch fails at once).
    """
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def cut_at_end_of_turn(text: str) -> str:
    """The reply up to (not including) `` <|endoftext|>``."""
    end = text.find(END_OF_TURN)
    return (text if end < 0 else text[:end]).rstrip()


class _GuidedRows(LogitsProcessor):
    """``generate``'s view of the rows' guides (fcmistral.constraint): each step, every guided row
    takes the token it was given last and adjusts its next logits."""

    def __init__(self, guides: list[RowGuide | None], pad_token_id: int | None) -> None:
        self.guides, self.pad_token_id, self.steps = guides, pad_token_id, 0

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.steps:
            for guide, token in zip(self.guides, input_ids[:, -1].tolist()):
                if guide is not None:
                    guide.take(token, padding=token == self.pad_token_id)
        self.steps += 1
        adjust_rows(self.guides, scores)
        return scores


@torch.inference_mode()
def generate_batch(
    model, tokenizer, prompts: list[str], max_new_tokens: int = 400, do_sample: bool = False,
    temperature: float = 1.0, top_p: float = 1.0, streamer=None, min_new_tokens: int = 0,
    constraints: list[CallConstraint | None] | None = None, repetition_penalty: float = 1.0,
    synced_gpus: bool = False, loop_penalty: float = 0.0,
) -> list[str]:
    """Replies to ``prompts`` in one left-padded forward pass per step, each cut at its end marker;
    ``constraints`` (one per prompt, or None) constrain calls and bias the decision to call;
    ``repetition_penalty`` (> 1) lowers the logits of tokens the reply has already written;
    ``loop_penalty`` (> 0) lowers those that would repeat a sequence inside a call (fcmistral.call_loops);
    ``synced_gpus``: every process steps until all are done (a sharded model's forwards are collective).

    Generation stops on ``<|endoftext|>`` (plain text in Mistral's vocabulary, hence a stop
    string) or on ``</s>``.
    """
    ids = [encoding.ids for encoding in text_encoder(tokenizer).encode_batch(prompts)]
    width = max(len(row) for row in ids)  # left padding: every row's reply starts at the same column
    processors = LogitsProcessorList()
    if repetition_penalty != 1.0:
        # transformers' processor, over the reply only: generate's own ``repetition_penalty`` counts
        # the prompt's tokens too, and a call copies its argument values from the prompt.
        processors.append(RepetitionPenaltyLogitsProcessor(repetition_penalty, prompt_ignore_length=width))
    if loop_penalty:
        constraints = [replace(c or CallConstraint(), loop_penalty=loop_penalty)
                       for c in constraints or [None] * len(prompts)]
    if constraints and any(constraints):
        guides = guides_for(model, tokenizer)
        processors.append(_GuidedRows([guides.guide(c) for c in constraints], tokenizer.pad_token_id))
    enc = {"input_ids": torch.tensor([[tokenizer.pad_token_id] * (width - len(r)) + r for r in ids], device=model.device),
           "attention_mask": torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in ids], device=model.device)}
    sampling = {"temperature": temperature, "top_p": top_p} if do_sample else {}
    out = model.generate(
        **enc,
        max_new_tokens=max_new_tokens,
        min_new_tokens=min_new_tokens,
        do_sample=do_sample,
        stop_strings=[END_OF_TURN],
        tokenizer=tokenizer,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        streamer=streamer,
        logits_processor=processors,
        synced_gpus=synced_gpus,
        **sampling,
    )
    new_tokens = out[:, enc["input_ids"].shape[1]:]
    return [cut_at_end_of_turn(t) for t in tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]


def vllm_usable() -> bool:
    """vLLM can serve evaluation: it is installed and there is a GPU (it is never required)."""
    import importlib.util

    return importlib.util.find_spec("vllm") is not None and torch.cuda.is_available()


class VLLMGenerator:
    """Greedy batched generation with vLLM (continuous batching on the GPU), stopping on the end
    marker as the Hugging Face path does. Needs a merged model folder (convert_weights.py). A call
    grammar is vLLM's own structured output (its xgrammar backend reads the same structural tag);
    the call bias has no vLLM equivalent (its ``logit_bias`` applies at every token, not where the
    turn starts), so it is refused by evaluate.py for this backend."""

    def __init__(self, model_path: str, max_new_tokens: int) -> None:
        from vllm import LLM

        self.llm, self.max_new_tokens = LLM(model=model_path), max_new_tokens

    def _params(self, constraint: CallConstraint | None, max_new_tokens: int):
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        grammar = constraint.grammar if constraint else None
        structured = StructuredOutputsParams(structural_tag=grammar) if grammar else None
        return SamplingParams(temperature=0.0, max_tokens=max_new_tokens, stop=[END_OF_TURN],
                              include_stop_str_in_output=False, structured_outputs=structured)

    def __call__(self, prompts: list[str], constraints: list[CallConstraint | None] | None = None,
                 max_new_tokens: int | None = None) -> list[str]:
        params = [self._params(c, max_new_tokens or self.max_new_tokens) for c in constraints or [None] * len(prompts)]
        return [cut_at_end_of_turn(out.outputs[0].text) for out in self.llm.generate(prompts, params)]
