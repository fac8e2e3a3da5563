"""Evaluation's replies: each item's assistant turns under the turn policy, items in batches."""

from __future__ import annotations

from typing import Callable, Protocol

from fcmistral.constraint import CallConstraint
from fcmistral.prompt import Turn
from fcmistral.turns import CHAT_POLICY, Ask, Generated, assistant_turns, run_turns_together


class Item(Protocol):
    """An evaluation item (EvalItem, BFCLItem): its conversation so far."""

    system: str
    turns: list[Turn]


Generate = Callable[[list[str], list[CallConstraint | None], int | None], list[str]]
"""Replies to prompts (cut at the end marker), each under its constraint, with a token limit (None:
the generator's own)."""


def replies(generate: Generate, items: list[Item], constraints: list[CallConstraint | None]) -> list[str]:
    """Each item's reply as the terminal chat runs it: the assistant's turns under the chat's turn
    policy (fcmistral.turns), so a model that writes "Sure, let me check." and then the call
    in a second turn is scored on its call, as a user of the chat or the server would get it. The
    turns are joined by a blank line. Every generation counts as stopped, as in the chat (the
    generators return text without a finish reason): a call cut short is scored as unreadable."""
    def answer(asks: list[tuple[int, Ask]]) -> list[Generated]:
        texts: dict[int, str] = {}
        for limit in dict.fromkeys(ask.max_new_tokens for _, ask in asks):  # the replies, the peeks
            group = [(i, ask) for i, ask in asks if ask.max_new_tokens == limit]
            outputs = generate([ask.prompt for _, ask in group],
                               [None if ask.peek else constraints[i] for i, ask in group], limit)
            texts.update((i, text) for (i, _), text in zip(group, outputs))
        return [(texts[i], "stop") for i, _ in asks]

    outcomes = run_turns_together([assistant_turns(i.system, i.turns, CHAT_POLICY) for i in items], answer)
    return ["\n\n".join(turn.content for turn in outcome.turns) for outcome in outcomes]
