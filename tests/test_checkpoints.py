"""Corrupt, foreign and other-config checkpoints are refused with the file and the reason."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import torch

from critperiods.pipeline import checkpoints as ckpt
from critperiods.pipeline.checkpoints import CheckpointError, config_hash, load_piece, save_piece
from critperiods.pipeline.files import write_atomic
from critperiods.pipeline.plan import training_params


def write_piece(path, h="aaaaaaaaaaaa"):
    save_piece(path, config_hash=h, identity={"seeds": [0, 1]}, members=[
        {"seed": s, "state": {"epoch": 1},
         "checkpoints": [{"epoch": 1, "model": {"w": torch.full((3,), float(s))}}]}
        for s in (0, 1)])


def test_roundtrip_of_a_group_file(tmp_path):
    write_piece(tmp_path / "p.pt")
    piece = load_piece(tmp_path / "p.pt", "aaaaaaaaaaaa")
    assert torch.equal(ckpt.member(piece, 1)["checkpoints"][0]["model"]["w"], torch.ones(3))
    epochs = ckpt.load_checkpoints([tmp_path / "p.pt"], "aaaaaaaaaaaa", seed=0)
    assert [c["epoch"] for c in epochs] == [1] and not epochs[0]["model"]["w"].any()
    with pytest.raises(CheckpointError, match=r"p\.pt: holds seeds \[0, 1\], not seed 5"):
        ckpt.member(piece, 5, tmp_path / "p.pt")


def test_a_file_of_the_one_seed_format_says_to_retrain(tmp_path):
    torch.save({"format": "critperiods-trajectory/1", "config_hash": "h", "identity": {},
                "state": {}, "checkpoints": []}, tmp_path / "old.pt")
    with pytest.raises(CheckpointError, match=r"before 0.2 .* retrain it, .*--forcerun .*old\.pt"):
        load_piece(tmp_path / "old.pt", "h")


def test_truncated_file_is_refused(tmp_path):
    path = tmp_path / "p.pt"
    write_piece(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError,
                       match=r"p\.pt: cannot be read .*truncated, corrupt.*--forcerun .*p\.pt"):
        load_piece(path, "aaaaaaaaaaaa")


def test_foreign_file_is_refused(tmp_path):
    path = tmp_path / "foreign.pt"
    torch.save({"state_dict": {"w": torch.ones(2)}}, path)
    with pytest.raises(CheckpointError, match=r"foreign\.pt: not a critperiods file"):
        load_piece(path, "aaaaaaaaaaaa")


def test_file_with_the_format_but_missing_fields_is_refused(tmp_path):
    path = tmp_path / "hollow.pt"
    torch.save({"format": "critperiods-trajectory/2", "checkpoints": []}, path)
    with pytest.raises(CheckpointError,
                       match=r"hollow\.pt: a 'critperiods-trajectory/2' file without "
                             r"config_hash, identity, members"):
        load_piece(path, "aaaaaaaaaaaa")


def test_code_in_a_checkpoint_is_never_executed(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": "critperiods-trajectory/1", "x": object()}, path)
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_piece(path, "aaaaaaaaaaaa")


def test_other_config_names_both_hashes(tmp_path):
    path = tmp_path / "p.pt"
    write_piece(path, "aaaaaaaaaaaa")
    with pytest.raises(CheckpointError, match="config aaaaaaaaaaaa, but this run's config is bbb"):
        load_piece(path, "bbbbbbbbbbbb")


def test_hash_ignores_the_lr_schedules_but_not_lr():
    """Both schedules' branches continue the same trunks, so the schedules are not hashed."""
    from tests.test_config import checked, load_default

    config = checked(load_default())
    base = config_hash(training_params(config))
    config["grid"]["lr_schedules"] = ["restart"]
    assert config_hash(training_params(config)) == base
    config["optimizer"]["lr"] = 0.1
    assert config_hash(training_params(config)) != base


