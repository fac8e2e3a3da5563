"""Training examples that are drawn again each epoch: a new augmentation draw per epoch.

Augmentation precedes tokenization and packing (the rows' text changes), so a draw is a whole
prepared dataset. ``EpochDraws`` builds draw ``e`` when epoch ``e`` starts (``datasets`` caches it
like any prepared split: a rerun or a resumed run rebuilds nothing), and stands in for the train
dataset in both training loops: train.py's Trainer (through ``EpochDrawCallback`` in
fcmistral/training/callbacks.py) and FSDP/train.py's loop call ``set_epoch``.

Every epoch has the length of draw 0: the Trainer, the DistributedSampler and the learning-rate
schedule count steps once, before training. A later draw rarely has the same length (an
irrelevance row is shorter, so packing makes fewer rows): a longer draw contributes a seeded random
subset of that length, a shorter one repeats a seeded random few of its examples. Either way each
epoch sees (nearly) every row once, in its own draw.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from typing import Any

from torch.utils.data import Dataset as TorchDataset

log = logging.getLogger(__name__)


class EpochDraws(TorchDataset):
    """A map-style dataset whose examples are ``make(epoch)``'s, for the epoch last set."""

    def __init__(self, make: Callable[[int], Any], seed: int) -> None:
        self.make = make
        self.seed = seed
        self.epoch = -1
        self.set_epoch(0)
        self.length = len(self.draw)

    def then(self, transform: Callable[[Any], Any]) -> EpochDraws:
        """The same draws, each passed through ``transform`` (packing, dropping a column)."""
        make = self.make
        return EpochDraws(lambda epoch: transform(make(epoch)), self.seed)

    def set_epoch(self, epoch: int) -> None:
        if epoch == self.epoch:
            return
        self.epoch = epoch
        self.draw = self.make(epoch)
        self.order, n = None, len(self.draw)
        if not epoch:
            return
        if n != self.length:
            rng = random.Random(f"{self.seed}:epoch{epoch}")
            self.order = (rng.sample(range(n), self.length) if n > self.length
                          else list(range(n)) + rng.choices(range(n), k=self.length - n))
        # Said whether or not ``datasets`` had the draw cached (its progress bar shows only when not).
        log.info("epoch %d: its own augmentation draw, %d examples%s", epoch, n, "" if n == self.length else
                 f", {'sampled down' if n > self.length else 'topped up'} to the first draw's {self.length}")

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.draw[index if self.order is None else self.order[index]]
