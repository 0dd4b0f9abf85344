"""Files written whole or not at all: a hidden temporary file beside the destination, renamed over it.
Also the questions every command asks of the files it is given and the folders it writes: is it there
(`require_file`), is it one of the others (`same_file`), can anything be written there (`writable_folder`)."""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import stat
import tempfile
import time
from pathlib import Path

from galaxy.errors import ImageReadError, UsageError

log = logging.getLogger(__name__)


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
    sweep_stale_temporaries(path)
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


# A temporary file of `write_atomically` older than this whose process is gone here was left by a kill -9
# (a 108 MB checkpoint, an ONNX export): every write it could belong to takes seconds to a minute, and
# the age keeps a live writer on another host of a shared file system (its pid means nothing here) safe.
STALE_SECONDS = 3600


def sweep_stale_temporaries(path) -> None:
    """Remove the temporary files `write_atomically` left beside `path` when a process was killed
    (`.NAME.PID.tmp` of a PID not running here, untouched for STALE_SECONDS); they were never removed."""
    path = Path(path)
    prefix = f".{path.name}."
    sweep_stale_work_files(path.parent, prefix, lambda rest: rest[:-len(".tmp")] if rest.endswith(".tmp") else "")


def sweep_stale_work_files(folder, prefix: str, pid_of=lambda rest: rest.split(".", 1)[0]) -> None:
    """Remove the work files of killed processes in `folder`: names `prefix` + a part whose PID
    (`pid_of(rest)`, by default its digits up to the first dot: `.model.int8.1234.pre.onnx`) is not
    running here, untouched for STALE_SECONDS (a kill -9 during an int8 build left ~21 MB each time)."""
    folder, now = Path(folder), time.time()
    try:  # names only (a --ray folder holds thousands of parts: no Path object per entry)
        with os.scandir(folder) as entries:
            candidates = [e.name for e in entries if e.name.startswith(prefix)]
    except OSError:  # no folder yet, or one that cannot be listed: the write itself says so
        return
    for name in candidates:
        pid = pid_of(name[len(prefix):])
        if not pid.isdigit() or int(pid) == os.getpid() or _running(int(pid)):
            continue
        candidate = folder / name
        try:
            if now - candidate.lstat().st_mtime > STALE_SECONDS:
                candidate.unlink()
                log.info("removed %s, left by a process that was killed", candidate)
        except OSError as exc:  # gone already, or not ours to remove: the write goes on either way
            log.debug("left %s (%s)", candidate, exc.strerror or exc)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: running too
        pass
    return True


def remove_quietly(*paths) -> None:
    """Remove the temporary files a failed step may have left; one that cannot be removed (a read-only
    file system, where it was never made) is left, so the step's own error is the one raised."""
    for path in paths:
        try:
            Path(path).unlink(missing_ok=True)
        except OSError as exc:
            log.debug("left %s (%s)", path, exc.strerror or exc)


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
    """Refuse an input file that is not there, or not a regular file, in the words every reader uses
    (each had worded it its own way: "not a readable FITS file ([Errno 2] ...)"). `what`: which file
    of a galaxy it is.

    Raises:
        ImageReadError: no such file (a dangling link said so), the system's reason (a link loop), a
            folder (one that cannot be listed says why), a FIFO, socket or device.
    """
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise ImageReadError(path, "no such file" + (f" ({what})" if what else "")
                             + (" (a dangling symbolic link)" if path.is_symlink() else "")) from None
    except OSError as exc:  # a symbolic-link loop, a permission on a folder above
        raise ImageReadError(path, exc.strerror or str(exc)) from None
    if stat.S_ISDIR(mode):
        try:  # a folder listed as an input is one whose listing failed (or a symlinked folder named x.jpeg)
            os.listdir(path)
        except OSError as exc:
            raise ImageReadError(path, f"a folder that cannot be listed ({exc.strerror}): the images in it "
                                 "were not classified") from None
        raise ImageReadError(path, "is a folder, not an image file")
    if not stat.S_ISREG(mode):  # reading a FIFO blocks for ever, a device may never end
        kind = "a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device"
        raise ImageReadError(path, f"not a regular file ({kind})" + (f" ({what})" if what else ""))


