"""Liveness, readiness and /metrics over HTTP, in a thread beside the daemon's event loop.

``/healthz``: the process is alive (always 200 while it serves). ``/readyz``: 200 when the last
reconcile succeeded and the source was readable, else 503 with the reason. ``/metrics``:
Prometheus text format.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import structlog
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from badged.errors import ConfigError
from badged.metrics import Metrics

log = structlog.get_logger("badged.health")


@dataclass
class Health:
    """What /readyz reports. Written by the daemon loop, read by HTTP threads."""

    ready: bool = False
    reason: str = "starting: no reconcile yet"
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def set(self, ready: bool, reason: str) -> None:
        with self._lock:
            self.ready, self.reason = ready, reason

    def get(self) -> tuple[bool, str]:
        with self._lock:
            return self.ready, self.reason


def parse_address(address: str) -> tuple[str, int]:
    """``:8080``, ``0.0.0.0:8080``, ``127.0.0.1:0`` or ``[::1]:8080`` → (host, port)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"--http {address!r} must look like :8080 or 127.0.0.1:8080 (or be empty to disable)")
    return host.strip("[]") or "0.0.0.0", int(port)  # noqa: S104 - a sidecar's probes come from the kubelet


class HealthServer:
    def __init__(self, address: str, health: Health, metrics: Metrics) -> None:
        host, port = parse_address(address)
        handler = _handler(health, metrics)
        try:
            self._server = ThreadingHTTPServer((host, port), handler)
        except OSError as exc:
            raise ConfigError(f"cannot listen on {address}: {exc.strerror}") from None
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="badged-http", daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread.start()
        log.info("http.listening", host=self._server.server_address[0], port=self.port)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


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
