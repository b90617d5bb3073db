"""Where a server's admin socket lives, and finding the servers that run.

By default ``$XDG_RUNTIME_DIR/verb-console/PORT.sock``, or
``/tmp/verb-console-UID/PORT.sock`` when ``XDG_RUNTIME_DIR`` is unset. The
directory is made 0700 if missing; one owned by another user is refused, so a
user sharing /tmp cannot plant a socket there first.
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
from pathlib import Path


class AdminSocketError(OSError):
    """The admin socket cannot be set up or reached; the message says why, in one line."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "admin socket error"


def socket_dir() -> Path:
    """The directory holding the default admin sockets of this user."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return Path(runtime) / "verb-console"
    return Path("/tmp") / f"verb-console-{os.getuid()}"


def default_path(port: int) -> Path:
    return socket_dir() / f"{port}.sock"


def prepare_dir(directory: Path) -> None:
    """Make ``directory`` (mode 0700) or check that it is ours; fix a looser mode."""
    with contextlib.suppress(FileExistsError):
        directory.mkdir(mode=0o700, parents=False)
    info = directory.lstat()
    if not stat.S_ISDIR(info.st_mode):
        raise AdminSocketError(f"admin socket directory {directory} is not a directory")
    if info.st_uid != os.getuid():
        raise AdminSocketError(
            f"admin socket directory {directory} belongs to uid {info.st_uid}, not to us"
        )
    if stat.S_IMODE(info.st_mode) != 0o700:
        os.chmod(directory, 0o700)


def is_live(path: Path, timeout: float = 1.0) -> bool:
    """True when a server accepts connections on the socket at ``path``."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(timeout)
    try:
        probe.connect(str(path))
    except OSError:
        return False
    finally:
        probe.close()
    return True


def claim(path: Path) -> None:
    """Make way for a new socket at ``path``: remove a dead server's, refuse a live one's."""
    try:
        info = path.lstat()
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(info.st_mode):
        raise AdminSocketError(f"admin socket {path} exists and is not a socket")
    if is_live(path):
        raise AdminSocketError(f"admin socket {path} is held by a running server")
    path.unlink()


def running_servers() -> list[Path]:
    """The live admin sockets in this user's default directory, by port."""
    directory = socket_dir()
    try:
        candidates = [p for p in directory.iterdir() if p.suffix == ".sock"]
    except OSError:
        return []
    live = [p for p in candidates if is_live(p)]
    return sorted(live, key=lambda p: (len(p.stem), p.stem))
