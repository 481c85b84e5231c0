"""Where badge.json comes from. A source can be read, and tells when it may have changed.

The daemon is level-based (like a Kubernetes controller): a change notification only
wakes it; it then re-reads the whole content and compares hashes, so a missed,
duplicated or spurious event never matters.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Protocol


class Source(Protocol):
    @property
    def description(self) -> str:
        """For logs: 'file /etc/badged/badge.json', 'configmap default/badges:badge.json'."""
        ...

    def read(self) -> str:
        """The current badge.json text; raise SourceError when unreadable."""
        ...

    def changes(self, stop: asyncio.Event) -> AsyncIterator[None]:
        """Yield whenever the content may have changed, until *stop* is set."""
        ...
