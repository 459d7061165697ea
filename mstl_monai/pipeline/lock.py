# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""Stage locks: one process at a time trains a stage folder.

A lock is the file ``<stage folder>.lock`` beside the folder (so that moving the folder aside keeps it), created with
``O_CREAT | O_EXCL`` and holding the owner's pid, host and start time. A second process is refused with one line
naming the owner; the lock of a process that no longer runs on this host is taken over, saying so.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
import uuid
from pathlib import Path

__all__ = ["StageLock", "StageLockedError", "pid_alive", "live_locks_under"]


class StageLockedError(RuntimeError):
    """Another process holds a stage folder's lock (the message is one line naming it)."""


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this host (a zombie does not count)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat[stat.rindex(")") + 2] != "Z"
    except (OSError, ValueError, IndexError):
        return True


def _read(path: Path) -> dict | None:
    """The lock's owner, ``None`` when the file is gone, empty or not a lock (a run killed while writing it)."""
    try:
        holder = json.loads(path.read_text())
        return holder if isinstance(holder, dict) and isinstance(holder.get("pid"), int) else None
    except (OSError, ValueError):
        return None


def _describe(holder: dict) -> str:
    return f"process {holder['pid']} on {holder.get('host', '?')} since {holder.get('started', '?')}"


def _live(holder: dict) -> bool:
    """Whether the owner may still run: on another host this one cannot tell, so it counts as running."""
    return holder.get("host") != socket.gethostname() or pid_alive(holder["pid"])


class StageLock:
    """The lock of one stage folder: ``with StageLock(stage_dir): ...`` or :meth:`acquire` / :meth:`release`.

    Args:
        stage_dir: the stage folder; the lock is ``<stage_dir>.lock`` beside it.
        out: where the take-over of a stale lock is reported (default ``sys.stdout``).
    """

    def __init__(self, stage_dir: str | os.PathLike, out=None) -> None:
        self.stage_dir = Path(stage_dir)
        self.path = self.stage_dir.with_name(self.stage_dir.name + ".lock")
        self.out = out
        self.token: str | None = None

    def acquire(self) -> StageLock:
        """Take the lock.

        Raises:
            StageLockedError: another live process holds it (or one on another host: delete the file if it is gone).
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        token = uuid.uuid4().hex
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "token": token, "argv": sys.argv}
        for _ in range(5):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = _read(self.path)
                if holder is None:  # being written this instant, or left empty by a run killed while writing it
                    time.sleep(0.5)
                    holder = _read(self.path)
                if holder is not None and _live(holder):
                    raise StageLockedError(self._refusal(holder)) from None
                self._take_over(holder)
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(info, f)
            self.token = token
            return self
        raise StageLockedError(f"stage folder {self.stage_dir}: could not take its lock {self.path} (others keep taking it)")

    def _refusal(self, holder: dict) -> str:
        msg = f"stage folder {self.stage_dir} is being trained by {_describe(holder)} (lock {self.path}): "
        if holder.get("host") != socket.gethostname():
            return msg + f"this machine cannot tell whether it still runs; wait for it, or delete {self.path} if it does not"
        return msg + "wait for it to finish, or stop that process and run again"

    def _take_over(self, holder: dict | None) -> None:
        """Remove a stale lock (its process is gone), unless a live one took its place meanwhile."""
        aside = self.path.with_name(f"{self.path.name}.stale-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:  # another process removed it first
            return
        moved = _read(aside)
        if moved != holder and moved is not None and _live(moved):  # a live lock got there first: put it back
            try:
                os.link(aside, self.path)
            except FileExistsError:
                pass
            aside.unlink()
            return
        aside.unlink()
        if holder is None:
            what = "(unreadable: left by a run killed while writing it)"
        else:
            what = f"of process {holder['pid']} (no longer running on this host; it took the lock {holder.get('started', '?')})"
        print(f"taking over the lock {self.path} {what}", file=self.out or sys.stdout, flush=True)

    def release(self) -> None:
        """Remove the lock if this object still holds it."""
        if self.token is None:
            return
        holder = _read(self.path)
        if holder is not None and holder.get("token") == self.token:
            self.path.unlink()
        self.token = None

    def __enter__(self) -> StageLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def live_locks_under(folder: str | os.PathLike) -> list[str]:
    """The live owners of stage locks inside ``folder`` (before moving it aside), one line each."""
    out = []
    for path in sorted(Path(folder).rglob("*.lock")):
        holder = _read(path)
        if holder is not None and _live(holder):
            out.append(f"{path.with_suffix('')} is being trained by {_describe(holder)} (lock {path})")
    return out
