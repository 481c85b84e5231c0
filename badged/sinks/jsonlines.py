"""The sink of ``badged listen``: one JSON object per line on a stream (stdout), flushed per event."""

from __future__ import annotations

from types import TracebackType
from typing import Self, TextIO

from badged.events import AwardEvent
from badged.sinks import Delivery


class JsonLinesSink:
    """Writes each event as ``event.to_json()`` and a newline; a reader that went away raises BrokenPipeError."""

    kind = "stdout"

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    @property
    def description(self) -> str:
        return getattr(self.stream, "name", "a stream")

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        traceback: TracebackType | None) -> None:
        return None

    async def send(self, event: AwardEvent) -> Delivery:
        self.stream.write(event.to_json() + "\n")
        self.stream.flush()
        return Delivery.delivered()
