"""The batch's key/value cache in slots: rows join into free slots and leave them without the cache
being copied (a copy per join or leave had cost more than the steps with 32 rows)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import DynamicCache, DynamicLayer

from fcmistral.serving.engine.rows import Row

SPARE_COLUMNS = 128  # a batch's cache has room for this many more steps before it is moved
IDLE_SLOTS_STEPS = 128  # steps with most slots free before the batch gives them up (a copy)


@dataclass
class Group:
    """Rows whose prompts were just computed: their cache and mask (per row [shared prefix |
    padding | own suffix]) and each row's token to feed at the next step."""

    rows: list[Row]
    cache: DynamicCache
    mask: torch.Tensor
    tokens: list[int]


class SlotLayer(DynamicLayer):
    """One layer's keys and values for every slot of the batch, in a room with spare columns. The
    batch uses columns [start, end): a step writes its column in place (``DynamicLayer`` copies the
    whole layer at every step), columns no row needs any more are left behind by moving ``start``,
    and a joining row is written into a free slot; only a wider or longer batch moves the cache."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        super().__init__()
        self.dtype, self.device, self.is_initialized = keys.dtype, keys.device, True
        self.move(keys, values)

    def move(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Put ``keys``/``values`` (slots, heads, columns, dim) into a new room."""
        shape = (*keys.shape[:2], keys.shape[2] + SPARE_COLUMNS, keys.shape[3])
        self.room = (keys.new_empty(shape), values.new_empty(shape))
        self.start, self.end = 0, keys.shape[2]
        self.room[0][:, :, :self.end], self.room[1][:, :, :self.end] = keys, values
        self._view()

    def _view(self) -> None:
        """``keys``/``values``: the columns in use, as views of the room."""
        self.keys, self.values = (part[:, :, self.start:self.end] for part in self.room)

    def skip(self, columns: int) -> None:
        """Leave the first ``columns`` behind."""
        self.start += columns
        self._view()

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        new = key_states.shape[-2]
        if self.end + new > self.room[0].shape[2]:
            self.move(self.keys, self.values)
        self.room[0][:, :, self.end:self.end + new] = key_states
        self.room[1][:, :, self.end:self.end + new] = value_states
        self.end += new
        self._view()
        return self.keys, self.values

    def place(self, slot: int, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Write one row's keys/values (heads, columns, dim) at the end of ``slot``. The columns
        before keep an earlier row's values: finite numbers, which the row's mask hides."""
        first = self.end - keys.shape[1]
        self.room[0][slot, :, first:self.end], self.room[1][slot, :, first:self.end] = keys, values


def slot_cache(cache: DynamicCache) -> DynamicCache:
    """A cache holding ``cache``'s keys and values in ``SlotLayer`` rooms (copied once)."""
    slots = DynamicCache()
    slots.layers = [SlotLayer(layer.keys, layer.values) for layer in cache.layers]
    return slots


class Batch:
    """The rows being generated, one per slot (``None``: a free slot, until a joining row takes it),
    and their cache; ``mask`` [slots, columns] marks each slot's real columns (a row's columns end
    where the batch's do, so a shorter row is padded in front)."""

    def __init__(self, group: Group, pad: int) -> None:
        self.pad, self.rows, self.mask = pad, list(group.rows), group.mask
        self.cache = slot_cache(group.cache)
        self.tokens, self.positions = list(group.tokens), group.mask.sum(dim=1).tolist()
        self.idle_steps = 0  # consecutive steps with most slots free

    def live(self) -> list[Row]:
        return [row for row in self.rows if row is not None]

    def add(self, group: Group) -> None:
        """The group's unfinished rows take free slots (new slots when too few are free); the
        batch's columns grow in front when the group's are more."""
        joining = [i for i, row in enumerate(group.rows) if not row.finished]
        wider = group.mask.shape[1] - self.mask.shape[1]
        if wider > 0:
            self._move(lambda t: torch.nn.functional.pad(t, (0, 0, wider, 0)))
            self.mask = torch.nn.functional.pad(self.mask, (wider, 0))
        free = [slot for slot, row in enumerate(self.rows) if row is None]
        more = len(joining) - len(free)
        if more > 0:
            self._move(lambda t: torch.nn.functional.pad(t, (0, 0, 0, 0, 0, 0, 0, more)))
            self.mask = torch.nn.functional.pad(self.mask, (0, 0, 0, more))
            free += range(len(self.rows), len(self.rows) + more)
            self.rows += [None] * more
            self.tokens += [self.pad] * more
            self.positions += [0] * more
        width = self.mask.shape[1]
        for slot, i in zip(free, joining):
            for mine, theirs in zip(self.cache.layers, group.cache.layers):
                mine.place(slot, theirs.keys[i], theirs.values[i])
            self.mask[slot] = torch.nn.functional.pad(group.mask[i], (width - group.mask.shape[1], 0))
            self.rows[slot], self.tokens[slot] = group.rows[i], group.tokens[i]
            self.positions[slot] = int(group.mask[i].sum())

    def drop_finished(self) -> bool:
        """Free the slots of finished rows; False when no row is left. Columns no row uses any more
        are left behind. When most slots have been free for a while (not just between a reply and
        its client's next request: rows that joined together end together), the batch keeps only
        its rows (a copy)."""
        self.rows = [None if row is None or row.finished else row for row in self.rows]
        live = [slot for slot, row in enumerate(self.rows) if row is not None]
        if not live:
            return False
        self.idle_steps = self.idle_steps + 1 if len(self.rows) > 2 * len(live) else 0
        if self.idle_steps > IDLE_SLOTS_STEPS:
            self.idle_steps = 0
            index = torch.tensor(live, device=self.mask.device)
            self._move(lambda t: t[index])
            self.mask = self.mask[index]
            self.rows, self.tokens, self.positions = ([values[i] for i in live]
                                                      for values in (self.rows, self.tokens, self.positions))
            live = list(range(len(live)))
        unused = int(self.mask[live].any(dim=0).long().argmax())  # leading columns no row uses
        if unused:
            for layer in self.cache.layers:
                layer.skip(unused)
            self.mask = self.mask[:, unused:]
        return True

    def _move(self, change) -> None:
        for layer in self.cache.layers:
            layer.move(change(layer.keys), change(layer.values))
