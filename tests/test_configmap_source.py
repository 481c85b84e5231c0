"""``ConfigMapSource``: badge.json from a ConfigMap through the Kubernetes API, against a fake API server.

The fake (tests/fake_kube.py) speaks the get/list/watch protocol lightkube uses, including
410 Gone on a stale resourceVersion. Waits are bounded and event-driven: on ``changes()``, on
requests the fake received, and on log events the source emitted; never on sleeps.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest

from badged.errors import ConfigError, SourceError
from badged.sources.configmap import ConfigMapSource
from tests.conftest import SEED_BADGES
from tests.daemon_process import DaemonProcess
from tests.fake_kube import FakeKube
from tests.helpers import SEED_OBJECTS, LogRecorder, capture_logs, triggers

lightkube = pytest.importorskip("lightkube")

#: In a pod, lightkube prefers the pod's service account to KUBECONFIG: tests of that lookup cannot point it here.
IN_CLUSTER = Path("/var/run/secrets/kubernetes.io/serviceaccount/token").exists()
needs_kubeconfig_lookup = pytest.mark.skipif(IN_CLUSTER, reason="in a pod, the service account wins over KUBECONFIG")

WAIT_S = 10.0


@pytest.fixture
def logs() -> Iterator[LogRecorder]:
    with capture_logs() as recorder:
        yield recorder


@pytest.fixture
def kube(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeKube]:
    fake = FakeKube().start()
    monkeypatch.setenv("KUBECONFIG", str(fake.write_kubeconfig(tmp_path / "kubeconfig")))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    yield fake
    fake.stop()


def make_source(kube: FakeKube, name: str = "badges", key: str = "badge.json",
                watch_seconds: float = 300.0) -> ConfigMapSource:
    """A source configured from the fake's kubeconfig file itself (so this works inside a pod too)."""
    config = lightkube.KubeConfig.from_file(os.environ["KUBECONFIG"]).get()
    return ConfigMapSource("default", name, key, config=config, watch_seconds=watch_seconds)


def run(scenario: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(scenario, 30))


async def next_change(changes: AsyncIterator[None], timeout: float = WAIT_S) -> None:
    await asyncio.wait_for(anext(changes), timeout)


async def finish(changes: AsyncIterator[None], stop: asyncio.Event) -> None:
    stop.set()
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(anext(changes), 5)


def watches(kube: FakeKube) -> list[dict[str, str]]:
    return [query for kind, _path, query in kube.requests if kind == "watch"]


# -- 1. read and follow ----------------------------------------------------------------------------


def test_reads_the_key_and_follows_updates(kube: FakeKube) -> None:
    list_rv = kube.put("default", "badges", {"badge.json": "[1]", "other": "x"})
    kube.put("default", "unrelated", {"badge.json": "no"})
    source = make_source(kube)
    assert source.description == "configmap default/badges:badge.json"
    assert source.read() == "[1]", "without a watch, read() fetches"
    assert kube.count("get") == 1

    async def scenario() -> None:
        stop = asyncio.Event()
        changes = source.changes(stop)
        await next_change(changes)  # the first list
        assert source.read() == "[1]"
        await asyncio.to_thread(kube.wait_open_watches, 1)
        kube.put("default", "badges", {"badge.json": "[1, 2]"})
        await next_change(changes)
        assert source.read() == "[1, 2]"
        assert kube.count("get") == 1, "while watching, read() is served from the cache"
        await finish(changes, stop)

    run(scenario())
    (watch,) = watches(kube)
    assert watch["fieldSelector"] == "metadata.name=badges"
    assert int(watch["resourceVersion"]) > list_rv, "watched from the list's resourceVersion"
    assert int(watch["timeoutSeconds"]) > 300, "one long-lived request, ended by us first"
    assert source.read() == "[1, 2]"
    assert kube.count("get") == 2, "after the watch stopped, read() fetches again"


def test_a_watch_that_ran_its_term_is_renewed_from_the_last_resource_version(kube: FakeKube) -> None:
    kube.put("default", "badges", {"badge.json": "[1]"})
    source = make_source(kube, watch_seconds=0.3)

    async def scenario() -> None:
        stop = asyncio.Event()
        changes = source.changes(stop)
        await next_change(changes)
        await asyncio.to_thread(kube.wait_for, "watch", 2)
        kube.put("default", "badges", {"badge.json": "[2]"})
        await next_change(changes)
        assert source.read() == "[2]"
        await finish(changes, stop)

    run(scenario())
    first, second, *_ = watches(kube)
    assert second["resourceVersion"] == first["resourceVersion"], "resumed, not relisted"
    assert kube.count("list") == 1


