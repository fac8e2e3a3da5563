"""Constrained calls, the call bias and the loop penalty, applied to the logits of a row as it is generated.

A request's ``CallConstraint`` (picklable: it crosses into the server's engine process) holds the
call grammar of fcmistral.format.grammar, or none, the call bias and the loop penalty. ``Guides`` compiles the
grammars for one tokenizer (xgrammar caches each distinct grammar, so a tool set is compiled once)
and gives each row its own ``RowGuide``: its matcher, which masks the tokens the grammar refuses
and follows the tokens the row takes, and the bias added to the call marker's first token where
the assistant turn starts, and the loop penalty (fcmistral.call_loops) inside the call being written.
Used by offline generation (fcmistral.generation) and the server's engine alike; a row with none of
them has no guide and pays nothing.

*Majority decisions* (``majority``): greedy decoding takes the call marker wherever it is the likeliest
single token, yet the choice at the turn's start is between two outcomes, calling and writing words,
and the words' share spreads over many first tokens: a model giving the marker 0.4 calls when no
first word has more (row f of docs/training.md: the marker was the likeliest token on every declining
item). With ``majority`` the marker is taken only where it holds at least half the probability (after
the call bias). The same holds after a finished text turn, where the next role tag decides between a
second assistant turn (in the glaive format, the call after "Sure, let me check.") and handing the
conversation back, which ``USER`` and the row's end share: a *peek* guide (``CallConstraint.peek_of``)
takes the ``ASSISTANT`` tag only where the path to it holds at least half (``RowGuide``), else a
refusal followed by a call in a second turn gets through (docs/training.md counts them).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from functools import cached_property
from typing import Sequence

import torch

from fcmistral.call_loops import call_tokens, lower_loops, marker_tokens
from fcmistral.modeling import text_encoder
from fcmistral.prompt import ASSISTANT_TAG, FUNCTION_CALL_MARKER, TURN_SEPARATOR

log = logging.getLogger(__name__)
GRAMMAR_CACHE_BYTES = 256 << 20  # xgrammar's cache of compiled grammars, at most (its docs: may slightly exceed)


@dataclass(frozen=True)
class CallConstraint:
    """What a row's logits are adjusted by: ``grammar`` (a structural tag from
    fcmistral.format.grammar.call_grammar, or None) and ``call_bias`` (added to the logit of the
    call marker's first token at the turn's first token: > 0 calls more often, < 0 less) and
    ``loop_penalty`` (> 0: DRY's multiplier inside a call, fcmistral.call_loops).
    ``written``: the start of the turn already in the prompt (the server's ``tool_choice`` writes
    one), which the grammar reads before the model's first token. ``majority``: the call marker
    only where it holds at least half the probability (the module docstring); ``peek``: the constraint
    of a peek after a text turn (``peek_of``), whose decision is the ``ASSISTANT`` tag."""

    grammar: str | None = None
    call_bias: float = 0.0
    written: str = ""
    loop_penalty: float = 0.0
    majority: bool = False
    peek: bool = False

    def __bool__(self) -> bool:
        return self.grammar is not None or self.call_bias != 0.0 or self.loop_penalty > 0 or self.majority

    def peek_of(self) -> "CallConstraint | None":
        """The constraint of a peek after a text turn generated under this one: majority decisions
        go on to the second turn's tag; nothing else applies there."""
        return CallConstraint(majority=True, peek=True) if self.majority else None


class Guides:
    """Row guides for one tokenizer and one model's vocabulary (its logits' width)."""

    def __init__(self, tokenizer, vocab_size: int) -> None:
        self.tokenizer, self.vocab_size = tokenizer, vocab_size

    @cached_property
    def _compiler(self):
        import xgrammar

        if hasattr(self.tokenizer, "backend_tokenizer"):
            info = xgrammar.TokenizerInfo.from_huggingface(self.tokenizer, vocab_size=self.vocab_size)
        else:  # a tokenizer that is not a Hugging Face one: each token is its own text
            vocab = [self.tokenizer.decode([i]) for i in range(self.vocab_size)]
            info = xgrammar.TokenizerInfo(vocab, xgrammar.VocabType.RAW, vocab_size=self.vocab_size,
                                          stop_token_ids=[self.tokenizer.eos_token_id])
        # Bounded: each distinct tool set a client sends is a grammar kept in the cache.
        return xgrammar.GrammarCompiler(info, max_threads=1, cache_limit_bytes=GRAMMAR_CACHE_BYTES)

    @cached_property
    def call_token(self) -> int:
        """The first token the model writes for the call marker after the assistant tag."""
        encoder = text_encoder(self.tokenizer)
        tag = encoder.encode(ASSISTANT_TAG).ids
        marked = encoder.encode(f"{ASSISTANT_TAG} {FUNCTION_CALL_MARKER}").ids
        if marked[:len(tag)] != tag:
            raise ValueError("the assistant tag tokenizes differently before the call marker")
        return marked[len(tag)]

    @cached_property
    def tag_token(self) -> int:
        """The first token of the ``ASSISTANT`` tag after a turn separator (a peek's decision)."""
        encoding = text_encoder(self.tokenizer).encode(TURN_SEPARATOR + ASSISTANT_TAG)
        return next(token for token, (start, end) in zip(encoding.ids, encoding.offsets) if end > len(TURN_SEPARATOR))

    @cached_property
    def marker(self) -> list[int]:
        return marker_tokens(self.tokenizer)

    def guide(self, constraint: CallConstraint | None) -> "RowGuide | None":
        if not constraint:
            return None
        if constraint.peek:
            return RowGuide(None, self.tag_token, 0.0, majority=True, anywhere=True)
        matcher = None
        if constraint.grammar is not None:
            import xgrammar

            matcher = xgrammar.GrammarMatcher(self._compiler.compile_structural_tag(constraint.grammar))
            if constraint.written and not matcher.accept_string(constraint.written):
                raise ValueError(f"the call grammar refuses the turn's start {constraint.written!r}")
        decided = bool(constraint.written)  # a written turn has decided: no bias, no majority
        bias, majority = (0.0, False) if decided else (constraint.call_bias, constraint.majority)
        guide = RowGuide(matcher, self.call_token if bias or majority else None, bias, majority)
        if constraint.loop_penalty > 0:
            guide.loops = Loops(self.marker, constraint.loop_penalty, FUNCTION_CALL_MARKER in constraint.written)
        return guide


def guides_for(model, tokenizer) -> Guides:
    """The row guides of ``model`` (kept on it: compiled grammars are reused across batches)."""
    guides = getattr(model, "_fcmistral_guides", None)
    if guides is None:
        vocab_size = getattr(model, "vocab_size", None) or model.get_output_embeddings().out_features
        guides = Guides(tokenizer, vocab_size)
        model._fcmistral_guides = guides
    return guides


@dataclass
class Loops:
    """A row's loop penalty: the reply's tokens so far, and where a call starts (fcmistral.call_loops)."""

    marker: list[int]
    multiplier: float
    starts_in_call: bool  # the turn's written start opened a call
    reply: list[int] = field(default_factory=list)

    def lower(self, logits: torch.Tensor) -> None:
        call = call_tokens(self.reply, self.marker, self.starts_in_call)
        if call:
            lower_loops(call, logits, self.multiplier)


class RowGuide:
    """One row's matcher, decision token (the call marker's first token, or a peek's tag) with its
    bias and majority rule, and loop penalty (see the module docstring); ``adjust_rows`` applies them.
    ``anywhere``: the decision may come at any step (a peek's tag follows the separator's tokens),
    not only at the first; its probability is then that of the whole path to it, the tokens taken
    before it included (``path``: their summed log-probabilities), since the other outcomes may part
    before it: SmolLM2 writes a row's end as one token of three newlines and a next turn's separator
    as two tokens (two newlines, then one), so after a refusal it may give the row's end 0.38 at the
    first token and the tag 0.74 once the separator is written: 0.45 in all (row i, seed 7)."""

    def __init__(self, matcher, decision: int | None, call_bias: float, majority: bool = False,
                 anywhere: bool = False) -> None:
        self.matcher, self.decision, self.call_bias = matcher, decision, call_bias
        self.majority, self.anywhere = majority, anywhere
        self.path, self._scores = 0.0, None  # (anywhere) the path's log-probability; the last step's
        self.started = False  # the row has taken its first token
        self.loops: Loops | None = None

    def take(self, token: int, padding: bool = False) -> None:
        """The row took ``token``: the matcher follows it. A token it refuses ends the constraint
        rather than the row: a masked row cannot take one, but ``generate`` goes on giving a finished
        row ``padding`` tokens."""
        self.started = True
        if self._scores is not None and not padding:
            self.path += float(self._scores[token])
        if self.loops is not None and not padding:
            self.loops.reply.append(token)
        if self.matcher is not None and not self.matcher.is_terminated() and not self.matcher.accept_token(token):
            if not padding:
                log.warning("the call grammar refused token %d; the row goes on unconstrained", token)
            self.matcher = None

    @property
    def masking(self) -> bool:
        return self.matcher is not None and not self.matcher.is_terminated()


_BITS = torch.arange(32, dtype=torch.int32)
_HALF = -math.log(2.0)


def adjust_rows(guides: Sequence[RowGuide | None], logits: torch.Tensor) -> None:
    """Bias and mask, in place, the rows of ``logits`` (batch x vocabulary) that have a guide.

    The masked rows share one bitmask, filled by each row's matcher and applied in one tensor
    operation: xgrammar's ``apply_token_bitmask_inplace`` took 0.4 ms per row on a CPU, more than a
    step of the tiny model."""
    masked: list[int] = []
    for index, guide in enumerate(guides):
        if guide is None:
            continue
        if guide.decision is not None and (guide.anywhere or not guide.started):
            logits[index, guide.decision] += guide.call_bias
            if guide.majority:
                scores = logits[index].float().log_softmax(-1)
                if guide.anywhere:
                    guide._scores = scores
                if guide.path + scores[guide.decision] < _HALF:
                    logits[index, guide.decision] = float("-inf")
        if guide.loops is not None:
            guide.loops.lower(logits[index])
        if guide.masking:
            masked.append(index)
    if not masked:
        return
    import xgrammar

    width = logits.shape[-1]
    bitmask = xgrammar.allocate_token_bitmask(len(masked), width)
    for slot, index in enumerate(masked):
        guides[index].matcher.fill_next_token_bitmask(bitmask, slot)
    allowed = ((bitmask[:, :, None] >> _BITS) & 1).view(len(masked), -1)[:, :width].bool().to(logits.device)
    rows = torch.tensor(masked, device=logits.device)
    logits[rows] = logits[rows].masked_fill(~allowed, float("-inf"))
