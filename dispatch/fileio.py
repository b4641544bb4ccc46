"""Atomic output files: a write that fails half way leaves the earlier file as it was and no partial file.

Every writer (`--json`, `--outputs`, `--save-plan`, `--trace`, `--dot`, `--annotate`, calibration profiles)
goes through `atomic_output`: the bytes go to a temporary file in the target's own folder (so the final
rename never crosses a file system), which is flushed and fsynced, then renamed over the target with
`os.replace` (atomic on POSIX and Windows). On any error the temporary file is removed and an OSError becomes
one DispatchError sentence naming the file.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from dispatch.errors import DispatchError

__all__ = ["atomic_output", "write_text", "write_bytes", "same_file"]


def _mode_for(p: Path) -> int:
    """Keep an existing file's permissions; a new file gets 0o666 less the umask, as open() would give."""
    try:
        return p.stat().st_mode & 0o7777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str], what: str = "the file") -> Iterator[BinaryIO]:
    """Yield a binary file object; on a clean exit its bytes replace `path` in one rename.

    `what` names the output in the error sentence ("the report", "the trace" ...).
    """
    p = Path(path)
    tmp: str | None = None
    try:
        fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _mode_for(p))
        os.replace(tmp, p)
        tmp = None
    except OSError as e:
        reason = e.strerror or type(e).__name__
        raise DispatchError(f"Cannot write {what} to {str(p)!r} ({reason}); the earlier file, if any, is "
                            "unchanged: choose a writable path or free some space.") from None
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def write_bytes(path: str | os.PathLike[str], data: bytes, what: str = "the file") -> Path:
    with atomic_output(path, what) as f:
        f.write(data)
    return Path(path)


def write_text(path: str | os.PathLike[str], text: str, what: str = "the file") -> Path:
    return write_bytes(path, text.encode("utf-8"), what)


def same_file(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """True when `a` and `b` name one file (the same inode, or the same resolved path when one is missing)."""
    pa, pb = Path(a), Path(b)
    try:
        return pa.samefile(pb)
    except OSError:
        return pa.resolve() == pb.resolve()
