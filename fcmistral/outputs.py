"""Output folders: a command never writes into a folder that already holds something unless the
user asked (a resume, or an explicit overwrite flag), and a folder it replaces is replaced in one
step. Training runs and evaluations are hours of GPU time on the real model; an ordinary typo in
--output_dir, or a kill at the wrong moment, must not destroy them.
"""

from __future__ import annotations

import ctypes
import errno
import glob
import logging
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from fcmistral.errors import UserError

log = logging.getLogger(__name__)

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


# Replacing a folder atomically. Python's standard library has no directory swap; Linux's
# renameat2(RENAME_EXCHANGE) is one system call, reached through ctypes. Where it is missing the
# old folder is renamed aside first, and the next write to the same path puts it back if the
# process died between the two renames.
_AT_FDCWD, _RENAME_EXCHANGE = -100, 2


def _exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths in one step; False where the system or filesystem cannot."""
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(b))


def _leftovers(path: Path, kind: str) -> list[Path]:
    """``.NAME.KIND-PID`` folders beside ``path`` whose process is gone."""
    found = []
    for candidate in path.parent.glob(f".{glob.escape(path.name)}.{kind}-*"):
        pid = candidate.name.rsplit("-", 1)[1]
        if pid.isdigit() and not _alive(int(pid)):
            found.append(candidate)
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def recover_interrupted_write(path: str | Path) -> None:
    """Undo what a killed ``written_aside`` left beside ``path``: a half-written staging folder is
    removed; an old folder renamed aside goes back if nothing took its place, else it is removed
    (its replacement is complete, as the user asked)."""
    path = Path(os.path.realpath(path))
    for staging in _leftovers(path, "staging"):
        log.warning("removing %s, left by a killed run", staging)
        shutil.rmtree(staging)
    for old in _leftovers(path, "old"):
        if path.exists():
            log.warning("removing %s, replaced by %s before a run was killed", old, path)
            shutil.rmtree(old)
        else:
            log.warning("restoring %s from %s: a run was killed while replacing it", path, old)
            old.rename(path)


def _normal_permissions(folder: Path) -> None:
    """Give what was written the permissions of a plain ``mkdir``/``open`` under the user's umask:
    libraries write some files 0600 (transformers' model.safetensors), which other users of a
    shared model folder could not read."""
    umask = os.umask(0)
    os.umask(umask)
    for item in [folder, *folder.rglob("*")]:
        item.chmod((0o777 if item.is_dir() else 0o666) & ~umask)


@contextmanager
def written_aside(path: str | Path) -> Iterator[Path]:
    """A fresh folder to write into; when the block ends without error it takes ``path``'s place.

    At every instant ``path`` is either the old folder or the new one, complete, even if the
    process is killed (see ``recover_interrupted_write``); on an error the old one stays and the
    staging folder is removed. The folder and its files get the permissions of a normal ``mkdir``
    and ``open``. A ``path`` that is a symbolic link (the demo's ``outputs/demo-qlora``) stays one:
    the folder it points to is what is replaced.
    """
    path = Path(os.path.realpath(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    recover_interrupted_write(path)
    staging = path.with_name(f".{path.name}.staging-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        yield staging
        _normal_permissions(staging)
        if not path.exists():
            staging.rename(path)
        elif not _exchange(staging, path):  # then staging holds the old folder, removed below
            aside = path.with_name(f".{path.name}.old-{os.getpid()}")
            path.rename(aside)
            staging.rename(path)
            shutil.rmtree(aside)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
