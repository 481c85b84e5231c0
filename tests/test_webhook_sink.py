"""The webhook sink against real HTTP servers on loopback: signatures, what each answer means, timeouts.

Each test calls ``WebhookSink.send`` directly (no database, no forwarder) and inspects the ``Delivery``
and what the receiver saw. Signatures are checked with the ``standardwebhooks`` package, as a receiver
following the standard would.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

import badged.sinks.webhook as webhook_module
from badged import __version__
from badged.errors import ConfigError
from badged.events import AwardEvent
from badged.logs import EVENT_ATTR
from badged.sinks import EXCERPT_CHARS, Delivery, Verdict
from badged.sinks.webhook import WebhookSink, classify, new_secret, parse_retry_after, read_secret, signing_key

KEY = bytes(range(24))
SECRET = "whsec_" + base64.b64encode(KEY).decode()
LEGACY_SECRET = b"s3cret-for-tests"


def award(award_id: int = 42) -> AwardEvent:
    return AwardEvent(award_id, "welcome", "Welcome", "7", datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC), "signup")


@dataclass(frozen=True)
class Answer:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    client_port: int


class Receiver:
    """An HTTP/1.1 endpoint on loopback (keep-alive): answers requests in turn from *answers*, then 200."""

    def __init__(self, *answers: Answer) -> None:
        self.answers = list(answers)
        self.requests: list[Seen] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                self.answer()

            def do_GET(self) -> None:
                self.answer()

            def answer(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.requests.append(Seen(self.command, self.path, dict(self.headers), body,
                                              self.client_address[1]))
                answer = receiver.answers.pop(0) if receiver.answers else Answer()
                self.send_response(answer.status)
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer.body)))
                self.end_headers()
                self.wfile.write(answer.body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.url = self.base + "/hooks/badges"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class RawServer:
    """A TCP server on loopback whose connections *serve* handles as it likes (not necessarily HTTP)."""

    def __init__(self, serve: Callable[[socket.socket, threading.Event], None]) -> None:
        self.stopped = threading.Event()
        stopped = self.stopped

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                serve(self.request, stopped)

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"

    def close(self) -> None:
        self.stopped.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def servers() -> Iterator[list[Receiver | RawServer]]:
    made: list[Receiver | RawServer] = []
    yield made
    for server in made:
        server.close()


@pytest.fixture
def receiver(servers: list[Receiver | RawServer]) -> Callable[..., Receiver]:
    def make(*answers: Answer) -> Receiver:
        server = Receiver(*answers)
        servers.append(server)
        return server

    return make


@pytest.fixture
def raw_server(servers: list[Receiver | RawServer]) -> Callable[..., RawServer]:
    def make(serve: Callable[[socket.socket, threading.Event], None]) -> RawServer:
        server = RawServer(serve)
        servers.append(server)
        return server

    return make


def deliver(url: str, *events: AwardEvent, secret: bytes | str = SECRET, **options: float) -> list[Delivery]:
    """Send *events* in turn through one sink; every verdict, each checked to hold no secret."""

    async def run() -> list[Delivery]:
        async with WebhookSink(url, secret, **options) as sink:
            return [await sink.send(event) for event in events]

    deliveries = asyncio.run(run())
    for delivery in deliveries:
        assert_no_secret(delivery, secret)
    return deliveries


def assert_no_secret(delivery: Delivery, secret: bytes | str) -> None:
    text = f"{delivery.reason} {delivery.response}"
    raw = secret.decode() if isinstance(secret, bytes) else secret
    key = signing_key(secret)
    for leak in (raw, raw.removeprefix("whsec_"), key.hex(), base64.b64encode(key).decode()):
        assert leak not in text


def verify(request: Seen, secret: bytes | str = SECRET) -> Any:
    return Webhook(secret).verify(request.body, request.headers)


# --- signatures -------------------------------------------------------------------------------------------------


def test_a_delivery_verifies_with_the_standard_webhooks_library(receiver: Callable[..., Receiver]) -> None:
    server = receiver()
    before = int(time.time())
    (delivery,) = deliver(server.url, award(42))
    after = int(time.time())
    assert delivery == Delivery.delivered()
    (request,) = server.requests
    assert request.method == "POST" and request.path == "/hooks/badges"
    assert verify(request) == award(42).as_dict()
    assert request.body == award(42).to_json().encode()
    assert request.headers["webhook-id"] == "badged-award-42"
    assert before <= int(request.headers["webhook-timestamp"]) <= after, "signed at the attempt, not before"
    assert request.headers["webhook-signature"].startswith("v1,")
    assert request.headers["User-Agent"] == f"badged/{__version__}"


def test_a_tampered_body_fails_verification(receiver: Callable[..., Receiver]) -> None:
    server = receiver()
    deliver(server.url, award())
    (request,) = server.requests
    tampered = request.body.replace(b'"7"', b'"8"')
    assert tampered != request.body
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(tampered, request.headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(request.body, request.headers)


def test_an_old_timestamp_fails_verification(receiver: Callable[..., Receiver],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The timestamp is signed: a request captured and replayed ten minutes later is refused."""
    server = receiver()
    monkeypatch.setattr(webhook_module, "time", SimpleNamespace(time=lambda: time.time() - 600))
    deliver(server.url, award())
    (request,) = server.requests
    with pytest.raises(WebhookVerificationError, match="too old"):
        verify(request)


