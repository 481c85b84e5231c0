"""The NATS JetStream sink against a real server: the stream, the acks, de-duplication, what is parked or retried.

Most tests use the NATS server on 127.0.0.1:4222 (``nats-server -js``) and skip when nothing answers
there; each uses a subject and a stream of its own and deletes the stream afterwards. The tests of
accounts, permissions and a server restart start a private ``nats-server`` (skipped without the binary).
URL parsing needs no server. Async code runs under ``asyncio.run`` (no pytest-asyncio).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import nats
import nats.js.errors
import pytest
from nats.js import JetStreamContext
from nats.js.api import StreamConfig

from badged.errors import ConfigError, TemporaryError
from badged.events import AwardEvent
from badged.sinks import Delivery, Sink, Verdict, nats_url
from badged.sinks import nats as nats_sink
from badged.sinks.nats import NatsOptions, NatsSink, parse_url

T = TypeVar("T")

HOST, PORT = "127.0.0.1", 4222


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


needs_nats = pytest.mark.skipif(not _answers(HOST, PORT),
                                reason=f"no NATS server answers on {HOST}:{PORT} (start `nats-server -js`)")
needs_nats_server_binary = pytest.mark.skipif(shutil.which("nats-server") is None,
                                              reason="no nats-server binary on PATH to start a private server")


def award(award_id: int, badge_name: str | None = "First post") -> AwardEvent:
    return AwardEvent(award_id=award_id, badge="first_post", badge_name=badge_name, user_id="u-42",
                      awarded_at=datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC), table="public.posts")


def with_js(url: str, body: Callable[[JetStreamContext], Awaitable[T]]) -> T:
    """Run *body* with a plain JetStream context of its own (what an operator or a consumer would do)."""
    async def run() -> T:
        client = await nats.connect(url, allow_reconnect=False)
        try:
            return await body(client.jetstream())
        finally:
            await client.close()
    return asyncio.run(run())


def with_sink(url: str, body: Callable[[NatsSink], Awaitable[T]], **options: Any) -> T:
    async def run() -> T:
        async with NatsSink(parse_url(url), **options) as sink:
            return await body(sink)
    return asyncio.run(run())


def send_all(url: str, events: list[AwardEvent], **options: Any) -> list[Delivery]:
    async def body(sink: NatsSink) -> list[Delivery]:
        return [await sink.send(event) for event in events]
    return with_sink(url, body, **options)


async def _count(js: JetStreamContext, stream: str) -> int:
    return (await js.stream_info(stream)).state.messages


async def _delete_streams(js: JetStreamContext, streams: list[str]) -> None:
    for stream in streams:
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await js.delete_stream(stream)


@dataclass
class Names:
    """A subject and a stream no other test uses; every stream listed is deleted after the test."""

    server: str
    subject: str
    stream: str
    streams: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"{self.server}/{self.subject}?stream={self.stream}"

    def other_stream(self, suffix: str) -> str:
        name = f"{self.stream}_{suffix}"
        self.streams.append(name)
        return name


@pytest.fixture
def names() -> Iterator[Names]:
    token = uuid.uuid4().hex[:12]
    names = Names(f"nats://{HOST}:{PORT}", f"badged_test.{token}.earned", f"BADGED_TEST_{token}")
    names.streams.append(names.stream)
    yield names
    with_js(names.server, lambda js: _delete_streams(js, names.streams))


# -- the URL ---------------------------------------------------------------------------------


def test_url_with_every_part() -> None:
    options = parse_url("nats://bob:s%40cret@nats.example:4333/badges.earned?stream=AWARDS&duplicate_window=900")
    assert options == NatsOptions(host="nats.example", port=4333, subject="badges.earned", stream="AWARDS",
                                  duplicate_window=900.0, user="bob", password="s@cret")
    assert options.description == "nats://nats.example:4333/badges.earned (stream AWARDS)"
    assert "cret" not in repr(options)


def test_url_defaults_token_and_tls() -> None:
    options = parse_url("tls://t0ken@[::1]/badges")
    assert (options.port, options.stream, options.duplicate_window) == (4222, "BADGED", 600.0)
    assert (options.user, options.password, options.token) == (None, None, "t0ken")
    assert options.server == "tls://[::1]:4222"
    assert NatsSink.from_url("nats://h/badges").description == "nats://h:4222/badges (stream BADGED)"


@pytest.mark.parametrize(("url", "message"), [
    ("http://u:hunter2@h:4222/badges", "must start with nats:// or tls://"),
    ("nats://u:hunter2@h:4222", "names no subject"),
    ("nats://u:hunter2@h:4222/", "names no subject"),
    ("nats://u:hunter2@:4222/badges", "names no host"),
    ("nats://u:hunter2@h:port/badges", "malformed"),
    ("nats://u:hunter2@h:0/badges", "port"),
    ("nats://u:hunter2@h/badges.*", "wildcard"),
    ("nats://u:hunter2@h/badges.>", "wildcard"),
    ("nats://u:hunter2@h/badges..earned", "invalid"),
    ("nats://u:hunter2@h/badges.earned.", "invalid"),
    ("nats://u:hunter2@h/badges%20earned", "invalid"),
    ("nats://u:hunter2@h/badges?topic=x", "unknown parameter 'topic'"),
    ("nats://u:hunter2@h/badges?stream", "malformed"),
    ("nats://u:hunter2@h/badges?stream=A&stream=B", "twice"),
    ("nats://u:hunter2@h/badges?stream=", "stream name"),
    ("nats://u:hunter2@h/badges?stream=A.B", "stream name"),
    ("nats://u:hunter2@h/badges?duplicate_window=soon", "not a number"),
    ("nats://u:hunter2@h/badges?duplicate_window=60", "at least 120"),
    ("nats://u:hunter2@h/badges?duplicate_window=nan", "at least 120"),
    ("nats://u:hunter2@h/badges#frag", "fragment"),
])
def test_bad_url_is_a_config_error_without_the_password(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as raised:
        parse_url(url)
    assert "hunter2" not in str(raised.value)


def test_the_sink_is_a_sink() -> None:
    sink: Sink = NatsSink.from_url("nats://h/badges")
    assert sink.kind == "nats"


# -- the stream ------------------------------------------------------------------------------


@needs_nats
def test_stream_is_created_when_missing(names: Names) -> None:
    with_sink(names.url, lambda sink: asyncio.sleep(0))
    config = with_js(names.server, lambda js: js.stream_info(names.stream)).config
    assert config.subjects == [names.subject]
    assert config.duplicate_window == nats_url.DEFAULT_DUPLICATE_WINDOW_S


@needs_nats
def test_existing_stream_is_used_as_it_is(names: Names) -> None:
    prefix = names.subject.rsplit(".", 1)[0]
    made = StreamConfig(name=names.stream, subjects=[f"{prefix}.>"], duplicate_window=300, max_msgs=1000)
    with_js(names.server, lambda js: js.add_stream(made))
    assert send_all(names.url, [award(1)]) == [Delivery.delivered()]
    config = with_js(names.server, lambda js: js.stream_info(names.stream)).config
    assert (config.subjects, config.duplicate_window, config.max_msgs) == ([f"{prefix}.>"], 300, 1000)


@needs_nats
def test_existing_stream_not_storing_the_subject_is_a_config_error(names: Names) -> None:
    with_js(names.server, lambda js: js.add_stream(name=names.stream, subjects=[names.subject + "_other"]))
    with pytest.raises(ConfigError, match=f"stream '{names.stream}' exists but does not store subject"):
        with_sink(names.url, lambda sink: asyncio.sleep(0))


@needs_nats
def test_subject_stored_by_another_stream_is_a_config_error_naming_it(names: Names) -> None:
    other = names.other_stream("OTHER")
    with_js(names.server, lambda js: js.add_stream(name=other, subjects=[names.subject]))
    with pytest.raises(ConfigError, match=f"add \\?stream={other} to the sink URL"):
        with_sink(names.url, lambda sink: asyncio.sleep(0))


@needs_nats
def test_stream_without_acks_is_a_config_error(names: Names) -> None:
    with_js(names.server, lambda js: js.add_stream(name=names.stream, subjects=[names.subject], no_ack=True))
    with pytest.raises(ConfigError, match="no_ack"):
        with_sink(names.url, lambda sink: asyncio.sleep(0))


# -- publishing ------------------------------------------------------------------------------


@needs_nats
def test_acknowledged_publish_is_delivered_with_its_message_id(names: Names) -> None:
    assert send_all(names.url, [award(7)]) == [Delivery.delivered()]
    message = with_js(names.server, lambda js: js.get_msg(names.stream, 1))
    assert message.subject == names.subject
    assert message.data == award(7).to_json().encode()
    assert message.headers == {"Nats-Msg-Id": "badged-award-7"}


@needs_nats
def test_the_same_award_sent_twice_is_stored_once(names: Names) -> None:
    assert send_all(names.url, [award(1), award(2), award(1)]) == [Delivery.delivered()] * 3
    # a new sink, as after a restart of badged, sends the in-flight batch again
    assert send_all(names.url, [award(2), award(3)]) == [Delivery.delivered()] * 2
    assert with_js(names.server, lambda js: _count(js, names.stream)) == 3


@needs_nats
def test_payload_above_max_payload_is_parked_and_the_connection_survives(names: Names) -> None:
    async def body(sink: NatsSink) -> list[Delivery]:
        assert sink._client is not None
        huge = award(1, badge_name="x" * sink._client.max_payload)
        return [await sink.send(huge), await sink.send(award(2))]

    parked, after = with_sink(names.url, body)
    assert parked.verdict is Verdict.PARK
    assert "exceeds the server's max_payload" in parked.reason
    assert after == Delivery.delivered()
    assert with_js(names.server, lambda js: _count(js, names.stream)) == 1


@needs_nats
def test_headers_pushing_a_message_over_max_payload_park_it(names: Names) -> None:
    """The payload alone fits; with its headers it does not (the server would close the connection)."""
    async def body(sink: NatsSink) -> list[Delivery]:
        assert sink._client is not None
        size = len(award(1, badge_name="").to_json().encode())
        event = award(1, badge_name="x" * (sink._client.max_payload - size - 4))
        assert len(event.to_json().encode()) < sink._client.max_payload
        return [await sink.send(event), await sink.send(award(2))]

    parked, after = with_sink(names.url, body)
    assert parked.verdict is Verdict.PARK
    assert after == Delivery.delivered()


@needs_nats
def test_message_above_the_streams_max_msg_size_is_parked(names: Names) -> None:
    with_js(names.server, lambda js: js.add_stream(name=names.stream, subjects=[names.subject], max_msg_size=512))
    parked, after = send_all(names.url, [award(1, badge_name="x" * 1000), award(2)])
    assert (parked.verdict, parked.status) == (Verdict.PARK, 400)
    assert "message size exceeds maximum" in parked.reason
    assert after == Delivery.delivered()


@needs_nats
def test_no_stream_for_the_subject_is_retried(names: Names) -> None:
    async def body(sink: NatsSink) -> Delivery:
        assert sink._js is not None
        await sink._js.delete_stream(names.stream)  # someone deleted it while badged runs
        return await sink.send(award(1))

    delivery = with_sink(names.url, body)
    assert delivery.verdict is Verdict.RETRY
    assert "no JetStream stream stores" in delivery.reason


@needs_nats
def test_send_after_the_connection_closed_for_good_raises_a_temporary_error(names: Names) -> None:
    async def body(sink: NatsSink) -> None:
        assert sink._client is not None
        await sink._client.close()
        await sink.send(award(1))

    with pytest.raises(TemporaryError, match="was closed"):
        with_sink(names.url, body)


def test_closed_port_is_a_temporary_error_on_enter() -> None:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port = probe.getsockname()[1]  # bound, never listening: connections are refused
        started = time.monotonic()
        with pytest.raises(TemporaryError, match=f"cannot connect to NATS at nats://{HOST}:{port}"):
            with_sink(f"nats://{HOST}:{port}/badges", lambda sink: asyncio.sleep(0))
    assert time.monotonic() - started < 3


# -- a private server: accounts, permissions, restarts ---------------------------------------

PRIVATE_CONFIG = """
listen: 127.0.0.1:{port}
jetstream {{ store_dir: "{store}" }}
accounts {{
  JS {{
    jetstream: enabled
    users: [
      {{ user: full, password: pw }},
      {{ user: limited, password: pw, permissions: {{
          publish: {{ allow: ["badges.>", "$JS.API.STREAM.INFO.>", "$JS.API.STREAM.NAMES"] }},
          subscribe: {{ allow: ["_INBOX.>"] }} }} }}
    ]
  }}
  PLAIN {{ users: [ {{ user: nojs, password: pw }} ] }}
}}
"""


class PrivateServer:
    """A nats-server of the test's own on a free port, with accounts and permissions; stop() and start() again."""

    def __init__(self, workdir: Path) -> None:
        with socket.socket() as probe:
            probe.bind((HOST, 0))
            self.port = probe.getsockname()[1]
        self.config = workdir / "nats.conf"
        self.config.write_text(PRIVATE_CONFIG.format(port=self.port, store=workdir / "jetstream"))
        self.log = workdir / "nats.log"
        self.process: subprocess.Popen[bytes] | None = None

    def server(self, user: str) -> str:
        return f"nats://{user}:pw@{HOST}:{self.port}"

    def url(self, user: str, subject: str = "badges.earned") -> str:
        return f"{self.server(user)}/{subject}"

    def start(self) -> None:
        self.process = subprocess.Popen(["nats-server", "-c", str(self.config), "-l", str(self.log)])
        deadline = time.monotonic() + 10
        while not _answers(HOST, self.port):
            if time.monotonic() > deadline:
                raise AssertionError(f"nats-server did not start: {self.log.read_text()[-2000:]}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None


@pytest.fixture
def private_server(tmp_path: Path) -> Iterator[PrivateServer]:
    server = PrivateServer(tmp_path)
    server.start()
    yield server
    server.stop()


@needs_nats_server_binary
def test_wrong_password_is_a_config_error(private_server: PrivateServer) -> None:
    with pytest.raises(ConfigError, match="refused the connection"):
        with_sink(private_server.url("nobody"), lambda sink: asyncio.sleep(0))


@needs_nats_server_binary
def test_account_without_jetstream_is_a_config_error(private_server: PrivateServer) -> None:
    with pytest.raises(ConfigError, match="JetStream is not enabled for this account"):
        with_sink(private_server.url("nojs"), lambda sink: asyncio.sleep(0))


@needs_nats_server_binary
def test_user_who_may_not_create_streams_gets_a_config_error(private_server: PrivateServer,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nats_sink, "API_TIMEOUT_S", 0.5)  # a denied request is only noticed by its timeout
    with pytest.raises(ConfigError, match=r"denied badged's request to create stream BADGED \(permissions violation"):
        with_sink(private_server.url("limited"), lambda sink: asyncio.sleep(0))
    # once an operator made the stream, the same user publishes
    with_js(private_server.server("full"), lambda js: js.add_stream(name="BADGED", subjects=["badges.earned"]))
    assert send_all(private_server.url("limited"), [award(1)]) == [Delivery.delivered()]


@pytest.mark.slow
@needs_nats_server_binary
def test_server_restart_is_retried_until_delivered_once(private_server: PrivateServer,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, "badged.sinks.nats")
    url = private_server.url("full")

    async def body(sink: NatsSink) -> list[Delivery]:
        deliveries = [await sink.send(award(1))]
        private_server.stop()
        deliveries.append(await sink.send(award(2)))
        await asyncio.sleep(nats_sink.RECONNECT_WAIT_S + 1)  # long enough for a failed reconnection attempt
        private_server.start()
        deadline = time.monotonic() + 20
        while (delivery := await sink.send(award(2))).verdict is Verdict.RETRY:
            assert time.monotonic() < deadline, delivery.reason
            await asyncio.sleep(0.2)
        deliveries.append(delivery)
        deliveries.append(await sink.send(award(1)))  # the window survived the restart: still a duplicate
        return deliveries

    first, during, after, again = with_sink(url, body, ack_timeout=1.0)
    assert first == after == again == Delivery.delivered()
    assert during.verdict is Verdict.RETRY
    assert with_js(private_server.server("full"), lambda js: _count(js, "BADGED")) == 2
    logged = [(r.levelname, getattr(r, "badged_event", None)) for r in caplog.records]
    assert ("WARNING", "nats.disconnected") in logged
    assert ("INFO", "nats.reconnected") in logged
    # the error that ended the connection is a warning; each failed attempt to reconnect only a debug line
    assert logged.count(("WARNING", "nats.error")) == 1
    assert ("DEBUG", "nats.error") in logged
