"""Replacing an output folder (a merged model, FSDP's best/): a kill at any instant leaves the old
folder or the new one complete, and the next run cleans up what the killed one left."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import fcmistral.outputs as outputs
from fcmistral.outputs import recover_interrupted_write, written_aside


class Killed(BaseException):
    """Stands for SIGKILL: raised at one chosen filesystem step and at every one after it, so that
    no cleanup code of the killed process gets to run."""


def write_model(folder: Path, version: str) -> None:
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        (folder / name).write_text(version)


def complete_version(folder: Path) -> str | None:
    """The version a folder holds if every file is there and agrees, else None."""
    names = ("config.json", "model.safetensors", "tokenizer.json")
    if not folder.is_dir() or sorted(p.name for p in folder.iterdir()) != sorted(names):
        return None
    versions = {(folder / name).read_text() for name in names}
    return versions.pop() if len(versions) == 1 else None


def kill_at(step: int, monkeypatch) -> list[str]:
    """Make the ``step``-th filesystem change (rename, exchange, delete) and all later ones raise Killed."""
    done: list[str] = []

    def wrap(name, real):
        def changed(*args, **kwargs):
            if len(done) >= step:
                raise Killed(name)
            done.append(name)
            return real(*args, **kwargs)
        return changed

    monkeypatch.setattr(outputs.shutil, "rmtree", wrap("rmtree", shutil.rmtree))
    monkeypatch.setattr(outputs, "_exchange", wrap("exchange", outputs._exchange))
    monkeypatch.setattr(Path, "rename", wrap("rename", Path.rename))
    return done


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "rename-aside"])
def test_a_kill_at_any_step_leaves_the_old_or_the_new_folder_complete(exchange, tmp_path, monkeypatch):
    if not exchange:
        monkeypatch.setattr(outputs, "_exchange", lambda a, b: False)  # systems without renameat2
    step, outcomes = 0, set()
    while True:
        out = tmp_path / f"try{step}" / "merged"
        out.mkdir(parents=True)
        write_model(out, "old")
        with monkeypatch.context() as patch:
            done = kill_at(step, patch)
            try:
                with written_aside(out) as staging:
                    write_model(staging, "new")
                finished = True
            except Killed:
                finished = False
        seen = complete_version(out)
        with monkeypatch.context() as patch:
            patch.setattr(outputs, "_alive", lambda pid: False)  # the killed writer (this test) is gone
            recover_interrupted_write(out)  # what the next run does first
        after = complete_version(out)
        assert after in ("old", "new"), f"killed after {done}: {out} is not a complete model"
        assert seen in (None, after)  # only a kill between two renames may leave out missing for a moment
        assert [p.name for p in out.parent.iterdir()] == ["merged"], f"killed after {done}: leftovers"
        outcomes.add(after)
        if finished:
            break
        step += 1
    assert after == "new" and outcomes == {"old", "new"} and step >= 1


def test_an_error_while_writing_keeps_the_old_folder_and_removes_the_staging_one(tmp_path):
    out = tmp_path / "merged"
    out.mkdir()
    write_model(out, "old")
    with pytest.raises(OSError, match="disk full"):
        with written_aside(out) as staging:
            (staging / "config.json").write_text("new")
            raise OSError("disk full")
    assert complete_version(out) == "old" and [p.name for p in tmp_path.iterdir()] == ["merged"]


def test_the_new_folder_has_normal_permissions(tmp_path):
    umask = os.umask(0o022)
    try:
        with written_aside(tmp_path / "merged") as staging:
            write_model(staging, "new")
            (staging / "model.safetensors").chmod(0o600)  # as transformers writes it
    finally:
        os.umask(umask)
    assert (tmp_path / "merged").stat().st_mode & 0o777 == 0o755  # not tempfile.mkdtemp's 0o700
    assert {p.stat().st_mode & 0o777 for p in (tmp_path / "merged").iterdir()} == {0o644}


def test_a_running_writer_keeps_its_staging_folder(tmp_path):
    out = tmp_path / "merged"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    for pid in (os.getpid(), int(dead.stdout)):
        (tmp_path / f".merged.staging-{pid}").mkdir()
    (tmp_path / f".merged.staging-{os.getpid()}" / "part").write_text("x")
    recover_interrupted_write(out)
    assert [p.name for p in tmp_path.iterdir()] == [f".merged.staging-{os.getpid()}"]


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "rename-aside"])
def test_a_symlinked_output_folder_keeps_its_link_and_gets_the_new_files(exchange, tmp_path, monkeypatch):
    """The demo's outputs/demo-qlora is a link to a run's folder: writing it twice must replace the
    folder it points to, keep the link, and leave nothing behind."""
    if not exchange:
        monkeypatch.setattr(outputs, "_exchange", lambda a, b: False)
    target, link = tmp_path / "runs" / "first", tmp_path / "outputs" / "demo"
    target.mkdir(parents=True)
    link.parent.mkdir()
    link.symlink_to(target, target_is_directory=True)
    for version in ("one", "two"):
        with written_aside(link) as staging:
            write_model(staging, version)
        assert link.is_symlink() and link.resolve() == target
        assert complete_version(target) == version
    assert sorted(p.name for p in link.parent.iterdir()) == ["demo"]
    assert sorted(p.name for p in target.parent.iterdir()) == ["first"]


def test_cleanup_matches_the_output_name_literally(tmp_path):
    """An output named run[1] must not treat .run1.old-PID (another output's leftover) as its own."""
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    other = tmp_path / f".run1.old-{int(dead.stdout)}"
    other.mkdir()
    recover_interrupted_write(tmp_path / "run[1]")
    assert other.is_dir() and not (tmp_path / "run[1]").exists()
