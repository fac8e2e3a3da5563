"""Trainer callbacks of this project's training recipe."""

from __future__ import annotations

import logging
import signal

from transformers import TrainerCallback

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
