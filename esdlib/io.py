"""Atomic file writes shared by records, checkpoints, data caches and executed notebooks.

JSON files (run and benchmark records, data splits, cache descriptions) are all written by
:func:`atomic_write_json`.

Every writer in esdlib goes through :func:`atomic_open` (or, for files written by another
library, :func:`temp_path_for` + :func:`commit_temp`):

- the data go to a hidden temporary file ``.<name>.<host>-<pid>.<random><suffix>`` in the
  target's folder, are flushed and fsync-ed, get the permissions an ordinary ``open()`` would
  give a new file (``0o666`` minus the process umask; :func:`mkstemp` alone gives ``0600``) and
  are then moved over the target with :func:`os.replace` — a reader never sees a torn file and a
  failed or killed writer never damages the previous one;
- a killed writer leaves its temporary file behind; the next write of the same target removes
  the temporary files of that target whose writer is gone (:func:`remove_stale_temps`) — only
  files of our own naming pattern, only in the target's folder, and never a file of a process
  that is still running (concurrent writers are safe);
- "no space left on device" is reported as such, naming the file (:class:`DiskFullError`).

This module imports nothing from esdlib (the data readers use it too).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

__all__ = [
    "DiskFullError",
    "atomic_open",
    "atomic_write_json",
    "atomic_write_text",
    "commit_temp",
    "dumps_one_key_per_line",
    "file_mode",
    "remove_stale_temps",
    "temp_path_for",
]

STALE_FOREIGN_TEMP_S = 24 * 3600
"""Age after which a temporary file of another host (or of the old naming scheme) counts as
abandoned: its writer cannot be checked from here."""


class DiskFullError(OSError):
    """A write failed because the file system is full (``ENOSPC``/``EDQUOT``); names the file."""


def _host_tag() -> str:
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:6]


def _umask() -> int:
    """The process umask, read without changing it where Linux allows (``/proc``)."""
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    mask = os.umask(0o022)  # portable fallback: read by setting, then restore at once
    os.umask(mask)
    return mask


def file_mode() -> int:
    """Permissions of a newly created file: ``0o666`` minus the process umask."""
    return 0o666 & ~_umask()


def temp_path_for(path: str | os.PathLike, suffix: str = ".tmp") -> Path:
    """Create an empty hidden temporary file beside ``path`` and return its path.

    The name is ``.<name>.<host>-<pid>.<random><suffix>``; the host and process id let
    :func:`remove_stale_temps` tell an abandoned file from one still being written. Stale
    temporary files of the same target are removed first. Parent folders are created.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path, suffix)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.{_host_tag()}-{os.getpid()}.",
                                suffix=suffix, dir=path.parent)
    os.close(fd)
    return Path(name)


