"""How badged's library code logs: the standard ``logging`` module, an event name and fields.

``log = get_logger(__name__)`` then ``log.info("listen.started", group="mailer")``. A record goes
to the stdlib logger of that name (under ``badged``), so an application that embeds badged
(``badged.subscribe()``, Django) sees it wherever it sends its own logs, and nothing at all
when it configured nothing: a library configures no handler and never writes to stdout.

The message reads ``listen.started group=mailer`` for plain ``logging`` formatters; the event
name and fields also travel on the record (``badged_event``, ``badged_fields``), from which the
CLI's structlog output (``badged.log_output``) renders a JSON object or a console line.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

#: The attributes of a LogRecord that carry badged's event name and its fields.
EVENT_ATTR = "badged_event"
FIELDS_ATTR = "badged_fields"

ExcInfo = BaseException | bool | None
LogFormat = Literal["auto", "json", "console"]
LEVELS = ("debug", "info", "warning", "error")


class EventLogger:
    """A stdlib logger taking an event name and keyword fields, in the manner of structlog."""

    def __init__(self, name: str) -> None:
        self.logger = logging.getLogger(name)

    def debug(self, event: str, *, exc_info: ExcInfo = None, **fields: Any) -> None:
        self._log(logging.DEBUG, event, exc_info, fields)

    def info(self, event: str, *, exc_info: ExcInfo = None, **fields: Any) -> None:
        self._log(logging.INFO, event, exc_info, fields)

    def warning(self, event: str, *, exc_info: ExcInfo = None, **fields: Any) -> None:
        self._log(logging.WARNING, event, exc_info, fields)

    def error(self, event: str, *, exc_info: ExcInfo = None, **fields: Any) -> None:
        self._log(logging.ERROR, event, exc_info, fields)

    def _log(self, level: int, event: str, exc_info: ExcInfo, fields: dict[str, Any]) -> None:
        if not self.logger.isEnabledFor(level):
            return
        self.logger.log(level, "%s", _message(event, fields), exc_info=exc_info, stacklevel=3,
                        extra={EVENT_ATTR: event, FIELDS_ATTR: fields})


def get_logger(name: str) -> EventLogger:
    return EventLogger(name)


def _message(event: str, fields: dict[str, Any]) -> str:
    """``event key=value ...``: strings quoted only when they hold a space or a quote."""
    parts = [event]
    for key, value in fields.items():
        text = str(value)
        if isinstance(value, str) and (not text or any(c in text for c in " \"'=")):
            text = repr(value)
        parts.append(f"{key}={text}")
    return " ".join(parts)