def writable_folder(folder, what: str) -> Path:
    """Make `folder` (and the folders above it) and prove that a file can be written in it, before any
    work: a folder that cannot be written had failed only after every image was scored. The proof is a
    nameless temporary file, because `os.access` says yes to root everywhere (/proc, /sys, a read-only
    mount). `what`: the words the message starts with ("cannot write catalog.csv", "output folder X").

    Raises:
        UsageError: a file stands where a folder should, or the folder cannot be made or written in,
            naming it and the system's reason.
    """
    folder = Path(folder)
    for above in (folder, *folder.absolute().parents):
        if above.exists():
            if not above.is_dir():
                raise UsageError(f"{what}: {above} is a file, not a folder")
            break
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"{what}: the folder {folder} cannot be made ({exc.strerror})") from None
    try:
        with tempfile.TemporaryFile(dir=folder, prefix=".galaxy-probe-"):
            pass
    except OSError as exc:
        raise UsageError(f"{what}: nothing can be written in {folder} ({exc.strerror})") from None
    return folder


def free_bytes(folder) -> int | None:
    """The space left on `folder`'s file system in bytes, or None where it cannot be read."""
    import shutil

    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def same_file(a, b) -> bool:
    """Whether paths `a` and `b` name one file (links and other spellings included); where one is not
    there (yet), whether they would."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return Path(a).resolve() == Path(b).resolve()


def hold_lock(path, held_by_another: str):
    """Open `path` and hold an exclusive lock on it for as long as the returned file stays open.

    Raises:
        UsageError: another process holds it (`held_by_another` says who, the lock's path is added).
        FileNotFoundError: the folder is not there.
    """
    lock = open(path, "a+")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise UsageError(f"{held_by_another} (lock {path})") from None
    except OSError as exc:  # a file system without locks (Lustre without flock, NFS mounted nolock): ENOLCK,
        # ENOSYS, EOPNOTSUPP; said, and the run goes on unguarded (it had ended in a traceback)
        log.warning("cannot lock %s (%s: the file system has no locks): nothing stops a second run from writing "
                    "the same output at the same time", path, exc.strerror or exc)
    return lock


def sync_to_disk(*paths) -> None:
    """fsync each existing file of `paths`, then the folders holding them (so their renames are on
    disk too): before a journal whose rows they hold is deleted, so a power cut cannot leave neither."""
    folders = set()
    for path in map(Path, paths):
        if path.is_file():
            with open(path, "rb") as fh:
                os.fsync(fh.fileno())
            folders.add(path.parent)
    for folder in folders:  # best effort: some file systems (FUSE, network mounts) refuse to sync a folder
        try:
            fd = os.open(folder, os.O_RDONLY)
        except OSError:
            continue
        try:
            os.fsync(fd)
        except OSError:
            pass  # the files themselves are on disk; only the renames may wait for the file system
        finally:
            os.close(fd)


def ends_its_line(path) -> bool:
    """Whether a text file's last byte ends a line, as every catalog line galaxy writes does (a file cut short
    mostly does not)."""
    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        if fh.tell() == 0:
            return True
        fh.seek(-1, os.SEEK_END)
        return fh.read(1) == b"\n"


def arrow_source(path, mode: str = "rb"):
    """`path` as pyarrow opens it: its name, or a file opened in `mode` ("rb" or "wb") where the name is
    not UTF-8 (Python holds such a name with surrogate escapes, which pyarrow cannot encode: a good Parquet
    catalog so named had been called unreadable, and writing one a traceback). pyarrow does not close a file
    it is given: the caller does (`close_source`)."""
    name = os.fspath(path)
    try:
        name.encode("utf-8")
        return name
    except UnicodeEncodeError:
        return open(name, mode)


def close_source(source) -> None:
    """Close what `arrow_source` opened (nothing for a name)."""
    if not isinstance(source, str):
        source.close()
