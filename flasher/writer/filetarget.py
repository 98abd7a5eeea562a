"""Regular files as write targets, opened the way a careful root process must open them.

Standard library plus flasher.errors only (the writer modules and the drive checks use it).

- A path on a kernel pseudo filesystem (devtmpfs, proc, sysfs, ...) or under /dev, /proc or
  /sys is never a file target: there it is a drive name that does not exist (a typo, a card
  not inserted yet), and writing a file would fill RAM and report a card that is not there.
- The final path component is opened with O_NOFOLLOW. A symlink is followed only when it
  belongs to the caller (as `fs.protected_symlinks` would allow); a new file is created with
  O_EXCL, so nothing can be planted between the check and the open.
- An existing file owned by someone else in a sticky, world-writable directory (/tmp) is not
  overwritten (as `fs.protected_regular` would refuse it).
- Every file written gets mode 0600, also an existing 0644 one: a configured image holds Wi-Fi
  and provisioning keys.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat

from flasher.error_codes import Action, ProblemCode
from flasher.errors import DriveRejected

PRIVATE_FILE_MODE = 0o600
MOUNTINFO_PATH = "/proc/self/mountinfo"
PSEUDO_ROOTS = ("/dev", "/proc", "/sys")
PSEUDO_FS_TYPES = frozenset(
    {
        "devtmpfs",
        "devpts",
        "proc",
        "sysfs",
        "securityfs",
        "debugfs",
        "tracefs",
        "configfs",
        "cgroup",
        "cgroup2",
        "bpf",
        "pstore",
        "efivarfs",
        "fusectl",
        "mqueue",
        "hugetlbfs",
        "binfmt_misc",
    }
)


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def filesystem_type(path: str, mountinfo_path: str = MOUNTINFO_PATH) -> str | None:
    """The type of the filesystem mounted deepest above `path` (already resolved), if known."""
    try:
        with open(mountinfo_path, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    best, best_type = "", None
    for line in lines:
        fields = line.split(" ")
        if " - " not in line or len(fields) < 5:
            continue
        mountpoint = _unescape(fields[4])
        fs_type = line.split(" - ", 1)[1].split(" ", 1)[0]
        inside = path == mountpoint or path.startswith(mountpoint.rstrip("/") + "/")
        if inside and len(mountpoint) >= len(best):
            best, best_type = mountpoint, fs_type
    return best_type


def _nearest_existing(path: str) -> str:
    """`path` resolved through its deepest existing ancestor (a missing tail stays as named)."""
    head, tail = os.path.abspath(path), ""
    while not os.path.lexists(head) and head != "/":
        head, name = os.path.split(head)
        tail = os.path.join(name, tail) if tail else name
    real = os.path.realpath(head)
    return os.path.join(real, tail) if tail else real


def is_device_namespace(path: str) -> bool:
    """True when `path` (existing or not) lies under /dev, /proc or /sys, or on a kernel
    pseudo filesystem: a place where only the kernel creates entries."""
    spelled = os.path.abspath(path)
    resolved = _nearest_existing(path)
    for candidate in (spelled, resolved):
        if any(candidate == r or candidate.startswith(r + "/") for r in PSEUDO_ROOTS):
            return True
    return filesystem_type(resolved) in PSEUDO_FS_TYPES


def drive_not_found(path: str) -> DriveRejected:
    """The error for a device-namespace path that is not an existing block device."""
    return DriveRejected(
        f"{path}: no such drive; nothing is written to a missing device path.",
        hint="Check that the card is inserted and that the path is the drive's.",
        action=Action.LIST_DRIVES,
        target=path,
        problem=ProblemCode.NOT_FOUND,
    )


def _refuse(path: str, message: str, problem: ProblemCode, hint: str) -> DriveRejected:
    return DriveRejected(f"{path} {message}", hint=hint, target=path, problem=problem)


def _follow_own_link(path: str) -> str:
    """The path to open: `path` itself, or where the caller's own symlink points."""
    try:
        lst = os.lstat(path)
    except FileNotFoundError:
        return path
    if not stat.S_ISLNK(lst.st_mode):
        return path
    if lst.st_uid != os.geteuid():
        raise _refuse(
            path,
            "is a symbolic link owned by another user; it is not followed.",
            ProblemCode.FOREIGN_SYMLINK,
            "Name the file itself, in a folder only you can write to.",
        )
    return os.path.realpath(path)


def _check_sticky_owner(path: str, st: os.stat_result) -> None:
    parent = os.stat(os.path.dirname(os.path.abspath(path)))
    shared = parent.st_mode & stat.S_ISVTX and parent.st_mode & stat.S_IWOTH
    if shared and st.st_uid not in (os.geteuid(), parent.st_uid):
        raise _refuse(
            path,
            "belongs to another user in a shared folder; it is not overwritten.",
            ProblemCode.FOREIGN_FILE,
            "Choose a file name of your own, or a folder only you can write to.",
        )


def file_target_refusal(path: str) -> DriveRejected | None:
    """Why `path` may not be written as a file target (checked again when it is opened)."""
    if is_device_namespace(path):
        return drive_not_found(path)
    try:
        real = _follow_own_link(path)
        if real != path and is_device_namespace(real):
            return drive_not_found(path)
        st = os.lstat(real)
    except DriveRejected as err:
        return err
    except OSError:
        return None  # a new file; its folder is checked when it is created
    try:
        _check_sticky_owner(real, st)
    except DriveRejected as err:
        return err
    return None


def open_file_target(path: str, *, create: bool, direct: bool = True) -> tuple[int, bool]:
    """Open `path` read-write as a private regular file; (fd, whether O_DIRECT took).

    With `create`, a missing file is created (O_EXCL) and an existing one is emptied. The
    descriptor always refers to a regular file of mode 0600.
    """
    if is_device_namespace(path):
        raise drive_not_found(path)
    real = _follow_own_link(path)
    if real != path and is_device_namespace(real):
        raise drive_not_found(path)
    base = os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW
    fd = -1
    if create:
        try:
            fd = _open(real, base | os.O_CREAT | os.O_EXCL, direct)
        except FileExistsError:
            fd = -1
    if fd < 0:
        try:
            fd = _open(real, base, direct)
        except OSError as err:
            if err.errno == errno.ELOOP:
                raise _refuse(
                    path,
                    "became a symbolic link while being opened; it is not followed.",
                    ProblemCode.FOREIGN_SYMLINK,
                    "Name the file itself, in a folder only you can write to.",
                ) from None
            raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _refuse(
                path,
                "is not a regular file.",
                ProblemCode.NOT_A_FILE,
                "Choose a file or a listed drive.",
            )
        _check_sticky_owner(real, st)
        if stat.S_IMODE(st.st_mode) != PRIVATE_FILE_MODE:
            os.fchmod(fd, PRIVATE_FILE_MODE)
        if create and st.st_size:
            os.ftruncate(fd, 0)
        return fd, bool(fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT)
    except BaseException:
        os.close(fd)
        raise


def _open(path: str, flags: int, direct: bool) -> int:
    """Open with O_DIRECT when asked, falling back where the filesystem refuses it."""
    if direct:
        try:
            return os.open(path, flags | os.O_DIRECT, PRIVATE_FILE_MODE)
        except OSError as err:
            if err.errno != errno.EINVAL:
                raise
    return os.open(path, flags, PRIVATE_FILE_MODE)
