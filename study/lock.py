"""STUDY_DIR/study.lock: one ``study.py run`` at a time in a study folder.

Two studies in one folder destroy each other's work: each deletes the run folders it finds without a
checkpoint (the other's runs that just started) and rewrites study.json. The lock is a file created
with ``os.open(O_CREAT | O_EXCL)``, which is atomic on local disks and on NFS (v3 and later), and it
records the host, pid and start time of the study that holds it, so a refusal can say who holds it.
fcntl and flock locks are not used: on NFS they depend on the lock daemon, and a lock held on one
host may go unseen on another, which is the case this lock exists for.

A lock whose study is gone is taken over when that can be known: on the same host (and pid namespace),
when its pid no longer runs (or now belongs to a process started later). A lock of another host cannot
be checked from here, so the study refuses and says which host and pid hold it and how to remove it.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
import uuid
from pathlib import Path

from study import StudyError

LOCK_FILE = "study.lock"


def process_start(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (Linux /proc), to tell a reused pid from the one
    that wrote a lock; None where it cannot be read."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[19])  # field 22; the name before ")" may hold spaces
    except (OSError, ValueError, IndexError):
        return None


def pid_namespace() -> int | None:
    """This process's pid namespace (Linux): containers that share a host name can still not see each
    other's pids, so a lock of another namespace is treated like one of another host."""
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return None


def pid_alive(pid: int, started: int | None) -> bool:
    """Whether process ``pid`` of this host still runs and is the one that started at ``started`` (if known)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it runs
        pass
    now = process_start(pid)
    return started is None or now is None or now == started


class StudyLock:
    """Held by one ``study.py run`` for as long as it works in ``study_dir`` (a context manager)."""

    def __init__(self, study_dir: Path):
        self.study_dir = study_dir
        self.path = study_dir / LOCK_FILE
        self.me = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started": process_start(os.getpid()),
            "pid_ns": pid_namespace(),
            "since": time.strftime("%Y-%m-%d %H:%M:%S"),
            "token": uuid.uuid4().hex,  # which lock is ours, whatever else matches
        }

    def __enter__(self) -> StudyLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def acquire(self) -> None:
        """Create the lock, or take over a stale one of this host; anything else is a one-line StudyError."""
        try:
            self.study_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:  # a file there, or no permission: one line, as for any bad study folder
            raise StudyError(f"cannot create the study folder {self.study_dir}: {e.strerror}") from None
        for _ in range(3):  # a stale lock taken over, then created: at most a few rounds
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self.holder()
                self.refuse_unless_stale(holder)
                self.take_over(holder)
                continue
            except OSError as e:  # a folder that cannot be written
                raise StudyError(f"cannot create {self.path}: {e.strerror}") from None
            with os.fdopen(fd, "w") as f:
                f.write(json.dumps(self.me))
                f.flush()
                os.fsync(f.fileno())  # on a shared folder another host reads it next
            return
        raise StudyError(f"{self.path}: taken by another study while this one took over a stale lock; try again")

    def holder(self) -> dict:
        """The lock's record; {} if it stays unreadable (its writer is between create and write, or died there)."""
        for _ in range(10):
            try:
                got = json.loads(self.path.read_text())
                if isinstance(got, dict):
                    return got
            except FileNotFoundError:
                return {"gone": True}  # released meanwhile: try to create it again
            except (OSError, ValueError):
                pass
            time.sleep(0.1)
        return {}

    def refuse_unless_stale(self, holder: dict) -> None:
        """Return if the lock may be taken over (or is gone); else raise the StudyError that says who holds it."""
        if holder.get("gone"):
            return
        host, pid = holder.get("host"), holder.get("pid")
        since = f", since {holder['since']}" if holder.get("since") else ""
        if not host or not isinstance(pid, int):
            raise StudyError(f"{self.path} is unreadable; if no study runs in {self.study_dir}, remove that file")
        other_ns = None not in (holder.get("pid_ns"), self.me["pid_ns"]) and holder["pid_ns"] != self.me["pid_ns"]
        if host != self.me["host"] or other_ns:
            raise StudyError(
                f"{self.study_dir} is in use by a study on host {host} (pid {pid}{since}), which cannot be checked "
                f"from here; if that study is over, remove {self.path}"
            )
        if pid_alive(pid, holder.get("started")):
            raise StudyError(f"{self.study_dir} is in use by another study on this host (pid {pid}{since})")

    def take_over(self, stale: dict) -> None:
        """Remove a stale lock, unless another study took it over first: the lock is moved aside and checked to
        be the stale one before it is deleted (a fresh one, moved by mistake, is put back)."""
        if stale.get("gone"):
            return
        aside = self.path.with_name(f"{LOCK_FILE}.stale.{self.me['token']}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return  # another study moved it first; the next round sees whatever lock is there now
        try:
            moved = json.loads(aside.read_text())
        except (OSError, ValueError):
            moved = {}
        if moved != stale:
            try:
                os.link(aside, self.path)  # put it back, unless yet another lock is there
            except FileExistsError:
                pass
            aside.unlink(missing_ok=True)
            return
        aside.unlink(missing_ok=True)
        print(
            f"study: took over {self.path} of pid {stale['pid']} on this host, which no longer runs",
            file=sys.stderr,
            flush=True,
        )

    def release(self) -> None:
        """Remove the lock if it is still ours (a study that took it over as stale owns it now)."""
        try:
            if json.loads(self.path.read_text()).get("token") == self.me["token"]:
                self.path.unlink()
        except (OSError, ValueError):
            pass
