"""A real OCI registry for the tests, and a real HTTP proxy in front of it that breaks things.

``Registry`` runs Debian's ``docker-registry`` (the CNCF distribution registry) on
127.0.0.1 with its storage in the test's tmp_path, optionally behind htpasswd. ``Faults``
is a threading HTTP proxy that forwards every request to it and, when told, answers a
status instead (401/404/500), cuts a blob off half way, flips bytes of a blob, or trickles
it slowly (so that a test can interrupt a pull in the middle).
"""

from __future__ import annotations

import http.client
import os
import shutil
import socket
import subprocess
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

# the ports this workplace gives the registry tests (CI: any free port there)
PORTS = [int(p) for p in os.environ.get("KERNLAB_TEST_REGISTRY_PORTS", "5101-5109").split("-")]


def free_port() -> int:
    first, last = PORTS[0], PORTS[-1]
    for port in range(first, last + 1):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    pytest.skip(f"no free port in {first}-{last} for the test registry")


def need_registry() -> str:
    binary = shutil.which("docker-registry")
    if not binary:
        pytest.skip("docker-registry is not installed (apt-get install docker-registry)")
    return binary


def htpasswd(path: Path, user: str, password: str) -> None:
    """An htpasswd file with one bcrypt entry (the registry accepts only bcrypt)."""
    if not shutil.which("htpasswd"):
        pytest.skip("htpasswd is not installed (apt-get install apache2-utils)")
    subprocess.run(["htpasswd", "-Bbc", str(path), user, password], check=True, capture_output=True)


@dataclass
class Registry:
    """``docker-registry serve`` on 127.0.0.1:port, storage under ``root``."""

    root: Path
    port: int = 0
    auth: tuple[str, str] | None = None
    process: subprocess.Popen | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> Registry:
        binary = need_registry()
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        auth = ""
        if self.auth:
            htpasswd(self.root / "htpasswd", *self.auth)
            auth = f"auth:\n  htpasswd:\n    realm: kernlab-test\n    path: {self.root / 'htpasswd'}\n"
        config = self.root / "config.yml"
        config.write_text(f"version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n"
                          f"    rootdirectory: {self.root / 'data'}\n  delete:\n    enabled: true\n"
                          f"http:\n  addr: 127.0.0.1:{self.port}\n{auth}")
        log = open(self.root / "registry.log", "w")  # noqa: SIM115 - kept open for the process
        self.process = subprocess.Popen([binary, "serve", str(config)], stdout=log, stderr=log)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"http://{self.host}/v2/", timeout=1)
                return self
            except urllib.error.HTTPError:
                return self  # 401: up, wants credentials
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"docker-registry did not start: {(self.root / 'registry.log').read_text()}")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


@dataclass
class Faults:
    """A proxy on 127.0.0.1 in front of ``upstream``; ``rules`` say what to break.

    Each rule is (method, path substring, action, times): action ``401``/``404``/``500``
    answers that status, ``cut`` sends half the body then closes, ``corrupt`` flips a
    byte in the body, ``slow`` sends it 64 KiB per 0.2 s. ``times`` rules apply that often
    (0: always). ``seen`` lists the requests (method, path) that passed through.
    """

    upstream: str
    port: int = 0
    rules: list[list] = field(default_factory=list)
    seen: list[tuple[str, str]] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def add(self, method: str, path: str, action: str, times: int = 0) -> None:
        self.rules.append([method, path, action, times])

    def clear(self) -> None:
        self.rules.clear()

    def _rule(self, method: str, path: str) -> str | None:
        for rule in self.rules:
            if rule[0] == method and rule[1] in path:
                if rule[3] == 1:
                    self.rules.remove(rule)
                elif rule[3] > 1:
                    rule[3] -= 1
                return rule[2]
        return None

    def start(self) -> Faults:
        proxy = self
        self.port = self.port or free_port()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _forward(self) -> None:
                proxy.seen.append((self.command, self.path))
                action = proxy._rule(self.command, self.path)
                if action in ("401", "404", "500"):
                    body = b'{"errors":[{"code":"INJECTED","message":"injected by the test"}]}'
                    self.send_response(int(action))
                    if action == "401":
                        self.send_header("Www-Authenticate", 'Basic realm="kernlab-test"')
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                length = int(self.headers.get("Content-Length") or 0)
                data = self.rfile.read(length) if length else None
                conn = http.client.HTTPConnection(proxy.upstream, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                conn.request(self.command, self.path, body=data, headers=headers)
                answer = conn.getresponse()
                body = answer.read()
                self.send_response(answer.status)
                for key, value in answer.getheaders():
                    if key.lower() not in ("connection", "transfer-encoding", "content-length"):
                        self.send_header(key, value.replace(proxy.upstream, proxy.host))
                self.send_header("Content-Length", str(len(body)))
                if action == "cut":
                    self.send_header("Connection", "close")
                self.end_headers()
                if self.command == "HEAD":
                    return
                if action == "cut":
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                if action == "corrupt" and body:
                    body = bytes([body[0] ^ 0xFF]) + body[1:]
                if action == "slow":
                    for start in range(0, len(body), 64 << 10):
                        self.wfile.write(body[start:start + (64 << 10)])
                        self.wfile.flush()
                        time.sleep(0.2)
                    return
                self.wfile.write(body)

            do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server:
            self.server.shutdown()
            self.server.server_close()
