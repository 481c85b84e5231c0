"""How each ``BADGED_*`` value is written: one parser per kind of value, shared by every setting of that kind.

Each parser takes what people wrote (a string from the environment or a flag, or a value from Django's
settings) and returns the value, or raises pydantic's error of kind ``INVALID_VALUE`` whose message is the
sentence ``badged`` prints after the setting's name (``settings.Options`` names it).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import psycopg
from psycopg import conninfo
from pydantic import SecretStr
from pydantic_core import PydanticCustomError

from badged.errors import ConfigError

# \Z, not $: "$" also matches before a trailing newline, and "badged_\n" is another prefix.
PREFIX_PATTERN = re.compile(r"[a-z_][a-z0-9_]{0,30}\Z")
NAME_PATTERN = re.compile(r"[a-z_][a-z0-9_]{0,62}\Z")
#: the longest duration: PostgreSQL keeps lock_timeout and statement_timeout in int milliseconds
MAX_SECONDS = 2_147_483
DURATION_FORMATS = "write seconds (90 or 1.5), or 500ms, 90s, 5m, 1h"
BOOLEAN_FORMATS = "write true/false, 1/0, yes/no or on/off"

_DURATION = re.compile(r"([-+]?(?:\d+(?:\.\d*)?|\.\d+))(ms|s|m|h)?\Z")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_TRUE, _FALSE = frozenset({"1", "true", "yes", "on"}), frozenset({"0", "false", "no", "off"})
INVALID_VALUE = "badged_setting"


def _invalid(problem: str) -> PydanticCustomError:
    """A refusal that reads after its subject: ``BADGED_RESYNC='abc'`` + ``is not a duration: ...``."""
    return PydanticCustomError(INVALID_VALUE, "{problem}", {"problem": problem})


def as_duration(value: object) -> float:
    """Seconds from ``90``, ``1.5``, ``500ms``, ``90s``, ``5m``, ``1h`` (or a number, from Django settings)."""
    if isinstance(value, str) and (match := _DURATION.match(value.strip())):
        seconds = float(match[1]) * _UNIT_SECONDS[match[2] or "s"]
    elif isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        seconds = float(value)
    else:
        raise _invalid(f"is not a duration: {DURATION_FORMATS}")
    if seconds <= 0:
        raise _invalid(f"must be more than 0 seconds: {DURATION_FORMATS}")
    if seconds < 0.001:
        raise _invalid("is shorter than 1ms, the shortest duration badged takes")
    if seconds > MAX_SECONDS:
        raise _invalid(f"is longer than 596h ({MAX_SECONDS}s), the longest duration badged takes (PostgreSQL's "
                       "limit for timeouts)")
    return seconds


def as_boolean(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _TRUE or word in _FALSE:
            return word in _TRUE
    raise _invalid(f"is not a boolean: {BOOLEAN_FORMATS}")


def one_of(noun: str, allowed: Sequence[str]) -> Callable[[object], str]:
    listed = f"{', '.join(allowed[:-1])} or {allowed[-1]}"

    def parse(value: object) -> str:
        word = value.strip().lower() if isinstance(value, str) else None
        if word is None or word not in allowed:
            raise _invalid(f"is not {noun}: write {listed}")
        return word

    return parse


def as_prefix(value: object) -> str:
    if isinstance(value, str) and PREFIX_PATTERN.match(value):
        return value
    raise _invalid("is not a prefix: write 1-31 lower-case letters, digits or '_', starting with a letter or '_'")


def as_identifier(value: object) -> str:
    if isinstance(value, str) and NAME_PATTERN.match(value):
        return value
    raise _invalid("is not a lower-case identifier: write 1-63 lower-case letters, digits or '_', starting with "
                   "a letter or '_'")


def as_path(value: object) -> Path:
    if isinstance(value, str | os.PathLike) and str(value):
        return Path(value)
    raise _invalid("is not a path")


def as_optional_path(value: object) -> Path | None:
    return None if value is None or value == "" else as_path(value)


def as_dsn(value: object) -> SecretStr | None:
    if value is None:
        return None
    text = value.get_secret_value() if isinstance(value, SecretStr) else value
    if isinstance(text, str):
        try:
            conninfo.conninfo_to_dict(text)
        except psycopg.Error:
            pass
        else:
            return SecretStr(text)
    raise _invalid("is malformed: write a URL (postgresql://user@host/dbname) or key=value pairs "
                   "(host=db dbname=app); it is not shown, as it may hold a password")


#: the key of a ConfigMap that holds badge.json unless ``:KEY`` says otherwise
DEFAULT_KEY = "badge.json"
_CONFIGMAP_NAMESPACE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_CONFIGMAP_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")
_CONFIGMAP_KEY = re.compile(r"[-._a-zA-Z0-9]{1,253}")
_CONFIGMAP_EXAMPLE = "expected NAMESPACE/NAME[:KEY], e.g. default/badges or default/badges:badge.json"


def parse_reference(reference: str) -> tuple[str, str, str]:
    """``'NAMESPACE/NAME[:KEY]'`` -> (namespace, name, key); ConfigError when malformed."""
    where = f"--configmap {reference!r}"
    path, colon, key = reference.strip().partition(":")
    namespace, slash, name = path.partition("/")
    if not slash or not namespace or not name:
        raise ConfigError(f"{where}: {_CONFIGMAP_EXAMPLE}")
    if not colon:
        key = DEFAULT_KEY
    if not _CONFIGMAP_NAMESPACE.fullmatch(namespace):
        raise ConfigError(f"{where}: namespace {namespace!r} is not a valid Kubernetes namespace "
                          "(lowercase letters, digits and '-', at most 63); " + _CONFIGMAP_EXAMPLE)
    if not _CONFIGMAP_NAME.fullmatch(name):
        raise ConfigError(f"{where}: name {name!r} is not a valid ConfigMap name "
                          "(lowercase letters, digits, '-' and '.'); " + _CONFIGMAP_EXAMPLE)
    if not _CONFIGMAP_KEY.fullmatch(key):
        raise ConfigError(f"{where}: key {key!r} is not a valid ConfigMap key "
                          "(letters, digits, '-', '_' and '.'); " + _CONFIGMAP_EXAMPLE)
    return namespace, name, key


def parse_address(address: str) -> tuple[str, int]:
    """``:8080``, ``0.0.0.0:8080``, ``127.0.0.1:0`` or ``[::1]:8080`` → (host, port)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"--http {address!r} must look like :8080 or 127.0.0.1:8080 (or be empty to disable)")
    return host.strip("[]") or "0.0.0.0", int(port)  # noqa: S104 - a sidecar's probes come from the kubelet


