"""Webhook sink throughput: events/s one ``WebhookSink`` POSTs, one at a time, to a receiver answering 200.

    python -m bench.webhook_sink [--events 5000] [--receiver loop|process|thread|http.server|all]

Events are sent in turn, as the forwarder sends them (the next only after the verdict on the one
before), over the sink's one keep-alive connection, so the figure is the sink's own cost per event
(signing, httpx, the loopback round trip) plus whatever the receiver costs. The receivers:

* ``loop``: an asyncio HTTP/1.1 server (``asyncio.start_server``) on the sink's own event loop (the
  default: the fastest, as no request waits for another thread or process to be scheduled);
* ``process``: the same server in a child process, on the other core;
* ``thread``: the same server on an event loop in a thread of this process (it shares the GIL);
* ``http.server``: ``ThreadingHTTPServer`` with HTTP/1.1 keep-alive, in a thread: the slowest.

``--receiver all`` measures each, interleaved (median of ``--rounds``). On a shared 2-core machine,
5 rounds of 3,000 events: loop 924 events/s, process 863, thread 806, http.server 694.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import queue
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Literal

from badged.events import AwardEvent
from badged.sinks import Verdict
from badged.sinks.webhook import WebhookSink, new_secret
from bench.common import interleaved, progress

ReceiverKind = Literal["loop", "process", "thread", "http.server"]
RECEIVERS: tuple[ReceiverKind, ...] = ("loop", "process", "thread", "http.server")
ROOT = Path(__file__).resolve().parent.parent
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=5_000)
    parser.add_argument("--receiver", choices=(*RECEIVERS, "all"), default="loop")
    parser.add_argument("--rounds", type=int, default=3, help="with --receiver all: interleaved rounds")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)  # the child of "process"
    args = parser.parse_args(argv)
    if args.serve:
        asyncio.run(_serve_until_stdin_closes())
        return 0
    if args.receiver != "all":
        result = measure(args.events, args.receiver)
        print(f"webhook sink, receiver {args.receiver}: {result['events_per_s']:,.0f} events/s "
              f"({result['events']:,.0f} events in {result['seconds']:.2f} s, "
              f"p50 {result['p50_ms']:.3f} ms, p99 {result['p99_ms']:.3f} ms per send)")
        return 0
    variants: dict[str, Callable[[], float]] = {kind: _rate(args.events, kind) for kind in RECEIVERS}
    for kind, rates in interleaved(variants, args.rounds).items():
        print(f"webhook sink, receiver {kind:<11}: median {statistics.median(rates):,.0f} events/s "
              f"(rounds: {', '.join(f'{r:,.0f}' for r in rates)})")
    return 0


def _rate(count: int, receiver: ReceiverKind) -> Callable[[], float]:
    return lambda: measure(count, receiver)["events_per_s"]


def measure(scale_events: int, receiver: ReceiverKind = "loop") -> dict[str, float]:
    """Send *scale_events* events through one sink to a *receiver* that answers 200: events/s and latencies."""
    progress(f"webhook sink: {scale_events:,} events, receiver {receiver}")
    if receiver == "loop":
        return asyncio.run(_measure_with_receiver_in_loop(scale_events))
    with _receiver(receiver) as url:
        return asyncio.run(_send_all(url, scale_events))


async def _measure_with_receiver_in_loop(count: int) -> dict[str, float]:
    async with _asyncio_receiver() as port:
        return await _send_all(f"http://127.0.0.1:{port}/hooks", count)


async def _send_all(url: str, count: int) -> dict[str, float]:
    events = [_event(i) for i in range(1, count + 1)]
    durations: list[float] = []
    async with WebhookSink(url, new_secret()) as sink:
        if (await sink.send(_event(0))).verdict is not Verdict.DELIVERED:  # connect and warm up, unmeasured
            raise SystemExit(f"the receiver at {url} did not answer 200")
        started = time.perf_counter()
        for event in events:
            before = time.perf_counter()
            delivery = await sink.send(event)
            durations.append(time.perf_counter() - before)
            if delivery.verdict is not Verdict.DELIVERED:
                raise SystemExit(f"event {event.award_id} not delivered: {delivery.reason}")
        seconds = time.perf_counter() - started
    quantiles = statistics.quantiles(durations, n=100)
    return {"events": float(count), "seconds": seconds, "events_per_s": count / seconds,
            "p50_ms": quantiles[49] * 1000, "p99_ms": quantiles[98] * 1000}


def _event(award_id: int) -> AwardEvent:
    return AwardEvent(award_id, "welcome", "Welcome", str(award_id), datetime.now(UTC), "signup")


@contextlib.contextmanager
def _receiver(kind: ReceiverKind) -> Iterator[str]:
    """A receiver of *kind* (not ``loop``) on loopback, for as long as the block runs; yields its URL."""
    if kind == "process":
        with _receiver_process() as port:
            yield f"http://127.0.0.1:{port}/hooks"
    elif kind == "thread":
        with _receiver_thread() as port:
            yield f"http://127.0.0.1:{port}/hooks"
    else:
        with _http_server() as port:
            yield f"http://127.0.0.1:{port}/hooks"


@contextlib.asynccontextmanager
async def _asyncio_receiver() -> AsyncIterator[int]:
    """The fast receiver: reads a request's head and body, answers 200 with keep-alive; yields its port."""
    handlers: set[asyncio.Task[None]] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handlers.add(asyncio.ensure_future(_answer_requests(reader, writer)))

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1]
    # the sink hung up before this; let each handler see it, rather than be cancelled mid-read at exit
    if handlers:
        await asyncio.wait(handlers, timeout=1)


async def _answer_requests(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            await reader.readexactly(_content_length(head))
            writer.write(OK)
    except (asyncio.IncompleteReadError, ConnectionError):
        pass  # the client hung up
    finally:
        writer.close()


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


async def _serve_until_stdin_closes() -> None:
    async with _asyncio_receiver() as port:
        print(port, flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


@contextlib.contextmanager
def _receiver_process() -> Iterator[int]:
    child = subprocess.Popen([sys.executable, "-m", "bench.webhook_sink", "--serve"], cwd=ROOT,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stdin is not None
    try:
        yield int(child.stdout.readline())
    finally:
        child.stdin.close()  # the child's signal to stop
        child.wait(10)


@contextlib.contextmanager
def _receiver_thread() -> Iterator[int]:
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    ports: queue.Queue[int] = queue.Queue()

    async def serve() -> None:
        async with _asyncio_receiver() as port:
            ports.put(port)
            await stop.wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    try:
        yield ports.get(timeout=10)
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
        loop.close()


@contextlib.contextmanager
def _http_server() -> Iterator[int]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: one connection for every event, as with the others

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


if __name__ == "__main__":
    sys.exit(main())
