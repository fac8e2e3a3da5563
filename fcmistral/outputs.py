"""Output folders: a command never writes into a folder that already holds something unless the
user asked (a resume, or an explicit overwrite flag). Training runs and evaluations are hours of
GPU time on the real model; an ordinary typo in --output_dir must not replace them.
"""

from __future__ import annotations

from pathlib import Path

from fcmistral.errors import UserError

# How a training script's refusal says what to do (train.py and FSDP/train.py).
RESUME_OR_OVERWRITE = ("pass --resume_from_checkpoint last to continue that run, or --overwrite_output_dir to "
                       "train into it anyway")


def check_output_dir(path: str | Path, option: str, allowed: bool, how: str) -> Path:
    """``path`` as a folder that may be written: missing, empty, or ``allowed`` (the user asked).

    Checked before anything slow, so that a refusal costs nothing. ``how`` tells the user which
    flag allows it.
    """
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{option} {str(path)!r} is a file, not a folder")
    if not allowed and folder.is_dir() and any(folder.iterdir()):
        raise UserError(f"{option} {str(path)!r} already holds files: {how}")
    return folder