def commit_temp(tmp: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Give ``tmp`` the permissions of a new file (umask) and move it over ``path`` atomically;
    the folder is fsync-ed so the rename survives a power loss."""
    tmp, path = Path(tmp), Path(path)
    with contextlib.suppress(OSError):
        os.chmod(tmp, file_mode())
    os.replace(tmp, path)
    _fsync_dir(path.parent)
    return path


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. PermissionError: it exists, owned by someone else
        return True
    return True


def remove_stale_temps(path: str | os.PathLike, suffix: str = ".tmp") -> list[Path]:
    """Remove abandoned temporary files of ``path`` left by killed writers.

    Only hidden files named ``.<name>.<...><suffix>`` in ``path``'s folder are considered:
    a file of this host whose process is gone is removed; a file of another host, or of the
    older naming scheme without a process id, only when it is older than
    :data:`STALE_FOREIGN_TEMP_S`. Errors (a file removed concurrently, a read-only folder) are
    ignored.

    Returns:
        The files removed.
    """
    path = Path(path)
    prefix = f".{path.name}."
    host = _host_tag()
    pattern = re.compile(r"(?:([0-9a-f]{6})-(\d+)\.)?[A-Za-z0-9_]+" + re.escape(suffix))
    removed = []
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return removed
    now = time.time()
    for entry in entries:
        name = entry.name
        if not name.startswith(prefix) or not name.endswith(suffix):
            continue
        m = pattern.fullmatch(name[len(prefix):])
        if m is None:
            continue
        try:
            if m.group(1) == host:
                stale = int(m.group(2)) != os.getpid() and not _pid_alive(int(m.group(2)))
            else:
                stale = now - entry.stat(follow_symlinks=False).st_mtime > STALE_FOREIGN_TEMP_S
            if stale and entry.is_file(follow_symlinks=False):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
        except OSError:
            continue
    return removed


def _is_disk_full(err: BaseException) -> bool:
    return isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT)


@contextlib.contextmanager
def atomic_open(
    path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8"
) -> Iterator[IO]:
    """Open a temporary file that atomically replaces ``path`` when the block exits.

    The data go to a hidden temporary file in the same folder (see the module docstring),
    which is flushed, fsync-ed, given the umask's permissions and moved over ``path``. If the
    block raises, the temporary file is deleted and ``path`` is untouched; if the process is
    killed, ``path`` is untouched and the temporary file left behind is removed by the next
    write of ``path``. Concurrent writers each replace ``path`` with a complete file (last one
    wins). Parent folders are created. A full disk raises :class:`DiskFullError` naming
    ``path``.

    Args:
        path: Destination file.
        mode: ``"w"`` (text) or ``"wb"`` (binary).
        encoding: Text encoding (ignored in binary mode).

    Yields:
        The open temporary file.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open mode must be 'w' or 'wb', got {mode!r}")
    path = Path(path)
    try:
        tmp = temp_path_for(path)  # no free inode (ENOSPC) fails here already
    except OSError as err:
        if _is_disk_full(err):
            raise DiskFullError(err.errno,
                                f"no space left on device while writing {path}") from err
        raise
    try:
        try:
            with open(tmp, mode, encoding=None if "b" in mode else encoding) as f:
                yield f
                f.flush()
                os.fsync(f.fileno())
            commit_temp(tmp, path)
        except OSError as err:
            if _is_disk_full(err):
                raise DiskFullError(err.errno,
                                    f"no space left on device while writing {path}") from err
            raise
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _fsync_dir(directory: Path) -> None:
    """Persist a rename (POSIX); a no-op where folders cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_open`).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    with atomic_open(path, "w", encoding=encoding) as f:
        f.write(text)
    return Path(path)


def dumps_one_key_per_line(obj: dict[str, Any]) -> str:
    """JSON text of a flat dict with one top-level key per line (lists stay on their line).

    Args:
        obj: Dict of JSON-serialisable values.

    Returns:
        The JSON text, ending in a newline; ``json.loads`` of it equals ``obj``.
    """
    lines = [f" {json.dumps(k)}: {json.dumps(v)}" for k, v in obj.items()]
    return "{\n" + ",\n".join(lines) + "\n}\n"


def atomic_write_json(path: str | os.PathLike, obj: Any, *, indent: int | None = 2,
                      one_key_per_line: bool = False) -> Path:
    """Serialise ``obj`` as JSON and write it atomically (see :func:`atomic_open`).

    The object is serialised completely before the file is touched, so an unserialisable
    object raises without writing anything.

    Args:
        path: Final file path; its folder is created if needed.
        obj: JSON-serialisable object. In the default layout it must be strict JSON (a NaN or
            infinity raises ``ValueError``).
        indent: Indentation of the default layout (``None``: one line).
        one_key_per_line: Write a flat dict with one top-level key per line instead
            (:func:`dumps_one_key_per_line`; the committed data-split files use it, since a
            split's long index lists stay on one line each).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    if one_key_per_line:
        text = dumps_one_key_per_line(obj)
    else:
        text = json.dumps(obj, indent=indent, ensure_ascii=False, allow_nan=False) + "\n"
    return atomic_write_text(path, text)
