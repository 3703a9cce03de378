"""Atomic writes of files and folders, so that a kill at any instant leaves the previous good one.

A file is written to a hidden sibling ``.NAME.partial-PID.SUFFIX``, fsynced, then renamed over the destination
(``os.replace``: atomic within one file system); a folder is built as ``.NAME.partial-PID`` and renamed into
place (:func:`staged_folder`). An OSError naming no file (a full disk) is raised again naming the destination.
What a kill leaves is removed by the next run (:func:`remove_partial_files`, :func:`staged_folder`).

:func:`kill_point` is the fault-injection hook of ``tests/test_kill.py``: with ``KERAS_RETINANET_KILL_AT=NAME``
(or ``NAME@N``: the N-th time) the process SIGKILLs itself at the point ``NAME`` (``last.keras:written``,
``last.keras:renamed``).
"""

from __future__ import annotations

import collections
import contextlib
import errno
import json
import logging
import os
import shutil
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

KILL_ENV = "KERAS_RETINANET_KILL_AT"
PARTIAL_MARK = ".partial-"

_reached: collections.Counter = collections.Counter()


def kill_point(name: str) -> None:
    """SIGKILLs this process if ``$KERAS_RETINANET_KILL_AT`` names this point (``NAME`` or ``NAME@N``)."""
    target = os.environ.get(KILL_ENV)
    if not target:
        return
    wanted, _, count = target.partition("@")
    if wanted != name:
        return
    _reached[name] += 1
    if _reached[name] == int(count or 1):
        sys.stdout.flush()
        sys.stderr.flush()
        os.kill(os.getpid(), getattr(signal, "SIGKILL", signal.SIGTERM))


def partial_path(path: str | os.PathLike) -> Path:
    """The temporary name of ``path``: same folder and suffixes (Keras checks ``.keras`` / ``.weights.h5``),
    hidden, marked with this process's id: ``dir/model.keras`` -> ``dir/.model.partial-4242.keras``."""
    path = Path(path)
    stem, dot, suffixes = path.name.partition(".")
    return path.with_name(f".{stem}{PARTIAL_MARK}{os.getpid()}{dot}{suffixes}")


def _fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


