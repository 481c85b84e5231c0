"""badge.json from a ConfigMap, read through the Kubernetes API (``badged run --configmap NS/NAME[:KEY]``).

Unlike a mounted ConfigMap (see ``file.py``), this needs no volume and sees an update
as soon as the API server does, instead of after the kubelet's sync period.

It follows the ConfigMap the way a client-go reflector does:

* **list** the ConfigMap (``fieldSelector=metadata.name=NAME``), which gives its content
  and a collection ``resourceVersion``;
* **watch** from that ``resourceVersion``: one long-lived request that costs nothing
  while idle. Each watch request lasts ``watch_seconds`` (5 min); the server is asked to
  end it a little later (``timeoutSeconds``), so it is cleaned up even if our close gets
  lost. We then watch again from the last ``resourceVersion`` seen; ending it ourselves
  also guards against a connection that died without a FIN;
* **410 Gone** (the ``resourceVersion`` is too old; real servers send it as an
  ``ERROR`` event, some proxies as an HTTP status): list again, then watch again;
* any other failure (connection refused or reset, 5xx, 403): wait with exponential
  backoff and full jitter (0.5 s doubling, capped at 30 s), then resume the watch from
  the last ``resourceVersion`` (or list again when there is none).

The content last seen is cached, so ``read()`` costs nothing while the watch runs;
before the watch has listed (at startup) it fetches the ConfigMap synchronously.
The daemon is level-based: ``changes()`` yields when the cached content changed, and
the daemon re-reads and compares hashes.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import importlib
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from badged.backoff import Backoff
from badged.errors import ConfigError, SourceError, describe_error
from badged.logs import get_logger
from badged.setting_values import DEFAULT_KEY, parse_reference

if TYPE_CHECKING:
    from lightkube import AsyncClient, Client, SingleConfig
    from lightkube.resources.core_v1 import ConfigMap

log = get_logger("badged.sources.configmap")

#: How long one watch request lasts before we end it and watch again from the last resourceVersion.
WATCH_SECONDS = 300.0
#: The server is asked to end each watch this much later than we do (``timeoutSeconds``): a backstop.
SERVER_TIMEOUT_SLACK_S = 30
#: Cap of the reconnect backoff.
BACKOFF_CAP_S = 30.0
#: Timeout of the synchronous fetch in ``read()`` (it runs on the daemon's event loop).
FETCH_TIMEOUT_S = 5.0

def load_kube_config() -> SingleConfig:
    """In-cluster service account, else ``$KUBECONFIG``, else ``~/.kube/config``; ConfigError if none works."""
    try:
        from lightkube import KubeConfig
    except ImportError:
        raise ConfigError("--configmap needs the Kubernetes client: pip install 'badged[k8s]'") from None
    try:
        config = KubeConfig.from_env().get()
    except Exception as exc:  # lightkube's ConfigError, a KeyError or a YAML error: all mean "no usable config"
        raise ConfigError("--configmap: no usable Kubernetes configuration (not in a cluster, and KUBECONFIG or "
                          f"~/.kube/config cannot be used): {describe_error(exc)}") from None
    if config is None:  # only when get() is given a default; kept for the type checker
        raise ConfigError("--configmap: the Kubernetes configuration has no current context")
    return config


@dataclass(frozen=True)
class Snapshot:
    """What the ConfigMap held when last seen: the key's text, or why there is none."""

    text: str | None
    problem: str | None = None


