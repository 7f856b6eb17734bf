"""Files and folders written whole or not at all: a reader, a crash or a full disk never leaves half a file
or a folder mixing old and new files; nothing the user had is replaced unless they said so (`overwrite`).
Text files are read so that a bad one is an error naming its file and line."""

from __future__ import annotations

import json
import os
import secrets
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from .errors import UserError

OVERWRITE_HINT = "pass --overwrite (overwrite=True in Python)"


def _beside(path: Path, tag: str) -> Path:
    """A hidden, unused name in `path`'s folder for a temporary file or folder."""
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.{tag}")


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yields a temporary path beside `path` to write to; on success it replaces `path` in one step, on
    error it is removed and `path` is left as it was."""
    path = Path(path)
    tmp = _beside(path, "tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write `text` to `path` atomically (see `atomic_path`), making its folder if needed; returns the path."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        with open(tmp, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
    return Path(path)


@contextmanager
def atomic_folder(out: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yields a new empty folder beside `out` to write into. On success it takes `out`'s place in one rename:
    `out` must not exist or be an empty folder, or, with `overwrite`, the old `out` is moved aside first and
    removed only once the new one is in place (never a mix of old and new files). On error the new folder
    (and any parent folder made for it) is removed and `out` is as it was."""
    target = Path(os.path.abspath(out))
    made = []
    for parent in reversed([target.parent, *target.parent.parents]):
        if not parent.exists():
            parent.mkdir()
            made.append(parent)
    tmp = _beside(target, "tmp")
    try:
        tmp.mkdir()
        yield tmp
        _put_in_place(tmp, target, overwrite, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        for folder in reversed(made):
            try:
                folder.rmdir()
            except OSError:
                break
        raise


def _put_in_place(tmp: Path, target: Path, overwrite: bool, shown: str | Path) -> None:
    if not os.path.lexists(target) or (target.is_dir() and not target.is_symlink() and not any(target.iterdir())):
        os.replace(tmp, target)  # onto nothing, or onto an empty folder: one rename
        return
    if not overwrite:  # it filled up while we wrote
        raise UserError(f"{shown} is no longer empty: nothing was written there; choose a new folder or "
                        f"{OVERWRITE_HINT}.")
    old = _beside(target, "old")
    os.rename(target, old)
    try:
        os.rename(tmp, target)
    except BaseException:
        os.rename(old, target)
        raise
    if old.is_dir() and not old.is_symlink():
        shutil.rmtree(old, ignore_errors=True)
    else:
        old.unlink(missing_ok=True)


def _check_nearest_folder(path: Path, out: str | Path, flag: str) -> None:
    """Raise unless the nearest existing folder at or above `path` is a folder we may write in."""
    path = Path(os.path.abspath(path))
    while not os.path.lexists(path):
        path = path.parent
    if not path.is_dir():
        raise UserError(f"Cannot write to {out}: {path} is a file, not a folder; choose another {flag}.")
    if not os.access(path, os.W_OK | os.X_OK):
        raise UserError(f"Cannot write to {out}: no permission to write in {path}; choose another {flag}.")


def check_writable(out: str | Path, flag: str = "--out") -> None:
    """Raise unless files can be written into the folder `out` (an existing folder, or one that can be made)."""
    if os.path.lexists(out) and not Path(out).is_dir():
        raise UserError(f"{flag} {out} is a file, not a folder: give a folder path.")
    _check_nearest_folder(Path(out), out, flag)


def check_new_file(out: str | Path, overwrite: bool = False, flag: str = "--out") -> None:
    """Raise unless the file `out` can be written: it is not a folder, does not exist (or `overwrite`), and
    its folder is writable."""
    path = Path(out)
    if path.is_dir():
        raise UserError(f"{flag} {out} is a folder: give the path of the file to write, e.g. {path / 'heads.json'}.")
    if os.path.lexists(path) and not overwrite:
        raise UserError(f"{flag} {out} already exists: choose a new name, or {OVERWRITE_HINT} to replace it.")
    _check_nearest_folder(path.parent, out, flag)


def check_new_folder(out: str | Path, overwrite: bool = False, flag: str = "--out") -> None:
    """Raise unless `atomic_folder(out, overwrite)` can put a folder at `out`: nothing there, an empty folder,
    or (with `overwrite`) a folder to replace as a whole; and its parent is writable."""
    path = Path(out)
    if os.path.lexists(path) and not path.is_dir():
        raise UserError(f"{flag} {out} is a file, not a folder: choose a new folder name.")
    if path.is_dir() and not overwrite:
        entries = list(path.iterdir())
        if entries:
            holds = "a checkpoint" if (path / "config.json").exists() else \
                f"{len(entries)} entr{'y' if len(entries) == 1 else 'ies'}"
            raise UserError(f"{flag} {out} is not empty (it holds {holds}): choose a new or empty folder, or "
                            f"{OVERWRITE_HINT} to replace that folder as a whole.")
    _check_nearest_folder(Path(os.path.abspath(path)).parent, out, flag)


def read_json(path: str | Path) -> Any:
    """A JSON file's content, with NaN and Infinity (which Python's json accepts) refused as a ValueError.
    Raises OSError, or a ValueError (json.JSONDecodeError, UnicodeDecodeError) for a damaged file; callers
    name the file in the error they raise."""
    def refuse(literal: str):
        raise ValueError(f"it holds {literal}, which is not a number JSON allows: write a finite number")

    return json.loads(read_text(path), parse_constant=refuse)


def read_json_named(path: str | Path, fix: str) -> Any:
    """`read_json`, with a damaged file (not UTF-8, not valid JSON, NaN or Infinity) one error naming the file
    and line, and `fix` (what to do) after it."""
    try:
        return read_json(path)
    except UserError:
        raise
    except json.JSONDecodeError as err:
        raise UserError(f"{path}:{err.lineno}: not valid JSON ({err.msg}); {fix}") from None
    except ValueError as err:
        raise UserError(f"{path}: {err}; {fix}") from None


def _not_utf8(path: Path, line: int, err: UnicodeDecodeError) -> UserError:
    byte = err.object[err.start:err.start + 1].hex()
    return UserError(f"{path}:{line}: not UTF-8 text (byte 0x{byte}); save the file as UTF-8.")


def read_text(path: str | Path) -> str:
    """A UTF-8 text file (a byte-order mark is accepted); other bytes are an error naming the file and line."""
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise _not_utf8(Path(path), data[:err.start].count(b"\n") + 1, err) from None


def text_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """(number from 1, text) of each line of a UTF-8 text file (a byte-order mark is accepted), read one at a
    time; a line that is not UTF-8 is an error naming the file and line."""
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, 1):
            try:
                yield number, line.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as err:
                raise _not_utf8(Path(path), number, err) from None
