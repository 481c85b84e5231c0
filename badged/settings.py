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

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar

from pydantic import BeforeValidator, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from badged import setting_values as values
from badged.errors import ConfigError
from badged.logs import LEVELS, LogFormat


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
        if not values.PREFIX_PATTERN.match(self.prefix):
            raise ConfigError(
                f"prefix {self.prefix!r} must be 1-31 lower-case letters, digits or '_', starting with a letter or '_'"
            )
        for what, value in (("schema", self.schema), ("channel", self.channel)):
            if not values.NAME_PATTERN.match(value):
                raise ConfigError(
                    f"{what} {value!r} must be a lower-case identifier (letters, digits, '_'; at most 63 bytes)"
                )
        if self.lock_timeout_ms <= 0 or self.statement_timeout_ms <= 0:
            raise ConfigError("lock and statement timeouts must be positive")


# --- Options: every BADGED_* setting, one model for the CLI and the Django app ------------------------------

ENV_PREFIX = "BADGED_"
#: settings whose value is never repeated in an error: a DSN or a broker URL may hold a password, a webhook URL a
#: token
_SECRETS = frozenset({"BADGED_DSN", "BADGED_WEBHOOK", "BADGED_SINK"})
#: the one setting where an empty value means something (no HTTP server) instead of "unset"
_EMPTY_IS_A_VALUE = frozenset({"BADGED_HTTP"})


Duration = Annotated[float, BeforeValidator(values.as_duration)]
Boolean = Annotated[bool, BeforeValidator(values.as_boolean)]


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

    badges: Annotated[Path, BeforeValidator(values.as_path)] = Field(Path("./badge.json"), alias="BADGED_BADGES")
    dsn: Annotated[SecretStr | None, BeforeValidator(values.as_dsn)] = Field(None, alias="BADGED_DSN")
    prefix: Annotated[str, BeforeValidator(values.as_prefix)] = Field("badged_", alias="BADGED_PREFIX")
    schema_name: Annotated[str, BeforeValidator(values.as_identifier)] = Field("badged", alias="BADGED_SCHEMA")
    channel: Annotated[str, BeforeValidator(values.as_identifier)] = Field("badge_earned", alias="BADGED_CHANNEL")
    allow_empty: Boolean = Field(False, alias="BADGED_ALLOW_EMPTY")
    lock_timeout: Duration = Field(3.0, alias="BADGED_LOCK_TIMEOUT")
    statement_timeout: Duration = Field(60.0, alias="BADGED_STATEMENT_TIMEOUT")
    resync: Duration = Field(60.0, alias="BADGED_RESYNC")
    recheck_interval: Duration = Field(1.0, alias="BADGED_RECHECK_INTERVAL")
    output: Annotated[str, BeforeValidator(values.one_of("an output format", ("text", "json")))] = Field(
        "text", alias="BADGED_OUTPUT")
    log_level: Annotated[str, BeforeValidator(values.one_of("a log level", LEVELS))] = Field(
        "info", alias="BADGED_LOG_LEVEL")
    log_format: Annotated[LogFormat, BeforeValidator(values.one_of("a log format", ("auto", "json", "console")))] = (
        Field("auto", alias="BADGED_LOG_FORMAT"))
    http: Annotated[str, BeforeValidator(values.as_address)] = Field(":8080", alias="BADGED_HTTP")
    configmap: Annotated[str | None, BeforeValidator(values.as_configmap)] = Field(None, alias="BADGED_CONFIGMAP")
    webhook: Annotated[str | None, BeforeValidator(values.as_webhook)] = Field(None, alias="BADGED_WEBHOOK")
    webhook_secret_file: Annotated[Path | None, BeforeValidator(values.as_optional_path)] = Field(
        None, alias="BADGED_WEBHOOK_SECRET_FILE")
    webhook_group: Annotated[str, BeforeValidator(values.as_group)] = Field("webhook", alias="BADGED_WEBHOOK_GROUP")
    sink: Annotated[str | None, BeforeValidator(values.as_sink)] = Field(None, alias="BADGED_SINK")
    sink_group: Annotated[str, BeforeValidator(values.as_group)] = Field("nats", alias="BADGED_SINK_GROUP")
    group: Annotated[str | None, BeforeValidator(values.as_optional_group)] = Field(None, alias="BADGED_GROUP")
    allow_volatile: Annotated[str, BeforeValidator(values.as_function_names)] = Field("", alias="BADGED_ALLOW_VOLATILE")

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
        if detail["type"] != values.INVALID_VALUE:  # not a value people wrote (an unknown name): as pydantic says
            problems.append(f"{where.rstrip('= ')}: {detail['msg']}")
        elif name in _SECRETS:
            problems.append(f"{where.rstrip('= ')} {detail['msg']}")
        else:
            problems.append(f"{where}{detail['input']!r} {detail['msg']}")
    return problems
