"""Size-based rotation of the local stack's logs (STREAMFLOW_HOME/logs/*.log), copytruncate style.

Every process of the local stack (the workers, the supervisor, the Kafka broker) writes its
stdout/stderr straight into ``<name>.log``, opened by ``processes.spawn`` in append mode
(O_APPEND). ``rotate_logs`` handles each ``*.log`` larger than ``max_bytes`` the way
logrotate's ``copytruncate`` does:

1. drop ``name.log.<n>`` for every n >= ``backups`` (the oldest, and any left by a larger
   STREAMFLOW_LOG_BACKUPS before);
2. shift ``name.log.<n>`` to ``name.log.<n+1>``, oldest first;
3. copy ``name.log`` to ``name.log.1``;
4. truncate ``name.log`` to 0 bytes. A writer with O_APPEND writes at the end of the file as
   it is at each write, so it carries on at offset 0: no sparse file, no reopen, no signal.

Disk budget per log file: (backups + 1) x max_bytes, plus what a file grows by between two
checks of the caller.

Why copytruncate: the children must not depend on the supervisor being alive. They hold
their own descriptor of the log file, so a supervisor that is SIGKILLed leaves them writing
on as before; a pipe to the supervisor (which would then write and rotate the file itself)
would break every writer with SIGPIPE/EPIPE the moment the supervisor died. Renaming the file
instead would need each program to reopen it, which dagster-webserver, dagster-daemon and the
Kafka broker, whose output we only redirect, cannot be asked to do.

Known caveat: lines a child writes between the end of the copy (step 3) and the truncate
(step 4) are lost. The window is the few microseconds between two system calls, once per
rotation; a line can also be split across ``name.log.1`` and ``name.log``.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

PATTERN = "*.log"


@dataclass(frozen=True)
class Rotation:
    """One log file that was rotated: its path and how many bytes it held when checked."""

    path: Path
    size: int


def generations(path: Path) -> list[Path]:
    """``path`` and its existing rotated copies (``path.1``, ``path.2`` ...), newest first."""
    numbered = []
    for candidate in path.parent.glob(f"{path.name}.*"):
        suffix = candidate.name[len(path.name) + 1:]
        if suffix.isdigit():
            numbered.append((int(suffix), candidate))
    return [path, *(candidate for _, candidate in sorted(numbered))]


def rotate_file(path: Path, backups: int) -> None:
    """Rotate one log now, keeping ``backups`` older copies (0: just truncate it)."""
    older = generations(path)[1:]
    # Step 1: drop what would be shifted past the last kept copy.
    for old in older:
        if int(old.name.rsplit(".", 1)[1]) >= backups:
            old.unlink(missing_ok=True)
    # Step 2: shift the kept copies up by one, oldest first so nothing is overwritten.
    for old in reversed(older):
        n = int(old.name.rsplit(".", 1)[1])
        if n < backups:
            os.replace(old, path.with_name(f"{path.name}.{n + 1}"))
    # Step 3: copy the live file (it stays open in its writers, so it is never renamed).
    if backups > 0:
        first = path.with_name(f"{path.name}.1")
        try:
            shutil.copyfile(path, first)
        except OSError:
            first.unlink(missing_ok=True)  # no half copy left behind (a full disk, say)
            raise
    # Step 4: O_APPEND writers continue at the new end, offset 0.
    os.truncate(path, 0)


def rotate_logs(directory: Path, *, max_bytes: int, backups: int) -> list[Rotation]:
    """Rotate every ``*.log`` in ``directory`` larger than ``max_bytes``; smaller ones are
    left untouched. Returns what was rotated. An OSError (a full disk) propagates."""
    rotated = []
    for path in sorted(directory.glob(PATTERN)):
        try:
            size = path.stat().st_size
        except FileNotFoundError:  # removed since the listing
            continue
        if size > max_bytes and path.is_file():
            rotate_file(path, backups)
            rotated.append(Rotation(path, size))
    return rotated