# -- 2. 410 Gone -----------------------------------------------------------------------------------


@pytest.mark.parametrize("gone_as", ["event", "http"])
def test_410_gone_relists_and_the_next_update_still_arrives(kube: FakeKube, logs: LogRecorder,
                                                            gone_as: str) -> None:
    kube.gone_as = "http" if gone_as == "http" else "event"
    kube.put("default", "badges", {"badge.json": "[1]"})
    source = make_source(kube)

    async def scenario() -> None:
        stop = asyncio.Event()
        changes = source.changes(stop)
        await next_change(changes)
        await asyncio.to_thread(kube.wait_open_watches, 1)
        kube.expire_watches()  # an ERROR 410 event on the open watch; or (http) a clean end, then HTTP 410
        (relist,) = await asyncio.to_thread(logs.wait, "source.relist")
        assert relist["reason"].startswith("410 Gone")
        await asyncio.to_thread(kube.wait_for, "list", 2)
        await asyncio.to_thread(kube.wait_open_watches, 1)
        kube.put("default", "badges", {"badge.json": "[1, 2]"})
        await next_change(changes)
        assert source.read() == "[1, 2]"
        await finish(changes, stop)

    run(scenario())
    assert kube.count("list") == 2
    assert logs.named("source.watch_error") == [], "a 410 is routine, not an error"


def test_a_server_that_always_answers_410_is_not_relisted_in_a_spin(kube: FakeKube, logs: LogRecorder) -> None:
    kube.put("default", "badges", {"badge.json": "[1]"})
    kube.always_gone = True
    source = make_source(kube)

    async def scenario() -> None:
        stop = asyncio.Event()
        changes = source.changes(stop)
        await next_change(changes)
        relists = await asyncio.to_thread(logs.wait, "source.relist", 3)
        assert relists[0]["retry_in"] == 0, "the first 410 relists at once"
        assert all(r["retry_in"] > 0 for r in relists[1:3]), "then with backoff"
        assert source.read() == "[1]"
        await finish(changes, stop)

    run(scenario())


# -- 3. connection trouble -------------------------------------------------------------------------


def test_reconnects_after_the_api_server_drops_and_refuses_connections(kube: FakeKube, logs: LogRecorder) -> None:
    kube.put("default", "badges", {"badge.json": "[1]"})
    source = make_source(kube)

    async def scenario() -> None:
        stop = asyncio.Event()
        changes = source.changes(stop)
        await next_change(changes)
        await asyncio.to_thread(kube.wait_open_watches, 1)
        kube.stop()  # the open watch is cut mid-stream, then connections are refused
        errors = await asyncio.to_thread(logs.wait, "source.watch_error", 2)
        assert all(e["level"] == "warning" and 0 < e["retry_in"] <= 30 for e in errors)
        assert "Connect" in errors[-1]["error"], errors[-1]
        assert source.read() == "[1]", "the last content seen stays readable"
        kube.put("default", "badges", {"badge.json": "[1, 2]"})  # while the source cannot see it
        kube.start()  # same port
        await next_change(changes)
        assert source.read() == "[1, 2]"
        await finish(changes, stop)

    run(scenario())
    assert kube.count("list") == 1, "the watch resumed from its resourceVersion"


# -- 4. what cannot be read ------------------------------------------------------------------------


def test_a_missing_configmap_or_key_is_one_clear_sentence(kube: FakeKube) -> None:
    with pytest.raises(SourceError, match=r"^configmap default/badges not found \(through the Kubernetes API"):
        make_source(kube).read()
    kube.put("default", "badges", {"other.json": "[]", "a": "b"})
    with pytest.raises(SourceError) as caught:
        make_source(kube).read()
    assert str(caught.value) == "configmap default/badges has no key 'badge.json'; it has: a, other.json"
    kube.put("default", "empty", {})
    with pytest.raises(SourceError, match=r"^configmap default/empty has no key 'badge.json'; it has no keys$"):
        make_source(kube, "empty").read()
    assert make_source(kube, key="other.json").read() == "[]"