def as_address(value: object) -> str:
    if value == "":
        return ""
    try:
        if isinstance(value, str):
            parse_address(value)
            return value
    except ConfigError:
        pass
    raise _invalid("must look like :8080, 127.0.0.1:8080 or [::1]:8080, or be empty to disable")


def as_configmap(value: object) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise _invalid("is not a ConfigMap reference: write NAMESPACE/NAME[:KEY]")
    try:
        parse_reference(value)
    except ConfigError as exc:
        raise _invalid(f"is not a ConfigMap reference: {str(exc).removeprefix(f'--configmap {value!r}: ')}") from None
    return value


def as_webhook(value: object) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, str) and value.startswith(("http://", "https://")):
        return value
    raise _invalid("is not an http:// or https:// URL; it is not shown, as it may hold a token")


def as_sink(value: object) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, str) and value.startswith(("nats://", "tls://")):
        return value
    raise _invalid("is not a nats:// (or tls://) URL; it is not shown, as it may hold a password (webhooks: "
                   "--webhook)")


def as_group(value: object) -> str:
    if isinstance(value, str) and value.strip():
        return value
    raise _invalid("is blank: write a consumer group name")


def as_optional_group(value: object) -> str | None:
    return None if value is None or value == "" else as_group(value)


_FUNCTION_NAME = re.compile(r"(?:[a-z_][a-z0-9_$]*\.)?[a-z_][a-z0-9_$]*\Z")


def as_function_names(value: object) -> str:
    """VOLATILE functions conditions may call: ``"random, pg_catalog.clock_timestamp"`` or a list of names.

    Kept as a comma-separated string: pydantic-settings would read a set from the environment as JSON.
    """
    if value is None or value == "":
        return ""
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple | set | frozenset):
        raise _invalid("is not a list of function names: write name or schema.name, comma-separated")
    names = frozenset(item.strip() for item in items if isinstance(item, str) and item.strip())
    bad = [item for item in items
           if not isinstance(item, str) or (item.strip() and not _FUNCTION_NAME.match(item.strip()))]
    if bad:
        raise _invalid(f"names {bad[0]!r}, which is not a function name: write name or schema.name (lower case), "
                       "comma-separated")
    return ",".join(sorted(names))