def test_webhook_id_is_stable_across_attempts_and_the_timestamp_is_per_attempt(
        receiver: Callable[..., Receiver], monkeypatch: pytest.MonkeyPatch) -> None:
    server = receiver(Answer(503), Answer(200))
    clock = iter([time.time() - 60, time.time()])
    monkeypatch.setattr(webhook_module, "time", SimpleNamespace(time=lambda: next(clock)))
    first, second = deliver(server.url, award(7), award(7))
    assert (first.verdict, second.verdict) == (Verdict.RETRY, Verdict.DELIVERED)
    one, two = server.requests
    assert one.headers["webhook-id"] == two.headers["webhook-id"] == "badged-award-7"
    assert int(two.headers["webhook-timestamp"]) - int(one.headers["webhook-timestamp"]) == 60
    assert one.headers["webhook-signature"] != two.headers["webhook-signature"]
    assert verify(one) == verify(two) == award(7).as_dict()


@pytest.mark.parametrize("secret", [SECRET, LEGACY_SECRET], ids=["whsec", "legacy"])
def test_the_legacy_headers_still_verify(receiver: Callable[..., Receiver], secret: bytes | str) -> None:
    server = receiver()
    deliver(server.url, award(5), secret=secret)
    (request,) = server.requests
    key = KEY if secret == SECRET else LEGACY_SECRET
    assert request.headers["X-Badged-Signature"] == "sha256=" + hmac.new(key, request.body, hashlib.sha256).hexdigest()
    assert request.headers["X-Badged-Event"] == "badge-earned"
    assert request.headers["Idempotency-Key"] == "badged-award-5"
    assert request.headers["Content-Type"] == "application/json"
    assert json.loads(request.body)["award_id"] == 5


def test_a_legacy_secret_is_the_key_itself(receiver: Callable[..., Receiver]) -> None:
    """A receiver moving to the standard passes the old secret's bytes to its library as they are."""
    server = receiver()
    deliver(server.url, award(), secret=LEGACY_SECRET)
    (request,) = server.requests
    assert Webhook(LEGACY_SECRET).verify(request.body, request.headers) == award().as_dict()


# --- secrets ----------------------------------------------------------------------------------------------------


def test_new_secret_is_a_standard_secret_of_24_random_bytes() -> None:
    secret = new_secret()
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"), validate=True)) == 24
    assert signing_key(secret) == base64.b64decode(secret.removeprefix("whsec_"))
    assert new_secret() != secret
    Webhook(secret)  # the standard's library accepts it