def test_the_hash_of_existing_trunks_is_unchanged():
    """The hash of a default config's training slice is the one pieces written before the
    schedules became a grid axis carry (then taken without optimizer.lr_after_switch)."""
    training = {"dataset": {"name": "fashion_mnist", "train_subset": 10000, "blur_size": 4},
                "model": {"name": "small_cnn", "width": 8},
                "optimizer": {"lr": 0.05, "momentum": 0.9, "weight_decay": 0.0005,
                              "lr_decay": 0.85},
                "augmentation": False}
    assert config_hash(training) == "4c786db3bca9"  # what the old code gave


@pytest.mark.parametrize(("layers", "pinned"), [
    ((), "4c786db3bca9"), (("cifar10_achille",), "9423515cac30"),
    (("fmnist_study",), "6863a7d2654f"),
    (("fmnist_study", "fmnist_study_cpu"), "4c786db3bca9"),
    (("fmnist_study", "fmnist_study_recovery"), "6863a7d2654f"),
    (("fmnist_study", "fmnist_study_cpu", "fmnist_study_recovery",
      "fmnist_study_recovery_cpu"), "4c786db3bca9"),
    (("perturbation",), "4c786db3bca9"),
    (("mnist_quick",), "775ec8af874e"),
])
def test_the_shipped_configs_keep_their_training_hash(layers, pinned):
    """Every trained piece carries this hash, and a piece of another hash is retrained. A
    new key in the hashed slice (``plan.training_params``: the dataset's name, subset and
    blur, ``model``, ``optimizer``, ``augmentation``) changes it for every experiment even
    at its default: leave the key out of the slice while it has its default value, as
    ``model.init`` is (docs/architecture.md, "A config key")."""
    from critperiods.cli.common import load_config

    config = load_config([f"configs/{name}.yaml" for name in layers])  # laid as documented
    assert config_hash(training_params(config)) == pinned


def test_atomic_write_gives_the_usual_permissions(tmp_path):
    """Outputs are readable by others as an ordinary open() would make them (mkstemp's
    temporary file is 0600)."""
    old = os.umask(0o022)
    try:
        write_atomic(tmp_path / "shared.txt", lambda p: p.write_text("x"))
        os.umask(0o077)
        write_atomic(tmp_path / "private.txt", lambda p: p.write_text("x"))
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "shared.txt").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "private.txt").stat().st_mode) == 0o600


def test_atomic_write_flushes_the_file_before_the_rename_and_the_folder_after(
        tmp_path, monkeypatch):
    """A node that loses power after a job finished must not leave an empty file under the
    final name: the data reach the disk before the rename, the rename before returning."""
    events = []
    fsync, replace = os.fsync, os.replace

    def logged_fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        fsync(fd)

    def logged_replace(src, dst):
        events.append(("replace", str(dst)))
        replace(src, dst)

    monkeypatch.setattr(os, "fsync", logged_fsync)
    monkeypatch.setattr(os, "replace", logged_replace)
    target = tmp_path / "e4.pt"
    write_atomic(target, lambda p: p.write_text("x"))
    kinds = [kind for kind, _ in events]
    assert kinds == ["fsync", "replace", "fsync"], events
    assert Path(events[0][1]).parent == tmp_path and events[0][1] != str(target)
    assert events[2][1] == str(tmp_path)
    assert target.read_text() == "x"


