"""Finding the checkpoint to resume from when a run may have been killed at any instant.

The Trainer writes a checkpoint folder piece by piece (adapter, optimizer, scheduler, RNG) and
``trainer_state.json`` last, in place. A run killed while saving leaves a newer folder without a
readable state, and resuming from it fails; the newest complete one is the right one.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

log = logging.getLogger(__name__)


def is_complete(checkpoint: Path) -> bool:
    """Whether the Trainer finished writing ``checkpoint`` (its state file, written last, reads)."""
    try:
        json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return True


def latest_complete_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest complete ``checkpoint-N`` folder in ``output_dir``; incomplete ones are skipped
    with a log line."""
    steps = {int(m[1]): p for p in Path(output_dir).glob("checkpoint-*")
             if p.is_dir() and (m := re.fullmatch(r"checkpoint-(\d+)", p.name))}
    for step in sorted(steps, reverse=True):
        if is_complete(steps[step]):
            return steps[step]
        log.warning("skipping %s: incomplete (no readable trainer_state.json; a run was killed while saving it)",
                    steps[step])
    return None
