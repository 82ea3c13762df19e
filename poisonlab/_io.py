"""Files written whole or not at all."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .errors import RunError


def atomic_write(path: Path, text: str | bytes) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over ``path``.

    ``path`` is either left as it was or replaced whole, whatever happens (a full disk, an
    interrupt); the temporary file is removed. An OS error (disk full, no permission)
    raises :class:`~poisonlab.errors.RunError` naming the file.
    """
    data = text.encode() if isinstance(text, str) else text
    tmp: str | None = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise RunError(f"{str(path)!r} cannot be written ({e.strerror or e}): it was "
                           "left as it was") from None
        raise
