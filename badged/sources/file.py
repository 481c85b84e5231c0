"""badge.json from a file, including a mounted ConfigMap.

The kubelet updates a ConfigMap volume by writing a new timestamped directory
(``..2026_11_24_…``) and atomically renaming a ``..data_tmp`` symlink over ``..data``;
``badge.json`` is a symlink through ``..data``, so the file's own inode never
changes. Watching the file misses that. We watch its *directory* (and the
directory of its target, when that lies elsewhere) and let the daemon re-read
and compare content hashes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from watchfiles import awatch

from badged.errors import BADGES_HINT, SourceError
from badged.logs import get_logger

log = get_logger("badged.sources.file")

#: watchfiles batches events over this many ms; the goal is a reconcile within 1 s of a write.
DEBOUNCE_MS = 50
#: How often watchfiles' thread wakes without an event (it checks the stop event then; the first wake says the
#: watch is in place).
WATCH_READY_MS = 1000


class FileSource:
    def __init__(self, path: Path) -> None:
        self.path = path.absolute()

    @property
    def description(self) -> str:
        return f"file {self.path}"

    def read(self) -> str:
        try:
            return self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise SourceError(f"{self.path}: file not found; {BADGES_HINT}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise SourceError(f"{self.path}: cannot read: {exc}") from None

    def watched_directories(self) -> list[Path]:
        directories = [self.path.parent]
        target = self.path.resolve().parent
        if not target.is_relative_to(self.path.parent):
            directories.append(target)
        return directories

    async def changes(self, stop: asyncio.Event) -> AsyncIterator[None]:
        while not stop.is_set():
            directories = [d for d in self.watched_directories() if d.is_dir()]
            if not directories:
                log.warning("source.directory_missing", directory=str(self.path.parent))
                await _wait(stop, 1.0)
                continue
            watching = False
            # yield_on_timeout: the first (empty) batch proves the inotify watch is in place; one more read then
            # catches a file written between the daemon's last read and that moment (it used to wait for resync)
            async for batch in awatch(*directories, watch_filter=None, debounce=DEBOUNCE_MS, stop_event=stop,
                                      recursive=False, yield_on_timeout=True, rust_timeout=WATCH_READY_MS):
                if not batch and watching:
                    continue
                watching = True
                yield
                if self.watched_directories() != directories:
                    break  # a symlink now points elsewhere: watch the new place


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