def test_a_configmap_deleted_while_watched_becomes_unreadable(kube: FakeKube) -> None:
    kube.put("default", "badges", {"badge.json": "[1]"})
    source = make_source(kube)

    async def scenario() -> None:
        stop = asyncio.Event()
        changes = source.changes(stop)
        await next_change(changes)
        await asyncio.to_thread(kube.wait_open_watches, 1)
        kube.delete("default", "badges")
        await next_change(changes)
        with pytest.raises(SourceError, match="configmap default/badges not found"):
            source.read()
        kube.put("default", "badges", {"badge.json": "[3]"})
        await next_change(changes)
        assert source.read() == "[3]"
        await finish(changes, stop)

    run(scenario())


def test_an_unreachable_api_is_a_source_error(kube: FakeKube) -> None:
    source = make_source(kube)
    kube.stop()
    with pytest.raises(SourceError, match=rf"^configmap default/badges: cannot reach the Kubernetes API at "
                                          rf"{kube.url}: Connect"):
        source.read()


@pytest.mark.parametrize(("reference", "complaint"), [
    ("badges", "expected NAMESPACE/NAME[:KEY]"),
    ("default/", "expected NAMESPACE/NAME[:KEY]"),
    ("/badges", "expected NAMESPACE/NAME[:KEY]"),
    ("Default/badges", "namespace 'Default' is not a valid Kubernetes namespace"),
    ("default/bad_name", "name 'bad_name' is not a valid ConfigMap name"),
    ("default/badges:", "key '' is not a valid ConfigMap key"),
    ("default/badges:bad key", "key 'bad key' is not a valid ConfigMap key"),
])
def test_a_bad_reference_is_a_config_error(reference: str, complaint: str) -> None:
    with pytest.raises(ConfigError) as caught:
        ConfigMapSource.from_reference(reference)
    assert str(caught.value).startswith(f"--configmap {reference!r}: ")
    assert complaint in str(caught.value)


@needs_kubeconfig_lookup
def test_from_reference_uses_kubeconfig(kube: FakeKube) -> None:
    kube.put("ns-1", "badges", {"custom.json": "[7]"})
    source = ConfigMapSource.from_reference("ns-1/badges:custom.json")
    assert source.description == "configmap ns-1/badges:custom.json"
    assert source.read() == "[7]"
    assert ConfigMapSource.from_reference("default/badges").key == "badge.json"


@needs_kubeconfig_lookup
def test_no_kubernetes_configuration_is_a_config_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    with pytest.raises(ConfigError, match="no usable Kubernetes configuration"):
        ConfigMapSource.from_reference("default/badges")


def test_without_lightkube_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "lightkube", None)  # makes `import lightkube` raise ImportError
    with pytest.raises(ConfigError, match=r"pip install 'badged\[k8s\]'"):
        ConfigMapSource.from_reference("default/badges")


# -- 5. end to end: the daemon, the fake API server, a real PostgreSQL -----------------------------


@needs_kubeconfig_lookup
def test_the_daemon_applies_configmap_updates_across_a_410(dsn: str, kube: FakeKube,
                                                           daemons: list[DaemonProcess]) -> None:
    kube.put("default", "badges", {"badge.json": json.dumps(SEED_BADGES[:1])})
    daemon = DaemonProcess("--http", "127.0.0.1:0", "--configmap", "default/badges", "--dsn", dsn)
    daemons.append(daemon)
    started = daemon.wait_event("daemon.started")
    assert started["source"] == "configmap default/badges:badge.json"
    daemon.wait_applied()
    assert triggers(dsn) == {SEED_OBJECTS["pionner"]}

    kube.wait_open_watches(1)
    kube.put("default", "badges", {"badge.json": json.dumps(SEED_BADGES)})
    daemon.wait_applied(timeout=5)
    assert triggers(dsn) == {SEED_OBJECTS[b["code"]] for b in SEED_BADGES}

    kube.expire_watches()
    daemon.wait_event("source.relist", timeout=5)
    kube.wait_open_watches(1)
    kube.put("default", "badges", {"badge.json": json.dumps(SEED_BADGES[1:])})
    daemon.wait_applied(timeout=5)
    assert triggers(dsn) == {SEED_OBJECTS[b["code"]] for b in SEED_BADGES[1:]}
    assert daemon.get("/readyz")[0] == 200

    assert daemon.terminate() == 0
    assert daemon.errors() == []
    assert not [e for e in daemon.events if e.get("event") == "source.watch_error"]