def test_a_secret_file_is_read_without_its_newline(tmp_path: Path, receiver: Callable[..., Receiver]) -> None:
    path = tmp_path / "secret"
    path.write_text(SECRET + "\n")
    assert read_secret(path) == SECRET.encode()
    server = receiver()

    async def run() -> Delivery:
        async with WebhookSink.from_secret_file(server.url, path) as sink:
            return await sink.send(award())

    assert asyncio.run(run()).verdict is Verdict.DELIVERED
    assert verify(server.requests[0]) == award().as_dict()


def test_unreadable_empty_or_malformed_secrets_are_clear_config_errors(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    with pytest.raises(ConfigError, match=f"cannot read the webhook secret file {missing}"):
        read_secret(missing)
    empty = tmp_path / "empty"
    empty.write_text(" \n")
    with pytest.raises(ConfigError, match="is empty"):
        WebhookSink.from_secret_file("https://example.com/hooks", empty)
    malformed = tmp_path / "malformed"
    malformed.write_text("whsec_not*base64!\n")
    with pytest.raises(ConfigError, match="not valid base64") as caught:
        WebhookSink.from_secret_file("https://example.com/hooks", malformed)
    assert str(malformed) in str(caught.value) and "not*base64" not in str(caught.value)
    with pytest.raises(ConfigError, match="empty"):
        WebhookSink("https://example.com/hooks", "whsec_")


@pytest.mark.parametrize("options", [{"timeout": 0}, {"connect_timeout": -1}])
def test_timeouts_must_be_positive(options: dict[str, float]) -> None:
    with pytest.raises(ConfigError, match="more than 0"):
        WebhookSink("https://example.com/hooks", SECRET, **options)


# --- the URL ----------------------------------------------------------------------------------------------------


def test_the_description_drops_credentials_query_and_fragment() -> None:
    sink = WebhookSink("https://user:pw@example.com:8443/hooks/badges?token=abc#frag", SECRET)
    assert sink.description == "https://example.com:8443/hooks/badges"
    assert sink.kind == "webhook"


def test_credentials_in_the_url_are_sent_as_basic_auth(receiver: Callable[..., Receiver]) -> None:
    server = receiver()
    deliver(server.url.replace("http://", "http://hook:pa55@"), award())
    (request,) = server.requests
    assert request.headers["Authorization"] == "Basic " + base64.b64encode(b"hook:pa55").decode()


@pytest.mark.parametrize("url", ["ftp://user:pw@example.com/x", "example.com/hooks", "http:///hooks",
                                 "http://user:pw@example.com:x/", "http://example.com:99999/", ""])
def test_a_url_that_cannot_work_is_a_config_error_that_does_not_echo_it(url: str) -> None:
    with pytest.raises(ConfigError, match="http:// or https://") as caught:
        WebhookSink(url, SECRET)
    assert "pw" not in str(caught.value)


def test_send_outside_async_with_is_a_bug() -> None:
    with pytest.raises(RuntimeError, match="async with"):
        asyncio.run(WebhookSink("https://example.com/hooks", SECRET).send(award()))


# --- what each answer means -------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_redirects_are_parked_and_never_followed(receiver: Callable[..., Receiver], status: int) -> None:
    server = receiver()
    server.answers.append(Answer(status, {"Location": server.base + "/elsewhere"}, b"moved"))
    (delivery,) = deliver(server.url, award())
    assert delivery.verdict is Verdict.PARK
    assert delivery.status == status
    assert delivery.reason == f"HTTP {status} redirect to {server.base}/elsewhere"
    assert [(r.method, r.path) for r in server.requests] == [("POST", "/hooks/badges")]


def test_a_redirect_without_location_is_parked_too(receiver: Callable[..., Receiver]) -> None:
    (delivery,) = deliver(receiver(Answer(302)).url, award())
    assert (delivery.verdict, delivery.reason) == (Verdict.PARK, "HTTP 302 Found (redirects are not followed)")


@pytest.mark.parametrize(("status", "phrase"), [(400, "Bad Request"), (404, "Not Found"), (410, "Gone"),
                                                (413, "Request Entity Too Large")])
def test_client_errors_are_parked_with_status_and_body(receiver: Callable[..., Receiver], status: int,
                                                       phrase: str) -> None:
    server = receiver(Answer(status, {"Content-Type": "text/plain"}, f"refused: {status}".encode()))
    (delivery,) = deliver(server.url, award())
    assert delivery == Delivery.park(f"HTTP {status} {phrase}", status=status, response=f"refused: {status}")
    assert len(server.requests) == 1


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
def test_timeouts_throttling_and_server_errors_are_retried(receiver: Callable[..., Receiver], status: int) -> None:
    (delivery,) = deliver(receiver(Answer(status, body=b"busy")).url, award())
    assert delivery.verdict is Verdict.RETRY
    assert delivery.status == status
    assert delivery.reason.startswith(f"HTTP {status} ")
    assert delivery.response == "busy"
    assert delivery.retry_after is None


def test_retry_after_in_seconds_and_as_an_http_date(receiver: Callable[..., Receiver]) -> None:
    when = datetime.fromtimestamp(int(time.time()) + 30, UTC)
    server = receiver(Answer(503, {"Retry-After": "7"}), Answer(429, {"Retry-After": format_datetime(when, True)}),
                      Answer(503, {"Retry-After": "-5"}))
    seconds, date, negative = deliver(server.url, award(), award(), award())
    assert seconds.retry_after == 7.0
    assert date.retry_after is not None and 27 <= date.retry_after <= 30
    assert negative.retry_after == 0.0


def test_a_garbage_retry_after_is_ignored_and_logged(receiver: Callable[..., Receiver],
                                                     caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "badged.sinks.webhook")
    (delivery,) = deliver(receiver(Answer(503, {"Retry-After": "soon-ish"})).url, award())
    assert delivery.verdict is Verdict.RETRY and delivery.retry_after is None
    assert [getattr(r, EVENT_ATTR) for r in caplog.records] == ["webhook.retry_after_ignored"]


NOW = datetime(2015, 10, 21, 7, 28, 0, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(("value", "seconds"), [
    ("120", 120.0), (" 5 ", 5.0), ("0", 0.0), ("1.5", 1.5), ("-3", 0.0),
    ("Wed, 21 Oct 2015 07:28:10 GMT", 10.0), ("Wed, 21 Oct 2015 07:28:10 -0000", 10.0),
    ("Wed, 21 Oct 2015 07:27:00 GMT", 0.0), ("Wednesday, 21-Oct-15 07:29:00 GMT", 60.0),
    ("", None), ("soon", None), ("1e5", None), ("nan", None), ("inf", None), ("12 s", None),
    ("Wed, 99 Oct 2015 07:28:10 GMT", None),
])
def test_parse_retry_after(value: str, seconds: float | None) -> None:
    assert parse_retry_after(value, now=NOW) == seconds


@pytest.mark.parametrize(("status", "verdict"), [
    (100, Verdict.PARK), (101, Verdict.PARK), (200, Verdict.DELIVERED), (202, Verdict.DELIVERED),
    (204, Verdict.DELIVERED), (299, Verdict.DELIVERED), (300, Verdict.PARK), (304, Verdict.PARK),
    (400, Verdict.PARK), (401, Verdict.PARK), (403, Verdict.PARK), (409, Verdict.PARK), (422, Verdict.PARK),
    (408, Verdict.RETRY), (429, Verdict.RETRY), (500, Verdict.RETRY), (501, Verdict.RETRY),
    (599, Verdict.RETRY), (600, Verdict.PARK),
])
def test_classify(status: int, verdict: Verdict) -> None:
    delivery = classify(httpx.Response(status), None)
    assert delivery.verdict is verdict
    assert delivery.status == (None if verdict is Verdict.DELIVERED else status)


def test_a_long_or_undecodable_reply_is_kept_as_an_excerpt(receiver: Callable[..., Receiver]) -> None:
    server = receiver(Answer(400, body=b"x" * 100_000), Answer(400, body=b"\xff\xfe bad \xc3"),
                      Answer(400, {"Content-Type": "text/plain; charset=latin-1"}, "café".encode("latin-1")))
    long, undecodable, latin = deliver(server.url, award(), award(), award())
    assert long.response == "x" * EXCERPT_CHARS + "…"
    assert undecodable.response == "\ufffd\ufffd bad \ufffd"
    assert latin.response == "café"


def test_one_connection_is_kept_alive_for_many_events(receiver: Callable[..., Receiver]) -> None:
    server = receiver()
    deliveries = deliver(server.url, *(award(i) for i in range(5)))
    assert all(d.verdict is Verdict.DELIVERED for d in deliveries)
    assert len({r.client_port for r in server.requests}) == 1


# --- network failures -------------------------------------------------------------------------------------------


def test_a_closed_port_is_retried() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    (delivery,) = deliver(f"http://127.0.0.1:{port}/hooks", award())
    assert delivery.verdict is Verdict.RETRY
    assert delivery.reason.startswith("ConnectError: ") and delivery.status is None


def test_a_server_that_never_answers_is_retried_after_the_timeout() -> None:
    with socket.socket() as silent:  # the kernel accepts the connection; nobody ever reads or writes
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        started = time.monotonic()
        (delivery,) = deliver(f"http://127.0.0.1:{silent.getsockname()[1]}/hooks", award(), timeout=0.5)
    assert delivery.verdict is Verdict.RETRY
    assert delivery.reason in ("ReadTimeout", "no complete answer within 0.5 s")  # httpx's, or the total
    assert time.monotonic() - started < 3


def drip(head: bytes) -> Callable[[socket.socket, threading.Event], None]:
    """Sends *head*, then a header byte every 50 ms: each read succeeds, the answer never ends."""

    def serve(connection: socket.socket, stopped: threading.Event) -> None:
        connection.recv(65536)
        connection.sendall(head)
        while not stopped.wait(0.05):
            try:
                connection.sendall(b"x")
            except OSError:
                return

    return serve


def test_a_dripping_server_is_cut_off_by_the_total_timeout(raw_server: Callable[..., RawServer]) -> None:
    server = raw_server(drip(b"HTTP/1.1 200 OK\r\nX-Slow: "))
    started = time.monotonic()
    (delivery,) = deliver(server.url, award(), timeout=0.6)
    assert delivery == Delivery.retry("no complete answer within 0.6 s")
    assert time.monotonic() - started < 3


def test_a_2xx_whose_body_never_ends_is_delivered(raw_server: Callable[..., RawServer]) -> None:
    """The status decides: the receiver has the event once it said 200, however slowly it ends its reply."""
    server = raw_server(drip(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n"))
    (delivery,) = deliver(server.url, award(), timeout=0.6)
    assert delivery == Delivery.delivered()


@pytest.mark.parametrize("reply", [b"SSH-2.0-OpenSSH_9.6\r\n", b""], ids=["not-http", "hang-up"])
def test_a_reply_that_is_not_http_is_retried(raw_server: Callable[..., RawServer], reply: bytes) -> None:
    def serve(connection: socket.socket, stopped: threading.Event) -> None:
        connection.recv(65536)
        connection.sendall(reply)

    (delivery,) = deliver(raw_server(serve).url, award())
    assert delivery.verdict is Verdict.RETRY
    assert delivery.reason.startswith("RemoteProtocolError: ")
