"""A real HTTP server on 127.0.0.1 serving a directory, with Range support and faults.

Used by the download tests: it stands in for kernel.org (unreachable here) and can
truncate responses or refuse Range to exercise resume and error paths.
"""

from __future__ import annotations

import http.server
import threading
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class MirrorState:
    root: Path
    truncate_at: int | None = None  # stop sending after this many body bytes, then close
    truncate_once: bool = False  # heal after the first truncated answer
    ranges: bool = True  # honour Range requests
    bytes_per_second: int | None = None  # throttle the body (a slow mirror, for lock tests)
    requests: list[dict] = field(default_factory=list)


def _handler(state: MirrorState):
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # keep test output quiet
            pass

        def do_GET(self) -> None:
            state.requests.append({"path": self.path, "range": self.headers.get("Range")})
            target = state.root / self.path.lstrip("/")
            if not target.is_file():
                self.send_error(404, "Not Found")
                return
            data = target.read_bytes()
            start = 0
            requested = self.headers.get("Range")
            if requested and state.ranges:
                start = int(requested.removeprefix("bytes=").split("-")[0])
                if start >= len(data):
                    self.send_error(416, "Range Not Satisfiable")
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            else:
                self.send_response(200)
            body = data[start:]
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Accept-Ranges", "bytes" if state.ranges else "none")
            self.end_headers()
            if state.truncate_at is not None:
                body = body[: max(0, state.truncate_at - start)]
                if state.truncate_once:
                    state.truncate_at = None
                self.wfile.write(body)
                self.wfile.flush()
                self.close_connection = True
                return
            if state.bytes_per_second:
                _throttled(self.wfile, body, state.bytes_per_second)
                return
            self.wfile.write(body)

    return Handler


def _throttled(out, body: bytes, rate: int) -> None:
    """Send ``body`` at about ``rate`` bytes a second, in tenth-of-a-second pieces."""
    import time

    piece = max(1, rate // 10)
    try:
        for start in range(0, len(body), piece):
            out.write(body[start:start + piece])
            out.flush()
            time.sleep(0.1)
    except (BrokenPipeError, ConnectionResetError):  # the client was killed mid-download
        pass


class Mirror:
    """Context manager: ``with Mirror(dir) as m: m.url`` is http://127.0.0.1:PORT."""

    def __init__(self, root: Path) -> None:
        self.state = MirrorState(root)
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(self.state))
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> Mirror:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
