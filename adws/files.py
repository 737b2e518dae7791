"""Writing a file so that a crash at any instant leaves the old content or
the new, never half of either: a temporary file in the same folder (a
rename is only atomic within one file system), fsynced, renamed over the
old one, and the folder fsynced so the rename survives a power cut.
Every state file the daemon writes goes through here.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from typing import Callable, Optional


def write_atomic(path, data: bytes, mode: Optional[int] = None,
                 still_ours: Optional[Callable[[], bool]] = None) -> bool:
    """Replace `path` with `data`. `still_ours`, if given, is asked just
    before the rename; when it says False (someone else wrote the file
    meanwhile) nothing is replaced and the result is False."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        if still_ours is not None and not still_ours():
            return False
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)            # still there unless os.replace() ran
    fsync_dir(folder)
    return True


def fsync_dir(directory: str) -> None:
    """Make a rename or a new file durable across power loss."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:  # deliberate: some filesystems refuse fsync on a directory
        pass
    finally:
        os.close(fd)