class ConfigMapSource:
    """One key of one ConfigMap, read and watched through the Kubernetes API (lightkube)."""

    def __init__(self, namespace: str, name: str, key: str = DEFAULT_KEY, *, config: SingleConfig | None = None,
                 watch_seconds: float = WATCH_SECONDS) -> None:
        self.namespace = namespace
        self.name = name
        self.key = key
        self.config = config if config is not None else load_kube_config()
        self.watch_seconds = watch_seconds
        #: what the running watch saw last; None while no watch has listed
        self._snapshot: Snapshot | None = None
        self._client: Client | None = None

    @classmethod
    def from_reference(cls, reference: str) -> ConfigMapSource:
        """``'NAMESPACE/NAME[:KEY]'`` (key default ``badge.json``); ConfigError when it or the kube config is bad."""
        namespace, name, key = parse_reference(reference)
        source = cls(namespace, name, key)
        try:
            source._client = source._new_client()
        except Exception as exc:  # e.g. a context without a user, an unreadable CA file
            raise ConfigError(f"--configmap: cannot use the Kubernetes configuration: {describe_error(exc)}") from None
        return source

    @property
    def description(self) -> str:
        return f"configmap {self.namespace}/{self.name}:{self.key}"

    @property
    def server(self) -> str:
        return self.config.cluster.server

    # -- reading ---------------------------------------------------------------------------------

    def read(self) -> str:
        """The key's text as last seen by the watch; fetched now when no watch has listed yet."""
        snapshot = self._snapshot if self._snapshot is not None else self.fetch()
        if snapshot.text is None:
            raise SourceError(snapshot.problem or f"configmap {self.namespace}/{self.name}: unreadable")
        return snapshot.text

    def fetch(self) -> Snapshot:
        """GET the ConfigMap now (blocking, at most FETCH_TIMEOUT_S); SourceError when the API cannot answer."""
        from lightkube import ApiError
        from lightkube.resources.core_v1 import ConfigMap

        where = f"configmap {self.namespace}/{self.name}"
        try:
            if self._client is None:
                self._client = self._new_client()
            obj = self._client.get(ConfigMap, self.name, namespace=self.namespace)
        except ApiError as exc:
            if exc.status.code == 404:
                return self.snapshot_of(None)
            raise SourceError(f"{where}: the Kubernetes API at {self.server} answered {exc.status.code}: "
                              f"{exc.status.message or exc.status.reason}") from None
        except Exception as exc:  # connection refused, timeout, TLS: the httpx flavour depends on lightkube's version
            raise SourceError(f"{where}: cannot reach the Kubernetes API at {self.server}: "
                              f"{describe_error(exc)}") from None
        return self.snapshot_of(obj)

    def snapshot_of(self, obj: ConfigMap | None) -> Snapshot:
        """The key's text in *obj* (None: the ConfigMap does not exist), or a one-sentence problem."""
        where = f"configmap {self.namespace}/{self.name}"
        if obj is None:
            return Snapshot(None, f"{where} not found (through the Kubernetes API at {self.server})")
        data: dict[str, str] = obj.data or {}
        binary: dict[str, str] = obj.binaryData or {}
        if self.key in data:
            return Snapshot(data[self.key])
        if self.key in binary:
            try:
                return Snapshot(base64.b64decode(binary[self.key], validate=True).decode("utf-8"))
            except (binascii.Error, UnicodeDecodeError):
                return Snapshot(None, f"{where}: binaryData key {self.key!r} is not UTF-8 text")
        keys = sorted({*data, *binary})
        has = f"it has: {', '.join(keys)}" if keys else "it has no keys"
        return Snapshot(None, f"{where} has no key {self.key!r}; {has}")

    # -- watching --------------------------------------------------------------------------------

    async def changes(self, stop: asyncio.Event) -> AsyncIterator[None]:
        """Yield whenever the watched content changed, until *stop* is set. Never raises for API trouble.

        The follower retries every API failure by itself; if it dies all the same (a bug), this raises what
        ended it, so that the daemon sees the watch die (/readyz, ``badged_task_failures_total{task="watch"}``)
        and starts a new one with backoff instead of waiting forever on a watch that no longer runs.
        """
        changed = asyncio.Event()
        follower = asyncio.create_task(_Follower(self, changed, stop).run(), name="badged-configmap-watch")
        try:
            while not stop.is_set():
                await _first_of(changed, stop, task=follower)
                if stop.is_set():
                    break
                if follower.done():
                    follower.result()  # raises what ended it
                    raise RuntimeError(f"the watch of {self.description} ended")
                changed.clear()
                yield
        finally:
            follower.cancel()
            await asyncio.gather(follower, return_exceptions=True)
            self._snapshot = None  # nothing keeps it current any more: read() fetches again

    def _store(self, snapshot: Snapshot, changed: asyncio.Event, resource_version: str | None) -> None:
        if snapshot != self._snapshot:
            self._snapshot = snapshot
            log.debug("source.configmap_changed", source=self.description, resource_version=resource_version,
                      problem=snapshot.problem)
            changed.set()

    def _new_client(self) -> Client:
        from lightkube import Client

        return Client(self.config, timeout=_http_timeout(FETCH_TIMEOUT_S))

    def _new_async_client(self) -> AsyncClient:
        from lightkube import AsyncClient

        return AsyncClient(self.config)


