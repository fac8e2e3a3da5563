"""Batch tokenization that encodes each distinct system prompt once, with the same ids as in context.

A glaive system prompt (the JSON schemas) is about 70% of its row's tokens, and the same prompt
repeats over many rows. Tokenizing it again for every row is most of the data-preparation time,
so each text is cut in two: the *prefix* (the system prompt) and the *rest* (the chat). The rest
is tokenized behind a short *tail* of its prefix (at most its last line), which gives the
tokenizer the left context it needs at the cut (Mistral's ``▁`` prepended to a text's start, the
byte-level regex's whitespace runs), and the tokens from the cut on are kept.

That gives the whole text's ids if no token crosses the cut and the tokens after it need no more
left context than the tail: true of BPE tokenizers, whose merges stay inside pre-tokenized words
or, like Mistral's, never cross a newline. What varies with the tokenizer and the prompt is
checked rather than assumed: the first row of each distinct prefix is tokenized whole (its tokens
before the cut become the cached prefix ids) and also through the tail, and the prefix serves later
rows only if both give the same ids. A prefix that fails the check, and any row whose own cut falls
inside a token, is tokenized whole.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from fcmistral.modeling import text_encoder

MAX_TAIL_CHARS = 64
_UNSEEN = object()


@dataclass(slots=True)
class TokenizedText:
    """Token ids of a text and the map from the text's characters to token indices."""

    ids: list[int]
    prefix_tokens: int  # tokens before the cut (special tokens included)
    encoding: object  # the tokenizers.Encoding that ``char_to_token`` reads
    char_shift: int = 0  # text position minus the encoding's position
    token_shift: int = 0  # ids index minus the encoding's index

    def char_to_token(self, pos: int) -> int | None:
        """The index in ``ids`` of the token covering character ``pos`` of the text, for characters
        from the cut on (the chat, where the supervised spans are)."""
        token = self.encoding.char_to_token(pos - self.char_shift)
        return None if token is None else token + self.token_shift


def _tail(prefix: str) -> str:
    """The prefix's last line (up to MAX_TAIL_CHARS): left context for tokenizing the rest."""
    start = prefix.rfind("\n", 0, len(prefix) - 1) + 1
    return prefix[max(start, len(prefix) - MAX_TAIL_CHARS):]


def first_token(encoding, start: int, stop: int, step: int = 1) -> int | None:
    """The token covering the first character in ``range(start, stop, step)`` that has one
    (``encoding``: anything with ``char_to_token``, a tokenizers Encoding or a TokenizedText)."""
    for pos in range(start, stop, step):
        token = encoding.char_to_token(pos)
        if token is not None:
            return token
    return None


def _tokens_before(encoding, pos: int) -> int:
    """How many tokens come before character ``pos`` (special tokens included)."""
    last = first_token(encoding, pos - 1, -1, -1)
    return 0 if last is None else last + 1


def _boundary(encoding, pos: int) -> int | None:
    """Index of the token starting exactly at character ``pos``, if no token crosses ``pos``."""
    token = encoding.char_to_token(pos)
    if token is None or encoding.token_to_chars(token)[0] != pos:
        return None
    before = encoding.token_to_chars(token - 1) if token > 0 else None
    return None if before is not None and before[1] > pos else token


class SharedPrefixEncoder:
    """Tokenizes ``prefix + rest`` texts, each distinct prefix once (see the module docstring).

    One instance lives through a whole dataset pass, so its cache spans batches. ``stats``
    counts rows served from the cache (``cached``) and tokenized whole (``whole``).
    """

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        # A private copy of the Rust tokenizer (special tokens' text read as text; see text_encoder):
        # a transformers call with padding or truncation leaves them switched on in the shared one,
        # and encode_batch would then pad every text to the batch's longest.
        self._backend = text_encoder(tokenizer)
        self._heads: dict[str, list[int] | None] = {}  # checked prefixes' ids; None: tokenize whole
        self.stats: Counter = Counter()

    def __getstate__(self) -> dict:
        # The Rust tokenizer's pickle drops its encode_special_tokens switch: the copy is rebuilt on
        # unpickling instead (datasets' workers), and this marker changes the fingerprint under which
        # datasets caches a tokenized dataset, so no cache from before that rule is reused.
        return {**self.__dict__, "_backend": "text_encoder: special tokens' text read as text"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._backend = text_encoder(self.tokenizer)

    def _encode(self, texts: list[str]) -> list:
        return self._backend.encode_batch(texts, add_special_tokens=True) if texts else []

    def encode(self, texts: list[str], cuts: list[int]) -> list[TokenizedText]:
        """Token ids (special tokens included) of each text; ``cuts[i]`` is its prefix length.

        The first row of a new prefix is tokenized both whole and through the tail to check the
        tail path; the batch's other rows with that prefix take the tail path on the expectation
        that the check passes, and are tokenized whole if it does not. The check costs a prefix
        met only once about a third more than tokenizing it whole (the chat is a third of a row).
        """
        prefixes = [text[:cut] for text, cut in zip(texts, cuts)]
        whole, via_tail, check = [], [], {}  # check: new prefix -> the row that decides it
        for i, prefix in enumerate(prefixes):
            head = self._heads.get(prefix, _UNSEEN)
            if head is None:
                whole.append(i)
                continue
            if head is _UNSEEN and prefix not in check:
                check[prefix] = i
                whole.append(i)
            via_tail.append(i)
        tails = {i: _tail(prefixes[i]) for i in via_tail}
        whole_enc = dict(zip(whole, self._encode([texts[i] for i in whole])))
        tail_enc = dict(zip(via_tail, self._encode([tails[i] + texts[i][cuts[i]:] for i in via_tail])))

        for prefix, i in check.items():
            full, tailed = whole_enc[i], tail_enc.pop(i)
            at_full, at_tail = _boundary(full, cuts[i]), _boundary(tailed, len(tails[i]))
            same = at_full is not None and at_tail is not None and full.ids[at_full:] == tailed.ids[at_tail:]
            self._heads[prefix] = full.ids[:at_full] if same else None

        results = {i: TokenizedText(enc.ids, _tokens_before(enc, cuts[i]), enc) for i, enc in whole_enc.items()}
        stragglers = []  # the prefix failed its check, or this row's cut falls inside a token
        for i, tailed in tail_enc.items():
            head, at = self._heads[prefixes[i]], _boundary(tailed, len(tails[i]))
            if head is None or at is None:
                stragglers.append(i)
            else:
                shifts = (cuts[i] - len(tails[i]), len(head) - at)
                results[i] = TokenizedText(head + tailed.ids[at:], len(head), tailed, *shifts)
        for i, enc in zip(stragglers, self._encode([texts[i] for i in stragglers])):
            results[i] = TokenizedText(enc.ids, _tokens_before(enc, cuts[i]), enc)
        self.stats["whole"] += len(whole) + len(stragglers)
        self.stats["cached"] += len(texts) - len(whole) - len(stragglers)
        return [results[i] for i in range(len(texts))]
