"""The HTTP side of the sandbox's own JSON-RPC servers (the Solana and zkSync stand-ins): read the body,
answer a parse error or each request of a batch, reply. A server only says how to answer one request."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MAX_BODY_BYTES = 16 * 1024 * 1024


def answer(request_id: Any, **outcome: Any) -> dict[str, Any]:
    """A JSON-RPC answer: answer(id, result=...) or answer(id, error={"code": ..., "message": ...})."""
    return {"jsonrpc": "2.0", "id": request_id, **outcome}


def make_handler(answer_one: Callable[[dict[str, Any]], Any]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the http.server API
            length = int(self.headers.get("content-length") or 0)
            if length > MAX_BODY_BYTES:
                self.send_error(413)
                return
            try:
                body = json.loads(self.rfile.read(length))
            except ValueError:
                self.reply(answer(None, error={"code": -32700, "message": "Parse error"}))
                return
            self.reply([self.one(r) for r in body] if isinstance(body, list) else self.one(body))

        def one(self, request: Any) -> Any:
            if not isinstance(request, dict):
                return answer(None, error={"code": -32600, "message": "Invalid request"})
            return answer_one(request)

        def reply(self, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            return

    return Handler


def serve(host: str, port: int, answer_one: Callable[[dict[str, Any]], Any]) -> None:
    """Serve until killed, one thread per connection."""
    server = ThreadingHTTPServer((host, port), make_handler(answer_one))
    server.daemon_threads = True
    server.serve_forever()


@contextlib.contextmanager
def serving_in_thread(answer_one: Callable[[dict[str, Any]], Any]) -> Iterator[str]:
    """A server on a free loopback port in a background thread, for as long as the block runs: its URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(answer_one))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
