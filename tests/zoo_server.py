"""A loopback HTTP server with Range support standing in for a checkpoint publisher in tests."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import yaml


@dataclass
class Publisher:
    """Files served by path; `cut_next` truncates the next response after that many bytes."""

    files: dict[str, bytes] = field(default_factory=dict)
    cut_next: int | None = None
    ranges: list[str | None] = field(default_factory=list)
    base: str = ""


def _handler(pub: Publisher) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:  # keep test output clean
            pass

        def do_GET(self) -> None:
            data = pub.files.get(self.path)
            rng = self.headers.get("Range")
            pub.ranges.append(rng)
            if data is None:
                self.send_error(404)
                return
            start = int(rng.split("=")[1].split("-")[0]) if rng else 0
            if start >= len(data):
                self.send_error(416)
                return
            body = data[start:]
            self.send_response(206 if rng else 200)
            self.send_header("Content-Length", str(len(body)))
            if rng:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.end_headers()
            if pub.cut_next is not None:
                body, pub.cut_next = body[: pub.cut_next], None
                self.wfile.write(body)
                self.close_connection = True
                return
            self.wfile.write(body)

    return Handler


@contextmanager
def serve(pub: Publisher) -> Iterator[Publisher]:
    """Serve PUB on 127.0.0.1 (a free port) for the duration of the block, then stop."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(pub))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    pub.base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield pub
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def zoo_file(tmp_path: Path, entries: list[dict]) -> Path:
    """A zsbench.zoo/1 file of `entries` (test defaults for the fields they leave out)."""
    base = {
        "format": "zsbench",
        "arch": None,
        "base_weights": None,
        "license": "MIT",
        "paper": None,
        "source": "test",
        "sha256": None,
    }
    path = tmp_path / "zoo.yaml"
    path.write_text(yaml.safe_dump({"schema": "zsbench.zoo/1", "entries": [{**base, **e} for e in entries]}))
    return path
