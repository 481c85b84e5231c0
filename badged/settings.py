"""Settings shared by every command: where badged keeps its objects and how it names them."""

from __future__ import annotations

import re
from dataclasses import dataclass

from badged.errors import ConfigError

# \Z, not $: "$" also matches before a trailing newline, and "badged_\n" is another prefix.
_PREFIX = re.compile(r"[a-z_][a-z0-9_]{0,30}\Z")
_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}\Z")


@dataclass(frozen=True)
class Settings:
    """Naming of badged's objects. Validated so every name is a plain lower-case identifier."""

    prefix: str = "badged_"
    schema: str = "badged"
    channel: str = "badge_earned"
    lock_timeout_ms: int = 3000
    statement_timeout_ms: int = 60000

    def __post_init__(self) -> None:
        if not _PREFIX.match(self.prefix):
            raise ConfigError(
                f"prefix {self.prefix!r} must be 1-31 lower-case letters, digits or '_', starting with a letter or '_'"
            )
        for what, value in (("schema", self.schema), ("channel", self.channel)):
            if not _NAME.match(value):
                raise ConfigError(
                    f"{what} {value!r} must be a lower-case identifier (letters, digits, '_'; at most 63 bytes)"
                )
        if self.lock_timeout_ms <= 0 or self.statement_timeout_ms <= 0:
            raise ConfigError("lock and statement timeouts must be positive")
