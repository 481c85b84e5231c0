"""Where the CLI (and the Django command) sends logs: structlog renders every stdlib record.

The library logs through ``logging`` (see ``badged.logs``); this module, used only by entry
points, installs one handler on the root logger whose formatter is structlog's
``ProcessorFormatter``: badged's records become ``{"event": "listen.started", "group": ...}``
and third-party records (psycopg, httpx, watchfiles, lightkube) ``{"event": "<message>",
"logger": "httpx"}``, so JSON logs stay JSON. JSON lines for machines, colours for people.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

from badged.logs import EVENT_ATTR, FIELDS_ATTR, LEVELS, LogFormat

__all__ = ["LEVELS", "LogFormat", "configure_logging"]
#: Libraries that say something at INFO on every request or change: heard from at WARNING unless debugging.
_CHATTY = ("httpx", "httpcore", "watchfiles", "nats")


class _StderrHandler(logging.StreamHandler[TextIO]):
    """Writes to *stream*, or to whatever ``sys.stderr`` is when a record comes (pytest swaps it)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._fixed = stream
        super().__init__(stream or sys.stderr)

    @property
    def stream(self) -> TextIO:
        return self._fixed or sys.stderr

    @stream.setter
    def stream(self, _value: TextIO) -> None:
        pass


def _badged_fields(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """A badged record's event name and fields, or a foreign record's message, as the event."""
    record: logging.LogRecord | None = event_dict.get("_record")
    if record is None:
        return event_dict
    event = getattr(record, EVENT_ATTR, None)
    if event is not None:
        event_dict["event"] = event
        event_dict.update(getattr(record, FIELDS_ATTR, {}))
    else:
        event_dict["logger"] = record.name
    return event_dict


def configure_logging(level: str = "info", fmt: LogFormat = "auto", stream: TextIO | None = None) -> None:
    """Render every record at *level* or above on stderr (or *stream*); ``auto``: console on a terminal, else JSON.

    Called again, it replaces its own handler.
    """
    if fmt == "auto":
        fmt = "console" if sys.stderr.isatty() else "json"
    renderer: structlog.types.Processor = (
        structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
        if fmt == "console"
        else structlog.processors.JSONRenderer()
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.stdlib.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _badged_fields,
        ],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    handler = _StderrHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _StderrHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    numeric = getattr(logging, level.upper())
    root.setLevel(numeric)
    for name in _CHATTY:
        logging.getLogger(name).setLevel(numeric if numeric <= logging.DEBUG else max(numeric, logging.WARNING))
