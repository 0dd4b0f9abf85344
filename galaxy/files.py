"""Files written whole or not at all: a hidden temporary file beside the destination, renamed over it.
Also the two questions every command asks of the files it is given: is it there (`require_file`), and
is it one of the others (`same_file`)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

from galaxy.errors import ImageReadError


def write_atomically(path, write):
    """Write `path` through a hidden temporary file beside it, renamed over it once `write` is done.

    A failed write (a full disk, a failed export check) or Ctrl-C leaves the previous file as it was
    and no temporary file. The temporary file is created before `write` runs, so a folder that cannot
    be written fails before `write`'s work (an export takes a minute).

    Args:
        path: the destination.
        write: called with the temporary file's path; writes the whole content there.

    Returns:
        What `write` returned.

    Raises:
        OSError: the destination cannot be written (a folder stands there, a read-only folder, a full
            disk); it names `path`, never the temporary file.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        if path.is_dir():
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
        tmp.open("wb").close()
        result = write(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        if exc.strerror and exc.filename in (None, str(tmp)):  # a full disk's error names no file
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        raise
    finally:
        if os.path.lexists(tmp):  # unlink(missing_ok=True) raises on a read-only file system
            tmp.unlink()
    return result


def write_whole(path, data: bytes) -> Path:
    """Write `data` to `path` whole or not at all (`write_atomically`), making its folder; return the path.

    Raises:
        OSError: naming `path`, not the temporary file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, lambda tmp: tmp.write_bytes(data))
    return path


def require_file(path, what: str = "") -> None:
    """Refuse an input file that is not there, in the words every reader uses (each had worded it its
    own way: "not a readable FITS file ([Errno 2] ...)"). `what`: which file of a galaxy it is.

    Raises:
        ImageReadError: no such file (a dangling link said so), or the system's reason (a link loop).
    """
    path = Path(path)
    try:
        path.stat()
    except FileNotFoundError:
        raise ImageReadError(path, "no such file" + (f" ({what})" if what else "")
                             + (" (a dangling symbolic link)" if path.is_symlink() else "")) from None
    except OSError as exc:  # a symbolic-link loop, a permission on a folder above
        raise ImageReadError(path, exc.strerror or str(exc)) from None


def same_file(a, b) -> bool:
    """Whether paths `a` and `b` name one file (links and other spellings included); where one is not
    there (yet), whether they would."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return Path(a).resolve() == Path(b).resolve()