@contextlib.contextmanager
def replacing(path: str | os.PathLike) -> Iterator[Path]:
    """``with replacing("dir/x.keras") as temporary: model.save(temporary)``: what the block writes to
    ``temporary`` replaces ``path`` atomically if it ends without an exception."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = partial_path(path)
    try:
        yield temporary
        _fsync(temporary)
        kill_point(f"{path.name}:written")
        os.replace(temporary, path)
    except BaseException as error:
        with contextlib.suppress(OSError):
            temporary.unlink()
        _raise_naming(error, path)
        raise
    with contextlib.suppress(OSError):  # Windows cannot open folders for fsync; the rename is atomic there
        _fsync(path.parent)
    kill_point(f"{path.name}:renamed")


def _raise_naming(error: BaseException, path: Path) -> None:
    """Raises an OSError that names no file again naming ``path``: a full disk (also h5py's, which carries the
    errno only in its text), a read-only file system, a quota."""
    if not isinstance(error, OSError) or error.filename is not None:
        return
    if error.errno == errno.ENOSPC or "No space left on device" in str(error):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)) from error
    if error.errno is not None:
        raise OSError(error.errno, error.strerror or os.strerror(error.errno), str(path)) from error


def write_text(path: str | os.PathLike, text: str) -> None:
    """Replaces ``path`` with ``text`` (UTF-8) atomically."""
    with replacing(path) as temporary:
        temporary.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike, value: Any) -> None:
    """Replaces ``path`` with ``value`` as indented JSON, atomically (NaN and infinities as JSON5 words,
    which Python's ``json`` reads back)."""
    write_text(path, json.dumps(value, indent=2, default=_plain) + "\n")


def _plain(value: Any) -> Any:
    """numpy scalars and arrays, as ``json.dumps`` needs them."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def save_model(model, path: str | os.PathLike) -> None:
    """``model.save(path)`` (a ``.keras`` file, optimiser state included), atomically."""
    with replacing(path) as temporary:
        model.save(temporary)


def save_weights(model, path: str | os.PathLike) -> None:
    """``model.save_weights(path)`` (a ``.weights.h5`` file: weights and optimiser state), atomically."""
    with replacing(path) as temporary:
        model.save_weights(temporary)


def remove_partial_files(*folders: str | os.PathLike) -> list[Path]:
    """Deletes (and returns) the temporary files killed writers left in ``folders`` (not recursive); only while
    no other process writes there (``train`` holds the run folder's lock)."""
    removed = []
    for folder in folders:
        folder = Path(folder)
        if not folder.is_dir():
            continue
        for path in folder.glob(f".*{PARTIAL_MARK}*"):
            if path.is_file():
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                removed.append(path)
    return removed


class FolderInUseError(RuntimeError):
    """Another process holds the folder's lock (a second run into the same output folder)."""


@contextlib.contextmanager
def locked_folder(path: str | os.PathLike, lock_name: str, what: str) -> Iterator[Path]:
    """Creates ``path`` and holds ``path/lock_name`` (an exclusive ``flock``, released by the kernel when the
    process ends) for the block; a second process gets :class:`FolderInUseError` naming ``what`` holds it and
    its process id. (No lock without ``fcntl``, i.e. on Windows.)"""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:
        yield path
        return
    with open(path / lock_name, "a+") as file:
        try:
            fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            file.seek(0)
            owner = file.read().strip() or "unknown"
            raise FolderInUseError(
                f"{path} is in use by {what} (process {owner}): wait for it to end, or choose another output folder"
            ) from None
        file.seek(0)
        file.truncate()
        file.write(f"{os.getpid()}\n")
        file.flush()
        try:
            yield path
        finally:
            fcntl.flock(file.fileno(), fcntl.LOCK_UN)


def require_free_folder(path: str | os.PathLike, option: str, ignore: tuple[str, ...] = ()) -> None:
    """Raises FileExistsError if ``path`` holds files (other than ``ignore``): the command's output would
    replace some of them. ``option`` names the flag in the message (``--out``)."""
    path = Path(path)
    held = sorted(p.name for p in path.iterdir() if p.name not in ignore) if path.is_dir() else []
    if held:
        raise FileExistsError(
            f"{option} {path} already holds {len(held)} file(s) (e.g. {held[0]}) that this run could replace: "
            "choose a new folder, or pass --overwrite"
        )


def _leftovers(path: Path) -> list[tuple[str, int, Path]]:
    """(kind, pid, folder) of the ``.NAME.partial-PID*`` and ``.NAME.old-PID`` siblings of ``path`` whose
    process is gone (a running writer's folders are left alone)."""
    found = []
    for sibling in sorted(path.parent.glob(f".{path.name}.*")) if path.parent.is_dir() else []:
        kind, _, rest = sibling.name[len(path.name) + 2 :].partition("-")
        pid = rest.split("-")[0]
        if kind in ("partial", "old") and pid.isdigit() and not process_alive(int(pid)):
            found.append((kind, int(pid), sibling))
    return found


def recover_interrupted_swap(path: str | os.PathLike, complete: Callable[[Path], bool]) -> str | None:
    """Finishes or undoes a :func:`staged_folder` ``replace`` that a kill interrupted between its two renames
    (no ``path``, the old folder in ``.NAME.old-PID``): the new folder moves into place if ``complete(new)``,
    else the old one is put back. Returns what was done (None: nothing to recover)."""
    path = Path(path).resolve()
    if path.exists():
        return None
    leftovers = _leftovers(path)
    for kind, pid, old in leftovers:
        if kind != "old":
            continue
        new = [folder for k, p, folder in leftovers if k == "partial" and p == pid and complete(folder)]
        if new:
            new[0].rename(path)
            shutil.rmtree(old, ignore_errors=True)
            return f"{path}: finished the move of a folder whose writer was killed after it was complete"
        old.rename(path)
        return f"{path}: put back the previous folder (the one that was replacing it did not finish)"
    return None


@contextlib.contextmanager
def staged_folder(
    path: str | os.PathLike, replace: bool = False, complete: Callable[[Path], bool] | None = None
) -> Iterator[Path]:
    """``with staged_folder("out/report") as staging: write(staging)``: the block writes into a hidden sibling
    ``.report.partial-PID``, which then becomes ``path`` in one rename. A folder with files gets the new files
    moved over its own, or with ``replace`` is swapped whole through ``.report.old-PID``. A kill leaves ``path``
    as it was, or (mid-swap) no ``path``: the next call with ``complete`` (whether a staged folder is whole)
    finishes or undoes the swap (:func:`recover_interrupted_swap`) and removes what gone writers left."""
    path = Path(path).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    done = recover_interrupted_swap(path, complete) if complete is not None else None
    if done:
        logging.getLogger(__name__).warning("%s", done)
    for _, _, stale in _leftovers(path):
        shutil.rmtree(stale, ignore_errors=True)
    staging = path.with_name(f".{path.name}{PARTIAL_MARK}{os.getpid()}")
    backup = path.with_name(f".{path.name}.old-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        yield staging
        kill_point(f"{path.name}:staged")
        if path.is_dir() and not any(path.iterdir()):
            path.rmdir()
        if path.exists() and replace:
            path.rename(backup)
            kill_point(f"{path.name}:old-moved")
        if not path.exists():
            os.replace(staging, path)
        else:
            for source in sorted(staging.rglob("*")):
                target = path / source.relative_to(staging)
                if source.is_dir():
                    target.mkdir(exist_ok=True)
                else:
                    os.replace(source, target)
        shutil.rmtree(backup if backup.exists() else staging, ignore_errors=True)
    except BaseException as error:
        if backup.exists() and not path.exists():
            backup.rename(path)  # the new folder did not make it: the old one stays
        shutil.rmtree(staging, ignore_errors=True)
        _raise_naming(error, path)
        raise


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` still runs (on this machine)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
