"""A tiny fake Kubernetes API server, enough for lightkube to get, list and watch ConfigMaps.

It serves, on 127.0.0.1 over plain HTTP with no auth:

* ``GET /api/v1/namespaces/{ns}/configmaps/{name}``: the object, or a 404 ``Status``;
* ``GET /api/v1/namespaces/{ns}/configmaps?fieldSelector=metadata.name%3D{name}``: a ``ConfigMapList``
  carrying the collection's ``resourceVersion``;
* the same with ``watch=true``: a chunked stream of JSON lines (``{"type": "MODIFIED", "object": {...}}``),
  replaying the events after the requested ``resourceVersion`` and then following live updates, ended
  cleanly after ``timeoutSeconds``.

Like a real API server it keeps a history of events and answers a watch from a ``resourceVersion``
older than that history with 410 Gone: by default as a 200 response carrying one
``{"type": "ERROR", "object": {"kind": "Status", "code": 410}}`` event (what real servers do), or as
an HTTP 410 (``gone_as = "http"``). ``expire_watches()`` compacts the history, which also ends every
open watch that way. ``stop()`` drops every connection mid-stream and refuses new ones until
``start()`` listens again on the same port.
"""

from __future__ import annotations

import json
import queue
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

Obj = dict[str, Any]
_END = object()  # end the watch cleanly (terminating chunk)
_ABORT = object()  # drop the connection mid-stream


class _Watch:
    """One open watch: what it selects, and the lines (or _END/_ABORT) still to send."""

    def __init__(self, namespace: str, name: str | None) -> None:
        self.namespace = namespace
        self.name = name
        self.queue: queue.Queue[object] = queue.Queue()

    def selects(self, obj: Obj) -> bool:
        meta = obj["metadata"]
        return bool(meta["namespace"] == self.namespace and self.name in (None, meta["name"]))


class FakeKube:
    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._rv = 100
        self._compacted = 0  # watches from a resourceVersion <= this get 410 Gone
        self._objects: dict[tuple[str, str], Obj] = {}
        self._history: list[tuple[int, str, Obj]] = []  # (resourceVersion, type, object)
        self._watches: list[_Watch] = []
        self.gone_as: Literal["event", "http"] = "event"
        self.always_gone = False  # a pathological server: every watch is answered 410 Gone
        self.requests: list[tuple[str, str, dict[str, str]]] = []  # (kind: get|list|watch, path, query)
        self.port = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FakeKube:
        fake = self

        class Handler(_Handler):
            kube = fake

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Drop every open watch mid-stream and stop listening: new connections are refused."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        with self._lock:
            for watch in self._watches:
                watch.queue.put(_ABORT)
            self._watches.clear()

    def write_kubeconfig(self, path: Path) -> Path:
        """A kubeconfig pointing at this server (JSON is YAML), with a user that has no credentials."""
        path.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "fake", "user": {}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake", "namespace": "default"}}],
        }))
        return path

    # -- what tests do ---------------------------------------------------------------------------

    def put(self, namespace: str, name: str, data: dict[str, str]) -> int:
        """Create or update a ConfigMap; open watches get ADDED or MODIFIED. Returns its resourceVersion."""
        with self._lock:
            self._rv += 1
            kind = "MODIFIED" if (namespace, name) in self._objects else "ADDED"
            obj: Obj = {
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": name, "namespace": namespace, "resourceVersion": str(self._rv),
                             "uid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{namespace}/{name}"))},
                "data": dict(data),
            }
            self._objects[namespace, name] = obj
            self._publish(kind, obj)
            return self._rv

    def delete(self, namespace: str, name: str) -> None:
        with self._lock:
            obj = self._objects.pop((namespace, name))
            self._rv += 1
            obj = {**obj, "metadata": {**obj["metadata"], "resourceVersion": str(self._rv)}}
            self._publish("DELETED", obj)

    def expire_watches(self) -> None:
        """Compact the history (as etcd does): every open watch, and any watch from a resourceVersion
        seen so far, is answered 410 Gone; a list returns a newer, valid resourceVersion.

        With ``gone_as = "event"`` open watches get the ERROR event; with ``"http"`` they end cleanly
        and the client's next watch request gets an HTTP 410."""
        with self._lock:
            self._compacted = self._rv
            self._rv += 1  # as if something else in the cluster was written: a fresh list is watchable
            self._history.clear()
            for watch in self._watches:
                if self.gone_as == "event":
                    watch.queue.put(self._gone_line())
                # http: end it cleanly, as at timeoutSeconds; the client's next watch gets an HTTP 410
                watch.queue.put(_END)
            self._watches.clear()

    def count(self, kind: str) -> int:
        with self._lock:
            return sum(1 for request in self.requests if request[0] == kind)

    def wait_for(self, kind: str, count: int, timeout: float = 10.0) -> None:
        """Block until *count* requests of *kind* (get, list, watch) have been received in all."""
        with self._lock:
            if not self._lock.wait_for(lambda: self.count(kind) >= count, timeout):
                raise AssertionError(f"fake kube: fewer than {count} {kind} requests within {timeout} s: "
                                     f"{self.requests}")

    def wait_open_watches(self, count: int = 1, timeout: float = 10.0) -> None:
        with self._lock:
            if not self._lock.wait_for(lambda: len(self._watches) >= count, timeout):
                raise AssertionError(f"fake kube: fewer than {count} open watches within {timeout} s")

    # -- internals (called with the lock held) ---------------------------------------------------

    def _publish(self, kind: str, obj: Obj) -> None:
        self._history.append((self._rv, kind, obj))
        line = json.dumps({"type": kind, "object": obj}).encode()
        for watch in self._watches:
            if watch.selects(obj):
                watch.queue.put(line)

    @staticmethod
    def _gone_line() -> bytes:
        return json.dumps({"type": "ERROR", "object": _status(410, "Expired", "too old resource version")}).encode()

    def _record(self, kind: str, path: str, query: dict[str, str]) -> None:
        with self._lock:
            self.requests.append((kind, path, query))
            self._lock.notify_all()