class _Follower:
    """list, then watch from the resourceVersion, forever; keeps ``source._snapshot`` current."""

    def __init__(self, source: ConfigMapSource, changed: asyncio.Event, stop: asyncio.Event) -> None:
        self.source = source
        self.changed = changed
        self.stop = stop
        self.client: AsyncClient | None = None
        self.resource_version: str | None = None
        self.backoff = Backoff(cap=BACKOFF_CAP_S)
        #: 410s in a row without a watch making progress: the second one waits (never a relist spin)
        self.gone_in_a_row = 0

    async def run(self) -> None:
        try:
            while not self.stop.is_set():
                delay = await self._once()
                if delay:
                    await _sleep_unless(self.stop, delay)
        finally:
            if self.client is not None:
                with contextlib.suppress(Exception):
                    await self.client.close()

    async def _once(self) -> float:
        """One list (when needed) and one watch; the seconds to wait before the next attempt."""
        description = self.source.description
        try:
            if self.client is None:
                self.client = self.source._new_async_client()
            client = self.client
            if self.resource_version is None:
                await self._list(client)
            if not await self._watch(client):
                return self.backoff.next_delay()  # ended early without an error: never re-watch in a spin
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # every failure is retried: the daemon must never lose its source
            status = _status_code(exc)
            if status == 410:
                self.resource_version = None
                self.gone_in_a_row += 1
                delay = 0.0 if self.gone_in_a_row == 1 else self.backoff.next_delay()
                log.info("source.relist", source=description, reason="410 Gone: resourceVersion too old",
                         retry_in=round(delay, 2))
                return delay
            delay = self.backoff.next_delay()
            log.warning("source.watch_error", source=description, server=self.source.server,
                        error=describe_error(exc), status=status, retry_in=round(delay, 2),
                        resume_from=self.resource_version)
            return delay
        return 0.0

    async def _list(self, client: AsyncClient) -> None:
        from lightkube.resources.core_v1 import ConfigMap

        source = self.source
        listing = client.list(ConfigMap, namespace=source.namespace, fields={"metadata.name": source.name})
        found = [cm async for cm in listing if cm.metadata is not None and cm.metadata.name == source.name]
        self.resource_version = listing.resourceVersion
        log.debug("source.listed", source=source.description, resource_version=self.resource_version,
                  found=bool(found))
        source._store(source.snapshot_of(found[0] if found else None), self.changed, self.resource_version)

    async def _watch(self, client: AsyncClient) -> bool:
        """Watch for ``watch_seconds``, then return True (the caller watches again from the last
        resourceVersion); False if the watch ended before without an error."""
        from lightkube.resources.core_v1 import ConfigMap

        source = self.source
        events = client.watch(ConfigMap, namespace=source.namespace, fields={"metadata.name": source.name},
                              resource_version=self.resource_version,
                              server_timeout=math.ceil(source.watch_seconds) + SERVER_TIMEOUT_SLACK_S)
        log.debug("source.watch", source=source.description, resource_version=self.resource_version)
        deadline = asyncio.timeout(source.watch_seconds)
        try:
            async with deadline:
                async for kind, obj in events:
                    if obj.metadata is not None and obj.metadata.resourceVersion:
                        self.resource_version = obj.metadata.resourceVersion
                    self.backoff.reset()
                    self.gone_in_a_row = 0
                    if kind == "BOOKMARK" or obj.metadata is None or obj.metadata.name != source.name:
                        continue
                    source._store(source.snapshot_of(None if kind == "DELETED" else obj), self.changed,
                                  self.resource_version)
        except TimeoutError:
            if not deadline.expired():
                raise
            self.backoff.reset()  # a watch that lasted its full term is progress
            self.gone_in_a_row = 0
            return True
        # lightkube re-opens a watch the server ended cleanly by itself, so this is unusual: retry after a backoff
        log.debug("source.watch_ended", source=source.description, resource_version=self.resource_version)
        return False


def _status_code(exc: Exception) -> int | None:
    """The HTTP or Kubernetes Status code carried by *exc*, if any (ApiError, or httpx's HTTPStatusError)."""
    status = getattr(exc, "status", None)
    code = getattr(status, "code", None)
    if isinstance(code, int):
        return code
    response = getattr(exc, "response", None)
    code = getattr(response, "status_code", None) if response is not None else None
    return code if isinstance(code, int) else None


def _http_timeout(seconds: float) -> Any:
    """An ``httpx.Timeout`` of the httpx flavour lightkube uses (httpx2 from lightkube 1.0, httpx before)."""
    for module in ("httpx2", "httpx"):
        with contextlib.suppress(ImportError):
            return importlib.import_module(module).Timeout(seconds)
    return None


async def _first_of(*events: asyncio.Event, task: asyncio.Task[None] | None = None) -> None:
    """Until one of *events* is set, or *task* ends."""
    waiters: list[asyncio.Future[Any]] = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait([*waiters, *([task] if task else [])], return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


async def _sleep_unless(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
