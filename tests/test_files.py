import os

import pytest

from functional_heads.utils import files
from functional_heads.utils.errors import UserError
from functional_heads.utils.files import (
    atomic_folder,
    atomic_write_text,
    check_new_file,
    check_new_folder,
    check_writable,
    read_json,
)


def tree(folder):
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None for p in sorted(folder.rglob("*"))}


def test_atomic_folder_puts_a_complete_folder_in_place(tmp_path):
    with atomic_folder(tmp_path / "a" / "b" / "out") as folder:
        (folder / "x.txt").write_text("x")
        assert not (tmp_path / "a" / "b" / "out").exists()  # nothing at out until it is complete
    assert tree(tmp_path / "a") == {"b": None, "b/out": None, "b/out/x.txt": b"x"}
    (tmp_path / "empty").mkdir()
    with atomic_folder(tmp_path / "empty") as folder:  # an empty folder is taken over
        (folder / "y.txt").write_text("y")
    assert tree(tmp_path / "empty") == {"y.txt": b"y"}


def test_atomic_folder_failure_leaves_nothing_and_the_old_folder_as_it_was(tmp_path):
    with pytest.raises(OSError, match="No space"):
        with atomic_folder(tmp_path / "made" / "out") as folder:
            (folder / "half.bin").write_bytes(b"0" * 10)
            raise OSError(28, "No space left on device")
    assert list(tmp_path.iterdir()) == []  # no temporary folder, no parent made for it
    old = tmp_path / "old"
    old.mkdir()
    (old / "model.safetensors").write_text("theirs")
    before = tree(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        with atomic_folder(old, overwrite=True) as folder:
            (folder / "config.json").write_text("{}")
            raise KeyboardInterrupt
    assert tree(tmp_path) == before


def test_atomic_folder_replaces_a_folder_only_as_a_whole_and_only_when_asked(tmp_path, monkeypatch):
    old = tmp_path / "out"
    old.mkdir()
    for name in ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
                 "model.safetensors.index.json", "config.json"):
        (old / name).write_text("old " + name)
    before = tree(tmp_path)
    with pytest.raises(UserError, match="no longer empty"):
        with atomic_folder(old) as folder:
            (folder / "config.json").write_text("new")
    assert tree(tmp_path) == before

    real_rename, calls = os.rename, []

    def rename(src, dst):  # moving the old one aside works; putting the new one in place fails once
        calls.append((src, dst))
        if len(calls) == 2:
            raise OSError(5, "Input/output error")
        return real_rename(src, dst)

    monkeypatch.setattr(files.os, "rename", rename)
    with pytest.raises(OSError, match="Input/output"):
        with atomic_folder(old, overwrite=True) as folder:
            (folder / "config.json").write_text("new")
    assert tree(tmp_path) == before  # the old folder is back, whole
    monkeypatch.undo()
    with atomic_folder(old, overwrite=True) as folder:
        (folder / "config.json").write_text("new")
        (folder / "model.safetensors").write_text("new weights")
    assert tree(tmp_path) == {"out": None, "out/config.json": b"new", "out/model.safetensors": b"new weights"}


def test_atomic_write_text_failure_keeps_the_old_file(tmp_path, monkeypatch):
    atomic_write_text(tmp_path / "heads.json", "old")

    def full_disk(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files.os, "fsync", full_disk)
    with pytest.raises(OSError):
        atomic_write_text(tmp_path / "heads.json", "new and longer")
    assert tree(tmp_path) == {"heads.json": b"old"}


def test_output_checks_say_what_is_wrong(tmp_path):
    (tmp_path / "heads.json").write_text("{}")
    (tmp_path / "folder").mkdir()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "config.json").write_text("{}")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    cases = [
        (lambda: check_new_file(tmp_path / "heads.json"), "heads.json already exists: choose a new name, or pass "
                                                          "--overwrite"),
        (lambda: check_new_file(tmp_path / "folder"), "folder is a folder: give the path of the file to write"),
        (lambda: check_new_file(tmp_path / "heads.json" / "x.json"), "heads.json is a file, not a folder"),
        (lambda: check_writable(tmp_path / "heads.json"), "--out .*heads.json is a file, not a folder"),
        (lambda: check_writable(tmp_path / "heads.json" / "runs"), "Cannot write to .*heads.json is a file"),
        (lambda: check_new_folder(tmp_path / "heads.json"), "heads.json is a file, not a folder: choose a new"),
        (lambda: check_new_folder(tmp_path / "full"), "full is not empty \\(it holds a checkpoint\\).*--overwrite"),
        (lambda: check_new_folder(tmp_path / "mine"), "mine is not empty \\(it holds 1 entry\\)"),
    ]
    for check, message in cases:
        with pytest.raises(UserError, match=message):
            check()
    check_new_file(tmp_path / "heads.json", overwrite=True)
    check_new_file(tmp_path / "new" / "heads.json")
    check_new_folder(tmp_path / "folder")
    check_new_folder(tmp_path / "full", overwrite=True)
    check_writable(tmp_path / "folder")


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_output_checks_name_a_folder_without_permission(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(UserError, match="no permission to write in .*locked"):
            check_new_file(locked / "heads.json")
    finally:
        locked.chmod(0o700)


@pytest.mark.parametrize("literal", ["Infinity", "-Infinity", "NaN"])
def test_read_json_refuses_non_numbers(tmp_path, literal):
    (tmp_path / "a.json").write_text(f'{{"g": [1, {literal}]}}')
    with pytest.raises(ValueError, match=f"holds {literal}"):
        read_json(tmp_path / "a.json")
    (tmp_path / "a.json").write_text('{"g": 1e3}')
    assert read_json(tmp_path / "a.json") == {"g": 1000.0}
