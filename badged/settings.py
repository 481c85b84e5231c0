"""Settings: what the library takes (``Settings``) and every ``BADGED_*`` setting people write (``Options``).

``Settings`` is the frozen naming and timeouts every module of the library takes. ``Options`` is the one
model of the settings people write (pydantic-settings): the CLI reads it from the environment, with its
flags on top (flag > environment > default), and the Django app from ``settings.BADGED_*``, so a value
means the same thing, and is refused with the same sentence, wherever it is written:

==============================  ==========================  =====================================================
variable                        default                     format
==============================  ==========================  =====================================================
``BADGED_BADGES``               ``./badge.json``            path
``BADGED_DSN``                  (``DATABASE_URL``, PG*)     libpq URL or key=value string; never shown in errors
``BADGED_PREFIX``               ``badged_``                 1-31 of ``[a-z0-9_]``, not starting with a digit
``BADGED_SCHEMA``               ``badged``                  lower-case identifier, at most 63
``BADGED_CHANNEL``              ``badge_earned``            lower-case identifier, at most 63
``BADGED_ALLOW_EMPTY``          false                       boolean: true/false, 1/0, yes/no, on/off
``BADGED_LOCK_TIMEOUT``         ``3`` (s)                   duration: ``90``, ``1.5``, ``500ms``, ``5m``, ``1h``
``BADGED_STATEMENT_TIMEOUT``    ``60`` (s)                  duration
``BADGED_RESYNC``               ``60`` (s)                  duration
``BADGED_RECHECK_INTERVAL``     ``1`` (s)                   duration
``BADGED_OUTPUT``               ``text``                    ``text`` or ``json``
``BADGED_LOG_LEVEL``            ``info``                    ``debug``, ``info``, ``warning`` or ``error``
``BADGED_LOG_FORMAT``           ``auto``                    ``auto``, ``json`` or ``console``
``BADGED_HTTP``                 ``:8080``                   ``[HOST]:PORT``; empty disables
``BADGED_CONFIGMAP``            (unset)                     ``NAMESPACE/NAME[:KEY]``
``BADGED_WEBHOOK``              (unset)                     http:// or https:// URL; never shown in errors
``BADGED_WEBHOOK_SECRET_FILE``  (unset)                     path
``BADGED_WEBHOOK_GROUP``        ``webhook``                 group name (not blank)
``BADGED_SINK``                 (unset)                     ``nats://[USER:PASSWORD@]HOST:PORT/SUBJECT[?stream=NAME]``;
                                                            never shown in errors
``BADGED_SINK_GROUP``           ``nats``                    group name (not blank)
``BADGED_GROUP``                (unset)                     group name (not blank)
``BADGED_ALLOW_VOLATILE``       (none)                      ``name`` or ``schema.name``, comma-separated
==============================  ==========================  =====================================================

A duration is a number of seconds, or a number with one unit (ms, s, m, h), from 1ms to 596h (PostgreSQL
keeps its timeouts in int milliseconds). Booleans and choices are read in any case. An empty variable counts
as unset, except ``BADGED_HTTP``, where empty disables the HTTP server. Names are matched exactly (upper case).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar

import psycopg
from psycopg import conninfo
from pydantic import BeforeValidator, Field, SecretStr, ValidationError, model_validator
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from badged.errors import ConfigError
from badged.logs import LEVELS, LogFormat

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
    #: VOLATILE functions conditions may call anyway, as ``schema.name`` or ``name`` (see ``names``)
    allow_volatile: frozenset[str] = frozenset()

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


# --- Options: every BADGED_* setting, one model for the CLI and the Django app ------------------------------

ENV_PREFIX = "BADGED_"
#: the longest duration: PostgreSQL keeps lock_timeout and statement_timeout in int milliseconds
MAX_SECONDS = 2_147_483
DURATION_FORMATS = "write seconds (90 or 1.5), or 500ms, 90s, 5m, 1h"
BOOLEAN_FORMATS = "write true/false, 1/0, yes/no or on/off"

_DURATION = re.compile(r"([-+]?(?:\d+(?:\.\d*)?|\.\d+))(ms|s|m|h)?\Z")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_TRUE, _FALSE = frozenset({"1", "true", "yes", "on"}), frozenset({"0", "false", "no", "off"})
_INVALID = "badged_setting"
#: settings whose value is never repeated in an error: a DSN or a broker URL may hold a password, a webhook URL a
#: token
_SECRETS = frozenset({"BADGED_DSN", "BADGED_WEBHOOK", "BADGED_SINK"})
#: the one setting where an empty value means something (no HTTP server) instead of "unset"
_EMPTY_IS_A_VALUE = frozenset({"BADGED_HTTP"})


def _invalid(problem: str) -> PydanticCustomError:
    """A refusal that reads after its subject: ``BADGED_RESYNC='abc'`` + ``is not a duration: ...``."""
    return PydanticCustomError(_INVALID, "{problem}", {"problem": problem})


def _duration(value: object) -> float:
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


def _boolean(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _TRUE or word in _FALSE:
            return word in _TRUE
    raise _invalid(f"is not a boolean: {BOOLEAN_FORMATS}")


def _one_of(noun: str, allowed: Sequence[str]) -> Callable[[object], str]:
    listed = f"{', '.join(allowed[:-1])} or {allowed[-1]}"

    def parse(value: object) -> str:
        word = value.strip().lower() if isinstance(value, str) else None
        if word is None or word not in allowed:
            raise _invalid(f"is not {noun}: write {listed}")
        return word

    return parse


def _prefix(value: object) -> str:
    if isinstance(value, str) and _PREFIX.match(value):
        return value
    raise _invalid("is not a prefix: write 1-31 lower-case letters, digits or '_', starting with a letter or '_'")


def _identifier(value: object) -> str:
    if isinstance(value, str) and _NAME.match(value):
        return value
    raise _invalid("is not a lower-case identifier: write 1-63 lower-case letters, digits or '_', starting with "
                   "a letter or '_'")


def _path(value: object) -> Path:
    if isinstance(value, str | os.PathLike) and str(value):
        return Path(value)
    raise _invalid("is not a path")


def _optional_path(value: object) -> Path | None:
    return None if value is None or value == "" else _path(value)


def _dsn(value: object) -> SecretStr | None:
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


def _address(value: object) -> str:
    if value == "":
        return ""
    try:
        if isinstance(value, str):
            parse_address(value)
            return value
    except ConfigError:
        pass
    raise _invalid("must look like :8080, 127.0.0.1:8080 or [::1]:8080, or be empty to disable")


def _configmap(value: object) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise _invalid("is not a ConfigMap reference: write NAMESPACE/NAME[:KEY]")
    try:
        parse_reference(value)
    except ConfigError as exc:
        raise _invalid(f"is not a ConfigMap reference: {str(exc).removeprefix(f'--configmap {value!r}: ')}") from None
    return value


def _webhook(value: object) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, str) and value.startswith(("http://", "https://")):
        return value
    raise _invalid("is not an http:// or https:// URL; it is not shown, as it may hold a token")


def _sink(value: object) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, str) and value.startswith(("nats://", "tls://")):
        return value
    raise _invalid("is not a nats:// (or tls://) URL; it is not shown, as it may hold a password (webhooks: "
                   "--webhook)")


def _group(value: object) -> str:
    if isinstance(value, str) and value.strip():
        return value
    raise _invalid("is blank: write a consumer group name")


def _optional_group(value: object) -> str | None:
    return None if value is None or value == "" else _group(value)


_FUNCTION_NAME = re.compile(r"(?:[a-z_][a-z0-9_$]*\.)?[a-z_][a-z0-9_$]*\Z")


def _function_names(value: object) -> str:
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


Duration = Annotated[float, BeforeValidator(_duration)]
Boolean = Annotated[bool, BeforeValidator(_boolean)]


class Options(BaseSettings):
    """Every ``BADGED_*`` setting, parsed and checked (the table in this module's docstring).

    Fields are named by their variable (``alias``), which is also the name given to the constructor:
    ``Options(BADGED_RESYNC="5m")``; values given there win over the environment. Build it with
    ``load_options`` (CLI: flags over the environment) or ``options_from`` (Django settings, no environment);
    both raise ``OptionsError``.
    """

    # validate_default=False: the defaults are constants (tested), and checking ":8080" would import the daemon's
    # HTTP server into every command
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, case_sensitive=True, frozen=True, extra="forbid",
                                      validate_default=False)

    badges: Annotated[Path, BeforeValidator(_path)] = Field(Path("./badge.json"), alias="BADGED_BADGES")
    dsn: Annotated[SecretStr | None, BeforeValidator(_dsn)] = Field(None, alias="BADGED_DSN")
    prefix: Annotated[str, BeforeValidator(_prefix)] = Field("badged_", alias="BADGED_PREFIX")
    schema_name: Annotated[str, BeforeValidator(_identifier)] = Field("badged", alias="BADGED_SCHEMA")
    channel: Annotated[str, BeforeValidator(_identifier)] = Field("badge_earned", alias="BADGED_CHANNEL")
    allow_empty: Boolean = Field(False, alias="BADGED_ALLOW_EMPTY")
    lock_timeout: Duration = Field(3.0, alias="BADGED_LOCK_TIMEOUT")
    statement_timeout: Duration = Field(60.0, alias="BADGED_STATEMENT_TIMEOUT")
    resync: Duration = Field(60.0, alias="BADGED_RESYNC")
    recheck_interval: Duration = Field(1.0, alias="BADGED_RECHECK_INTERVAL")
    output: Annotated[str, BeforeValidator(_one_of("an output format", ("text", "json")))] = Field(
        "text", alias="BADGED_OUTPUT")
    log_level: Annotated[str, BeforeValidator(_one_of("a log level", LEVELS))] = Field("info", alias="BADGED_LOG_LEVEL")
    log_format: Annotated[LogFormat, BeforeValidator(_one_of("a log format", ("auto", "json", "console")))] = Field(
        "auto", alias="BADGED_LOG_FORMAT")
    http: Annotated[str, BeforeValidator(_address)] = Field(":8080", alias="BADGED_HTTP")
    configmap: Annotated[str | None, BeforeValidator(_configmap)] = Field(None, alias="BADGED_CONFIGMAP")
    webhook: Annotated[str | None, BeforeValidator(_webhook)] = Field(None, alias="BADGED_WEBHOOK")
    webhook_secret_file: Annotated[Path | None, BeforeValidator(_optional_path)] = Field(
        None, alias="BADGED_WEBHOOK_SECRET_FILE")
    webhook_group: Annotated[str, BeforeValidator(_group)] = Field("webhook", alias="BADGED_WEBHOOK_GROUP")
    sink: Annotated[str | None, BeforeValidator(_sink)] = Field(None, alias="BADGED_SINK")
    sink_group: Annotated[str, BeforeValidator(_group)] = Field("nats", alias="BADGED_SINK_GROUP")
    group: Annotated[str | None, BeforeValidator(_optional_group)] = Field(None, alias="BADGED_GROUP")
    allow_volatile: Annotated[str, BeforeValidator(_function_names)] = Field("", alias="BADGED_ALLOW_VOLATILE")

    #: whether the environment is read at all (not for Django's settings: ``_GivenOptions``)
    _reads_environment: ClassVar[bool] = True

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource,
                                   dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource,
                                   ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Values given (flags) over the environment; no .env file, no secrets directory."""
        return (init_settings, env_settings) if cls._reads_environment else (init_settings,)

    @model_validator(mode="before")
    @classmethod
    def _empty_is_unset(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            return {name: value for name, value in data.items() if value != "" or name in _EMPTY_IS_A_VALUE}
        return data

    def settings(self) -> Settings:
        """The library's ``Settings``: naming and timeouts."""
        return Settings(prefix=self.prefix, schema=self.schema_name, channel=self.channel,
                        lock_timeout_ms=round(self.lock_timeout * 1000),
                        statement_timeout_ms=round(self.statement_timeout * 1000),
                        allow_volatile=frozenset(filter(None, self.allow_volatile.split(","))))


class _GivenOptions(Options):
    """``Options`` from the values given alone (Django settings): the environment is not read."""

    _reads_environment: ClassVar[bool] = False


class OptionsError(ConfigError):
    """One or more settings are invalid; ``lines()`` is one sentence per setting, naming it."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = tuple(problems)

    def lines(self) -> tuple[str, ...]:
        return self.problems


def load_options(flags: Mapping[str, object] | None = None, *, flag_names: Mapping[str, str] | None = None,
                 ) -> Options:
    """Options from *flags* (by variable name; ``None`` = not given) over the ``BADGED_*`` environment.

    A refused value is named where it was written: ``--resync 'abc' ...`` when *flag_names* maps
    ``BADGED_RESYNC`` to ``--resync`` and the flag gave it, ``BADGED_RESYNC='abc' ...`` when the environment did.
    """
    given: dict[str, Any] = {name: value for name, value in (flags or {}).items() if value is not None}
    flag_names = flag_names or {}
    try:
        return Options(**given)
    except ValidationError as exc:
        raise OptionsError(_problems(exc, lambda name: f"{flag_names[name]} " if name in given and name in flag_names
                                     else f"{name}=")) from None


def options_from(values: Mapping[str, object], *, label: str = "settings.{}") -> Options:
    """Options from *values* alone (by variable name), e.g. Django's settings; errors name ``label.format(name)``."""
    given: dict[str, Any] = {name: value for name, value in values.items() if value is not None}
    try:
        return _GivenOptions(**given)
    except ValidationError as exc:
        raise OptionsError(_problems(exc, lambda name: f"{label.format(name)}=")) from None


def _problems(error: ValidationError, named: Callable[[str], str]) -> list[str]:
    """One sentence per refused value; *named* gives what precedes the value (``BADGED_RESYNC=``, ``--resync ``)."""
    problems = []
    for detail in error.errors(include_url=False):
        name = str(detail["loc"][0]) if detail["loc"] else "?"
        where = named(name)
        if detail["type"] != _INVALID:  # not a value people wrote (an unknown name, given in code): as pydantic says
            problems.append(f"{where.rstrip('= ')}: {detail['msg']}")
        elif name in _SECRETS:
            problems.append(f"{where.rstrip('= ')} {detail['msg']}")
        else:
            problems.append(f"{where}{detail['input']!r} {detail['msg']}")
    return problems
