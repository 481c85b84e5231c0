"""Drive ``badged run`` and ``badged listen`` as real subprocesses and wait on what they print."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

Event = dict[str, Any]


class DaemonProcess:
    """``badged run`` in a subprocess; every log event is kept and can be awaited."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        command = [sys.executable, "-m", "badged", "run", "--log-format", "json", "--log-level", "debug", *args]
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            env={**os.environ, **(env or {})},
        )
        self.events: list[Event] = []
        self._queue: queue.Queue[Event | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._seen = 0
        self.port: int | None = None

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                event = {"event": "non-json", "line": line.rstrip()}
            self._queue.put(event)
        self._queue.put(None)

    def wait_for(self, predicate: Callable[[Event], bool], timeout: float = 10.0, what: str = "event") -> Event:
        """The next event (after the ones already awaited) matching *predicate*; fail after *timeout* s."""
        for event in self.events[self._seen:]:
            self._seen += 1
            if predicate(event):
                return event
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                event = self._queue.get(timeout=left)
            except queue.Empty:
                break
            if event is None:
                raise AssertionError(f"badged run exited ({self.process.poll()}) before {what}: {self.events[-5:]}")
            self.events.append(event)
            self._seen = len(self.events)
            if event.get("event") == "http.listening":
                self.port = int(event["port"])
            if predicate(event):
                return event
        raise AssertionError(f"no {what} within {timeout} s; last events: {self.events[-5:]}")

    def drain(self) -> list[Event]:
        """Every event logged so far, without waiting (``wait_for`` still sees them in turn)."""
        while True:
            try:
                event = self._queue.get_nowait()
            except queue.Empty:
                return self.events
            if event is None:
                self._queue.put(None)  # the end stays for wait_for to report
                return self.events
            self.events.append(event)

    def wait_event(self, name: str, timeout: float = 10.0, **fields: Any) -> Event:
        return self.wait_for(
            lambda e: e.get("event") == name and all(e.get(k) == v for k, v in fields.items()),
            timeout, what=f"{name} {fields or ''}",
        )

    def wait_applied(self, timeout: float = 10.0) -> Event:
        """The next reconcile that changed something, once the daemon has recorded it (health, metrics)."""
        done = self.wait_for(lambda e: e.get("event") == "reconcile.done" and e.get("changes", 0) > 0,
                             timeout, what="a reconcile with changes")
        # reconcile.done is logged inside the transaction's thread; /readyz flips after it
        self.wait_for(lambda e: e.get("event") == "daemon.pass" and e.get("applied") is True, timeout,
                      what="the daemon to record the applied pass")
        return done

    def wait_reconciled(self, timeout: float = 10.0) -> Event:
        return self.wait_event("reconcile.done", timeout)

    def get(self, path: str) -> tuple[int, str]:
        if self.port is None:
            self.wait_event("http.listening")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as reply:
                return reply.status, reply.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def terminate(self, timeout: float = 5.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=5)
        self._reader.join(timeout=5)
        if self.process.stderr:
            self.process.stderr.close()

    def errors(self) -> list[Event]:
        return [e for e in self.events if e.get("level") in ("error", "critical") or e.get("event") == "non-json"]


class Listener:
    """``badged listen`` as a subprocess, its stdout read line by line in a thread."""

    def __init__(self, dsn: str, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "badged", "listen", "--dsn", dsn, "--log-format", "json", *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        self.lines: list[str] = []
        self.logs: list[dict[str, Any]] = []
        self._changed = threading.Condition()
        self._threads = [threading.Thread(target=self._pump, args=(self.process.stdout, self.lines), daemon=True),
                         threading.Thread(target=self._pump_logs, daemon=True)]
        for thread in self._threads:
            thread.start()

    def _pump(self, stream: IO[str] | None, into: list[str]) -> None:
        assert stream is not None
        for line in stream:
            with self._changed:
                into.append(line)
                self._changed.notify_all()

    def _pump_logs(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            with self._changed:
                try:
                    self.logs.append(json.loads(line))
                except json.JSONDecodeError:
                    self.logs.append({"event": "non-json", "line": line})
                self._changed.notify_all()

    def wait_started(self, timeout: float = 10.0) -> None:
        self._wait(lambda: any(log.get("event") == "listen.started" for log in self.logs), timeout, "listen.started")

    def wait_lines(self, count: int, timeout: float = 15.0) -> list[dict[str, Any]]:
        self._wait(lambda: len(self.lines) >= count, timeout, f"{count} lines")
        return [json.loads(line) for line in self.lines]

    def _wait(self, ready: Any, timeout: float, what: str) -> None:
        with self._changed:
            if not self._changed.wait_for(ready, timeout):
                raise AssertionError(f"no {what} within {timeout} s: {len(self.lines)} lines, logs {self.logs[-3:]}")

    def wait_users(self, users: set[str], also: set[str], timeout: float = 20.0) -> None:
        """Until the users seen here, together with *also*, cover *users*."""
        self._wait(lambda: {json.loads(line)["user_id"] for line in self.lines} | also >= users, timeout,
                   f"all of {len(users)} users")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        self.process.send_signal(sig)
        code = self.process.wait(timeout=10)
        self.close()
        return code

    def close(self) -> None:
        for thread in self._threads:
            thread.join(timeout=5)
        for stream in (self.process.stdout, self.process.stderr):
            if stream:
                stream.close()


def kubelet_update(directory: Path, files: dict[str, str], generation: int) -> None:
    """Do exactly what the kubelet does to a ConfigMap volume: new timestamped dir, atomic ..data swap."""
    stamp = directory / f"..2026_11_24_00_00_{generation:02d}.{os.getpid()}"
    stamp.mkdir()
    for name, content in files.items():
        (stamp / name).write_text(content)
    old = (directory / "..data").resolve() if (directory / "..data").exists() else None
    tmp = directory / "..data_tmp"
    tmp.symlink_to(stamp.name)
    tmp.rename(directory / "..data")  # atomic: readers see the old or the new set, never a mix
    for name in files:
        link = directory / name
        if not link.is_symlink():
            link.symlink_to(Path("..data") / name)
    if old is not None and old != stamp:
        for child in old.iterdir():
            child.unlink()
        old.rmdir()
