"""One driver per sweep: a lease in the sweep's storage, renewed while the driver runs.

`<sweep>/driver.lock` (JSON: host, pid, started, renewed) works on local disks,
NFS and object stores alike. A second driver that finds a live lease stops
with exit 2 and says who holds it. A lease is dead when its driver's process
is gone (same host) or it has not been renewed for STALE_S (another host, or
a killed machine), so a crash never blocks the next run for long.
"""
from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid

from orchestration.store import storage

RENEW_S = 20.0
STALE_S = 90.0


class SweepLocked(RuntimeError):
    pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def holder_is_alive(lease: dict) -> bool:
    if lease.get("host") == socket.gethostname() and not _alive(int(lease.get("pid", -1))):
        return False
    return time.time() - float(lease.get("renewed", 0)) < STALE_S


class DriverLock:
    def __init__(self, sweep_dir: str):
        self.path = storage.join(sweep_dir, "driver.lock")
        self.token = uuid.uuid4().hex
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _lease(self, started: float) -> dict:
        return {"token": self.token, "host": socket.gethostname(), "pid": os.getpid(), "started": started,
                "renewed": time.time()}

    def acquire(self, settle_s: float = 1.0) -> None:
        held = self._read()
        if held and holder_is_alive(held):
            raise SweepLocked(self.describe(held))
        started = time.time()
        lease = json.dumps(self._lease(started))
        if storage.is_remote(self.path):
            storage.write_text(self.path, lease)
            # object stores have no exclusive create: the last writer wins, and a loser sees the winner here
            time.sleep(settle_s)
        else:
            self._create_exclusively(lease, stale=bool(held) or self._torn_and_old())
        now = self._read()
        if now.get("token") != self.token:
            raise SweepLocked(self.describe(now))
        self._thread = threading.Thread(target=self._renew, args=(started,), daemon=True)
        self._thread.start()

    def _torn_and_old(self) -> bool:
        """A lease file that does not parse: being written this instant (young), or cut short long ago."""
        try:
            return time.time() - os.path.getmtime(self.path) > 5
        except FileNotFoundError:
            return False

    def _create_exclusively(self, lease: str, stale: bool) -> None:
        """Local disks: O_EXCL makes two drivers starting in the same instant see one winner, at no wait."""
        if stale:  # a dead driver's lease, or a torn one: it goes first
            try:
                os.remove(self.path)
            except FileNotFoundError:
                pass
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        try:
            handle = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            raise SweepLocked(self.describe(self._read())) from None
        with os.fdopen(handle, "w") as file:
            file.write(lease)

    def _renew(self, started: float) -> None:
        while not self._stop.wait(RENEW_S):
            storage.write_text(self.path, json.dumps(self._lease(started)))

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._read().get("token") == self.token:
            filesystem, path = storage.resolve(self.path)
            filesystem.delete_file(path)

    def _read(self) -> dict:
        """The lease, or {} when there is none or it is torn (a write cut short holds no live driver)."""
        try:
            lease = json.loads(storage.read_text(self.path) or "{}")
        except json.JSONDecodeError:
            return {}
        return lease if isinstance(lease, dict) else {}

    def describe(self, lease: dict) -> str:
        if not lease.get("pid"):
            return (f"another driver is starting this sweep this instant ({self.path} is being written). Fix: wait "
                    "for it to finish, or stop it")
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(lease.get("started", 0))))
        return (f"another driver is running this sweep (host {lease.get('host')}, pid {lease.get('pid')}, since "
                f"{since}). Fix: wait for it to finish, or stop it; a lease whose driver died expires by itself "
                f"within {STALE_S:.0f} s (or delete {self.path} if you are sure no driver runs)")

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()
