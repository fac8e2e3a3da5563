"""Trainer callbacks of this project's training recipe."""

from __future__ import annotations

import logging
import signal

from transformers import TrainerCallback

from fcmistral.data.epochs import EpochDraws

log = logging.getLogger(__name__)


class SaveOnSignal(TrainerCallback):
    """On Ctrl-C or SIGTERM, finish the current step, write a resumable checkpoint and stop.

    ``signal_number`` records which signal asked, so that the run can end as an interrupted
    process does (exit 128 + N: 130 for Ctrl-C, 143 for SIGTERM), never as a finished one.
    """

    def __init__(self) -> None:
        self.signal_number: int | None = None
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._request)

    @property
    def requested(self) -> bool:
        return self.signal_number is not None

    def _request(self, signum, frame) -> None:
        if self.requested:  # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        log.warning("stop requested: saving a checkpoint after this step (Ctrl-C again to abort)")
        self.signal_number = signum

    def on_step_end(self, args, state, control, **kwargs):
        if self.requested:
            control.should_save = True
            control.should_training_stop = True
        return control


class EpochDrawCallback(TrainerCallback):
    """Gives each epoch its own augmentation draw (fcmistral/data/epochs.py).

    In one process, accelerate's loader forwards the Trainer's ``set_epoch`` to the dataset; with
    several (torchrun), the batch sampler is sharded and accelerate (1.x, ``DataLoaderShard.set_epoch``)
    tells the inner sampler *instead of* the dataset. So the dataset is told here, before the epoch's
    first batch is read, in every case (also when a run resumes in the middle of an epoch:
    ``state.epoch`` then counts the epochs begun).
    """

    def __init__(self, dataset: EpochDraws) -> None:
        self.dataset = dataset

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.dataset.set_epoch(int(state.epoch or 0))
        return control
