"""A scripted OpenAI-compatible HTTP server on 127.0.0.1 for the openai backend's retry paths.

Each POST path has a queue of replies, served in order (the last one repeats), or a function
choosing the reply from the request's JSON: an HTTP status with headers and a JSON body (or a
function of the request's JSON), an optional delay before answering, or a dropped
connection. It records every request (headers with lower-case names) and the most requests
it ever had in flight, so tests can check retries and bounded concurrency. Delays end early
when the server stops, so a deliberately slow server never outlives its test.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MODELS = {"object": "list", "data": [{"id": "tiny", "object": "model", "max_model_len": 2048}]}


def chat_reply(request: dict[str, Any]) -> dict[str, Any]:
    """A valid chat completion echoing the user's text, n choices, usage only (no token ids)."""
    text = "echo: " + request["messages"][-1]["content"]
    n = request.get("n", 1)
    choices = [
        {"index": i, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        for i in range(n)
    ]
    return {"choices": choices, "usage": {"completion_tokens": 5 * n - 1}}


@dataclass
class Reply:
    status: int = 200
    body: dict[str, Any] | Callable[[dict[str, Any]], dict[str, Any]] = field(default=chat_reply)
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    drop: bool = False  # close the connection without answering


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    json: Any


Route = list[Reply] | Callable[[Any], Reply]


class FakeServer:
    def __init__(self, routes: dict[str, Route], models: Reply | None = None, port: int = 0):
        self.routes = {
            path: route if callable(route) else list(route) for path, route in routes.items()
        }
        self.models = models or Reply(body=MODELS)
        self.requests: list[Seen] = []
        self.in_flight = self.max_in_flight = 0
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), daemon=True
        )

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def posts(self, path: str) -> list[Seen]:
        return [r for r in self.requests if r.method == "POST" and r.path == path]

    def __enter__(self) -> FakeServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stopped.set()
        self._server.shutdown()
        self._server.server_close()

    def _next(self, path: str, payload: Any) -> Reply | None:
        with self._lock:
            route = self.routes.get(path)
            if callable(route):
                return route(payload)
            if not route:
                return None
            return route.pop(0) if len(route) > 1 else route[0]

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output clean
                pass

            def do_GET(self) -> None:
                self._serve(
                    "GET",
                    fake.models if self.path == "/v1/models" else Reply(404, {"error": "no route"}),
                )

            def do_POST(self) -> None:
                size = int(self.headers.get("content-length") or 0)
                payload = json.loads(self.rfile.read(size) or b"null")
                reply = fake._next(self.path, payload) or Reply(
                    404, {"error": {"message": f"no route {self.path}"}}
                )
                self._serve("POST", reply, payload)

            def _serve(self, method: str, reply: Reply, payload: Any = None) -> None:
                with fake._lock:
                    headers = {k.lower(): v for k, v in self.headers.items()}
                    fake.requests.append(Seen(method, self.path, headers, payload))
                    fake.in_flight += 1
                    fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
                try:
                    fake._stopped.wait(reply.delay)
                    if reply.drop:
                        self.close_connection = True
                        return
                    body = reply.body(payload) if callable(reply.body) else reply.body
                    data = json.dumps(body).encode()
                    self.send_response(reply.status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(data)))
                    for k, v in reply.headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up first (a timeout test)
                finally:
                    with fake._lock:
                        fake.in_flight -= 1

        return Handler
