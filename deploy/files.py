"""Atomic file writes for what ``deploy`` produces (``policy.onnx``, ``sim2sim.json``, ``sim2sim.png``).

Imports the standard library only: it runs on the robot computer as well as in training.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["default_mode", "write_atomic"]


def default_mode() -> int:
    """The mode an ordinary ``open(path, "w")`` gives a new file: ``0o666`` less the process umask.

    The umask can only be read by setting it; it is set back at once (a thread creating a file in
    that instant would see ``0o022``, the usual umask anyway).
    """
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def write_atomic(path, data: bytes, *, overwrite: bool = False) -> Path:
    """Write ``data`` to ``path`` all at once: readers see the old file or the whole new one, never a part.

    The bytes go to a temporary file beside ``path`` (flushed and fsynced), which is given the normal
    file mode (:func:`default_mode`; ``tempfile.mkstemp`` alone would leave it ``0600``) and then
    linked (no ``overwrite``: atomic and never clobbers) or renamed (``overwrite``) into place.
    Parent folders are created; no temporary file is left behind, whatever fails.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is false (nothing is changed).
        IsADirectoryError: ``path`` is a directory.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a directory; give a file path")
    exists = f"{path} exists; pass overwrite=True (--overwrite) to replace it"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), default_mode())
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)  # atomic and never clobbers
            except FileExistsError:
                raise FileExistsError(exists) from None
            except OSError:  # a filesystem without hard links
                if path.exists():
                    raise FileExistsError(exists) from None
                os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