def test_a_folder_that_cannot_be_flushed_is_passed_over_but_a_file_is_an_error(
        tmp_path, monkeypatch):
    """Some file systems refuse to fsync a folder (EINVAL): the write stands. A file whose
    data cannot reach the disk fails the write, and nothing lands under its name."""
    import errno

    fsync = os.fsync

    def refuse(kind):
        def patched(fd):
            if os.path.isdir(os.readlink(f"/proc/self/fd/{fd}")) == (kind == "folder"):
                raise OSError(errno.EINVAL, "Invalid argument")
            fsync(fd)
        return patched

    monkeypatch.setattr(os, "fsync", refuse("folder"))
    write_atomic(tmp_path / "kept.pt", lambda p: p.write_text("x"))
    assert (tmp_path / "kept.pt").read_text() == "x"
    monkeypatch.setattr(os, "fsync", refuse("file"))
    with pytest.raises(OSError, match="Invalid argument"):
        write_atomic(tmp_path / "lost.pt", lambda p: p.write_text("x"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept.pt"]


def test_atomic_write_leaves_no_partial_file(tmp_path, monkeypatch):
    path = tmp_path / "p.pt"

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError):
        write_piece(path)
    assert list(tmp_path.iterdir()) == []


def test_pieces_record_their_provenance_and_resume_only_from_the_same_code(tmp_path):
    ckpt.save_piece(tmp_path / "p.pt", config_hash="h", identity={}, members=[],
                    provenance={"code": "c1", "data": {"train": "d1"}})
    assert ckpt.read_provenance(tmp_path / "p.pt") == {"code": "c1", "data": {"train": "d1"}}
    ckpt.save_resume(tmp_path / "r.pt", config_hash="h", identity={"seed": 0}, members=[],
                     provenance={"code": "c1"})
    assert ckpt.load_resume(tmp_path / "r.pt", "h", {"seed": 0}, {"code": "c1"}) is not None
    assert ckpt.load_resume(tmp_path / "r.pt", "h", {"seed": 0}, {"code": "c2"}) is None


def test_a_foreign_file_is_refused_in_one_line_that_ends_with_the_remake(tmp_path):
    """Random bytes make torch.load raise several lines (its advice on weights_only); a failed
    job's summary keeps one line, so the message keeps the first of them and ends with the
    command that remakes the file."""
    path = tmp_path / "p.pt"
    path.write_bytes(bytes(range(256)) * 12)
    with pytest.raises(CheckpointError) as err:
        load_piece(path, "aaaaaaaaaaaa")
    message = str(err.value)
    assert "\n" not in message and message.endswith(f"--forcerun {path}")
    assert "weights_only=True) accepts: Unsupported operand" in message
    assert "weights_only` set to `False`" not in message


def test_a_write_on_a_full_filesystem_says_so(tmp_path, monkeypatch):
    """netCDF says "Permission denied" and torch.save "unexpected pos" when the disk fills:
    the write names the file and the space left instead, and leaves no temporary file; with
    space to spare, the writer's own error passes unchanged."""
    import errno
    import shutil
    from collections import namedtuple

    from critperiods.pipeline import files

    def fails(tmp):
        tmp.write_text("partial")
        raise PermissionError(13, "Permission denied")

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda _: usage(10**9, 10**9 - 4096, 4096))
    with pytest.raises(OSError) as err:
        write_atomic(tmp_path / "out.nc", fails)
    assert err.value.errno == errno.ENOSPC
    assert f"cannot write {tmp_path / 'out.nc'}: its filesystem has 0.0 MiB free" in str(
        err.value) and "PermissionError: [Errno 13] Permission denied" in str(err.value)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(shutil, "disk_usage", lambda _: usage(10**12, 0, 10**12))
    with pytest.raises(PermissionError):
        write_atomic(tmp_path / "out.nc", fails)
    assert files.said(ValueError("first\nsecond")) == "ValueError: first"


def test_a_write_over_quota_says_so(tmp_path, monkeypatch):
    """On a cluster the quota fills before the disk: EDQUOT is named as such."""
    import errno

    def over_quota(tmp):
        raise OSError(errno.EDQUOT, "Disk quota exceeded")

    with pytest.raises(OSError, match="over your disk quota") as err:
        write_atomic(tmp_path / "x.pt", over_quota)
    assert err.value.errno == errno.EDQUOT and list(tmp_path.iterdir()) == []


def test_a_write_sweeps_the_temporary_files_a_killed_write_left(tmp_path):
    """A job killed mid-write (SIGKILL, or SIGTERM outside training) leaves its hidden
    `.<name>.XXXXXXXX.tmp`, hundreds of MB for a piece; the next write of that file deletes
    it, and nothing else."""
    import tempfile

    fd, stale = tempfile.mkstemp(prefix=".e4.pt.", suffix=".tmp", dir=tmp_path)
    os.close(fd)
    keep = [tmp_path / ".e4.pt.resume", tmp_path / ".e4.pt.not-ours.tmp",
            tmp_path / ".e40.pt.abcdefgh.tmp"]
    for path in keep:
        path.write_text("x")
    write_atomic(tmp_path / "e4.pt", lambda p: p.write_text("new"))
    assert sorted(tmp_path.iterdir()) == sorted([*keep, tmp_path / "e4.pt"])
