"""Liveness, readiness and /metrics over HTTP, in a thread beside the daemon's event loop.

``/healthz``: the process is alive (always 200 while it serves). ``/readyz``: 200 when the last
reconcile succeeded, the source was readable and every check passes (no pass stalled, no
background task dead), else 503 with the reasons. ``/metrics``: Prometheus text format.

As in controller-runtime, a check is just a function: it returns None when all is well, else
the reason it is not.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from badged.errors import ConfigError
from badged.logs import get_logger
from badged.metrics import Metrics
from badged.setting_values import parse_address

log = get_logger("badged.health")


#: A readiness check: None when all is well, else why not. Called from HTTP threads: it must only read.
Check = Callable[[], str | None]


@dataclass
class Health:
    """What /readyz reports: the last pass's outcome, and the checks. Written by the daemon, read by HTTP threads."""

    ready: bool = False
    reason: str = "starting: no reconcile yet"
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _checks: dict[str, Check] = field(default_factory=dict, repr=False)

    def set(self, ready: bool, reason: str) -> None:
        with self._lock:
            self.ready, self.reason = ready, reason

    def add_check(self, name: str, check: Check) -> None:
        with self._lock:
            self._checks[name] = check

    def get(self) -> tuple[bool, str]:
        """Ready only when the last pass succeeded and every check passes; the reasons joined by '; '."""
        with self._lock:
            ready, reason, checks = self.ready, self.reason, list(self._checks.items())
        failing = []
        for name, check in checks:
            try:
                problem = check()
            except Exception as exc:
                problem = f"the check failed ({type(exc).__name__}: {exc})"
            if problem:
                failing.append(f"{name}: {problem}")
        if not failing:
            return ready, reason
        return False, "; ".join(failing if ready else [reason, *failing])


class HealthServer:
    def __init__(self, address: str, health: Health, metrics: Metrics) -> None:
        host, port = parse_address(address)
        self._health, self._metrics = health, metrics
        try:
            self._server = ThreadingHTTPServer((host, port), _handler(health, metrics))
        except OSError as exc:
            raise ConfigError(f"cannot listen on {address}: {exc.strerror}") from None
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._serve, name="badged-http", daemon=True)
        #: what ended the serving thread, if anything did (the daemon's supervisor starts a new server)
        self.failure: BaseException | None = None

    @property
    def host(self) -> str:
        return str(self._server.server_address[0])

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread.start()
        log.info("http.listening", host=self.host, port=self.port)

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()

    def restarted(self) -> HealthServer:
        """A new server (not started) on the address this one had, port included when it asked for port 0."""
        with contextlib.suppress(OSError):
            self._server.server_close()
        return HealthServer(f"[{self.host}]:{self.port}", self._health, self._metrics)

    def _serve(self) -> None:
        try:
            self._server.serve_forever()
        except Exception as exc:
            self.failure = exc


def _handler(health: Health, metrics: Metrics) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/healthz":
                self._reply(200, "text/plain; charset=utf-8", b"ok\n")
            elif path == "/readyz":
                ready, reason = health.get()
                body = json.dumps({"ready": ready, "reason": reason}).encode() + b"\n"
                self._reply(200 if ready else 503, "application/json", body)
            elif path == "/metrics":
                self._reply(200, CONTENT_TYPE_LATEST, generate_latest(metrics.registry))
            else:
                self._reply(404, "text/plain; charset=utf-8", b"not found: try /healthz, /readyz, /metrics\n")

        def _reply(self, status: int, content_type: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            """Probes every few seconds would drown the logs: stay quiet."""

    return Handler