def _status(code: int, reason: str, message: str) -> Obj:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": reason, "code": code}


class _Handler(BaseHTTPRequestHandler):
    kube: FakeKube
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = {key: values[-1] for key, values in parse_qs(url.query).items()}
        parts = url.path.strip("/").split("/")
        # api/v1/namespaces/{ns}/configmaps[/{name}]
        if len(parts) not in (5, 6) or parts[:3] != ["api", "v1", "namespaces"] or parts[4] != "configmaps":
            self._json(404, _status(404, "NotFound", f"the server could not find the requested resource {url.path}"))
            return
        namespace = parts[3]
        if len(parts) == 6:
            self.kube._record("get", url.path, query)
            self._get(namespace, parts[5])
            return
        selector = query.get("fieldSelector", "")
        name = selector.removeprefix("metadata.name=") if selector.startswith("metadata.name=") else None
        if query.get("watch") in ("true", "1"):
            self._watch(namespace, name, query)
        else:
            self.kube._record("list", url.path, query)
            self._list(namespace, name)

    def _get(self, namespace: str, name: str) -> None:
        with self.kube._lock:
            obj = self.kube._objects.get((namespace, name))
        if obj is None:
            self._json(404, _status(404, "NotFound", f'configmaps "{name}" not found'))
        else:
            self._json(200, obj)

    def _list(self, namespace: str, name: str | None) -> None:
        with self.kube._lock:
            items = [obj for (ns, n), obj in sorted(self.kube._objects.items())
                     if ns == namespace and name in (None, n)]
            rv = self.kube._rv
        self._json(200, {"kind": "ConfigMapList", "apiVersion": "v1", "metadata": {"resourceVersion": str(rv)},
                         "items": items})

    def _watch(self, namespace: str, name: str | None, query: dict[str, str]) -> None:
        kube = self.kube
        watch = _Watch(namespace, name)
        events = watch.queue
        since = query.get("resourceVersion")
        gone = False
        with kube._lock:
            if since is None or since == "":
                for _key, obj in sorted(kube._objects.items()):
                    if watch.selects(obj):
                        events.put(json.dumps({"type": "ADDED", "object": obj}).encode())
            elif int(since) <= kube._compacted or kube.always_gone:
                gone = True
            else:
                for rv, kind, obj in kube._history:
                    if rv > int(since) and watch.selects(obj):
                        events.put(json.dumps({"type": kind, "object": obj}).encode())
            if gone and kube.gone_as == "http":
                status = _status(410, "Expired", f"too old resource version: {since} ({kube._compacted})")
            elif gone:
                events.put(kube._gone_line())
                events.put(_END)
            else:
                kube._watches.append(watch)
            kube.requests.append(("watch", self.path, query))
            kube._lock.notify_all()
        if gone and kube.gone_as == "http":
            self._json(410, status)
            return
        self.close_connection = True
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Connection", "close")
        self.end_headers()
        deadline = time.monotonic() + float(query.get("timeoutSeconds", "1800"))
        try:
            while True:
                try:
                    item = events.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    item = _END  # timeoutSeconds elapsed: end the watch cleanly, as the API server does
                if item is _ABORT:
                    return  # the socket is closed without the terminating chunk
                if item is _END:
                    self.wfile.write(b"0\r\n\r\n")
                    return
                assert isinstance(item, bytes)
                line = item + b"\n"
                self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
                self.wfile.flush()
        except OSError:
            return  # the client went away
        finally:
            with kube._lock:
                if watch in kube._watches:
                    kube._watches.remove(watch)
                kube._lock.notify_all()

    def _json(self, code: int, body: Obj) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
