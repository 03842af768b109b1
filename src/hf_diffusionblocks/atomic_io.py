"""Atomic writes, and the temporaries a killed process leaves behind.

Every file or folder the library writes is first written under a hidden temporary name next to its
destination and renamed into place, so a reader (or a process of a block-parallel launch) never sees
a half-written file. A process killed mid-write leaves its temporary behind; each temporary's name
carries its owner, `.owner-<host>-<pid>.`, so the next run can tell a temporary whose process is
gone (removed, and logged) from one that another live process is still writing (left alone).
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import logging
import os
import re
import shutil
import socket
import tempfile
from typing import Any, Callable, Iterator

logger = logging.getLogger(__name__)

_OWNER_PATTERN = re.compile(r"\.owner-(?P<host>[A-Za-z0-9_-]+)-(?P<pid>\d+)\.")


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname()) or "localhost"


def owner_tag() -> str:
    """`.owner-<host>-<pid>.`: the part of a temporary's name that says which process writes it."""
    return f".owner-{_host()}-{os.getpid()}."


def _current_umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def make_staging_folder(directory: str, name: str) -> str:
    """A fresh hidden folder `.<name><owner>…` in `directory`, with the usual permissions (mkdtemp makes 0700)."""
    os.makedirs(directory, exist_ok=True)
    staging = tempfile.mkdtemp(dir=directory, prefix=f".{name}{owner_tag()}", suffix=".tmp")
    os.chmod(staging, 0o777 & ~_current_umask())
    return staging


def _process_is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(directory: str | os.PathLike) -> list[str]:
    """Remove the temporaries in `directory` (not below it) whose writing process has died; return their paths.

    Only temporaries written on this host by a process that no longer exists are removed; those of live
    processes, or of other hosts sharing the folder, are left alone (the latter with a warning).
    """
    directory = str(directory)
    if not os.path.isdir(directory):
        return []
    removed = []
    for name in sorted(os.listdir(directory)):
        match = _OWNER_PATTERN.search(name) if name.startswith(".") else None
        if match is None:
            continue
        path = os.path.join(directory, name)
        if match["host"] != _host():
            logger.warning("%s was left by host %s (process %s); not removed from here.", path, match["host"], match["pid"])
            continue
        if _process_is_alive(int(match["pid"])):
            continue
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.remove(path)
        removed.append(path)
        logger.info("removed %s, left by a process (pid %s) that was killed while writing.", path, match["pid"])
    return removed


def remove_stale_temporaries_below(root: str | os.PathLike) -> list[str]:
    """`remove_stale_temporaries` in `root` and every folder below it (a run's output folder)."""
    removed = []
    for directory, subdirectories, _ in os.walk(str(root)):
        removed += remove_stale_temporaries(directory)
        subdirectories[:] = [name for name in subdirectories if os.path.isdir(os.path.join(directory, name))]
    return removed


def atomic_write(path: str | os.PathLike, write: Callable[[str], object]) -> None:
    """Call `write(temporary_path)` then rename onto `path` (atomic on POSIX)."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}{owner_tag()}", suffix=".tmp")
    os.close(handle)
    try:
        write(temporary)
        os.chmod(temporary, 0o666 & ~_current_umask())  # mkstemp creates 0600; give the usual mode
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


@contextlib.contextmanager
def _staging_folder(directory: str, name: str) -> Iterator[str]:
    """A fresh staging folder in `directory` (see `make_staging_folder`), removed when the block exits, whether
    its content was renamed away or the block failed."""
    staging = make_staging_folder(directory, name)
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike, overwrite: bool = False) -> Iterator[str]:
    """Yield a staging folder next to `path` to write a whole folder into; when the block exits without an
    error, the staging folder is renamed onto `path` in one step, so `path` is either absent (or as it was) or
    complete. On an error the staging folder is removed and `path` is left untouched.

    An existing `path` is replaced: with `overwrite=True` whatever it holds, otherwise only an empty folder
    (an `OSError` for a non-empty one, so nothing a caller did not mean to replace is lost).
    """
    path = os.path.abspath(str(path))
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    with _staging_folder(parent, os.path.basename(path)) as staging:
        yield staging
        if os.path.isdir(path):
            if overwrite:
                shutil.rmtree(path)
            else:
                os.rmdir(path)
        os.replace(staging, path)


def atomic_save_folder(directory: str | os.PathLike, save: Callable[[str], None], last: tuple[str, ...] = ()) -> None:
    """Call `save(staging)` on a fresh staging folder inside `directory`, then rename every file it wrote into
    place (atomic per file) and remove the staging folder.

    For folders that processes of a block-parallel launch write while others read: a reader never sees a
    half-written file. Files matching the name patterns of `last` (e.g. the `tokenizer_config.json` or
    `model_index.json` that readers test for) arrive after all the others, in the order of `last`, so once a
    reader sees them the folder is complete. Staging folders of killed processes found in `directory` are
    removed first.
    """
    directory = str(directory)
    remove_stale_temporaries(directory)
    with _staging_folder(directory, "saving") as staging:
        save(staging)
        written = [os.path.relpath(os.path.join(root, name), staging) for root, _, names in os.walk(staging) for name in names]
        for relative in sorted(written, key=lambda path: (_arrival_rank(os.path.basename(path), last), path)):
            target = os.path.join(directory, relative)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            os.replace(os.path.join(staging, relative), target)


def read_json_file(path: str | os.PathLike) -> Any:
    """The JSON content of `path`; a `ValueError` naming the file when it is not valid JSON."""
    try:
        with open(path, encoding="utf-8") as file:
            return json.load(file)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON: {error}.") from None
    except UnicodeDecodeError as error:
        raise ValueError(f"{path} is not UTF-8 text: {error}.") from None


def _arrival_rank(name: str, last: tuple[str, ...]) -> int:
    """0 for files with no place in `last`; otherwise 1 + the index of the first pattern of `last` they match."""
    return next((index + 1 for index, pattern in enumerate(last) if fnmatch.fnmatchcase(name, pattern)), 0)


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> None:
    """Write `text` to `path` atomically."""

    def write(temporary: str) -> None:
        with open(temporary, "w", encoding=encoding) as file:
            file.write(text)

    atomic_write(path, write)


def atomic_write_json(path: str | os.PathLike, payload: Any) -> None:
    """Write `payload` as indented, key-sorted JSON to `path` atomically."""
    def write(temporary: str) -> None:
        with open(temporary, "w", encoding="utf-8") as file:
            json.dump(payload, file, indent=2, sort_keys=True)
            file.write("\n")

    atomic_write(path, write)
