"""Running `wharf` commands and replicas for the bootstrapper tests."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.conftest import free_port


def wharf(*args: str, env: dict[str, str] | None = None, timeout: float = 180):
    return subprocess.run(
        [sys.executable, "-m", "wharf", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        stdin=subprocess.DEVNULL,
    )


class Replica:
    """`wharf serve --config <data-dir>/wharf.toml` of an installed or joined replica."""

    def __init__(self, data_dir: Path, env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.env = env or {}
        self.proc: subprocess.Popen | None = None
        self.log = data_dir.parent / f"{data_dir.name}.log"
        config = (data_dir / "wharf.toml").read_text()
        self.https_port = self.http_port = None
        for line in config.splitlines():
            key, _, value = line.partition(" = ")
            if key in ("http_addr", "https_addr"):
                setattr(self, key.replace("_addr", "_port"), int(value.strip('"').rsplit(":")[1]))

    @property
    def url(self) -> str:
        if self.https_port:
            return f"https://localhost:{self.https_port}"
        return f"http://127.0.0.1:{self.http_port}"

    def ssl_context(self) -> ssl.SSLContext | bool:
        if not self.https_port:
            return True
        return ssl.create_default_context(cafile=str(self.data_dir / "tls" / "ca.crt"))

    def client(self, auth=None) -> httpx.Client:
        return httpx.Client(base_url=self.url, verify=self.ssl_context(), auth=auth, timeout=60)

    def start(self, expect_exit: bool = False) -> subprocess.Popen:
        out = self.log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "wharf", "serve", "--config", str(self.data_dir / "wharf.toml")],
            env={**os.environ, **self.env},
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        if not expect_exit:
            self.wait_ready()
        return self.proc

    def wait_ready(self, timeout: float = 40) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"replica exited:\n{self.log.read_text()}")
            try:
                with self.client() as c:
                    if c.get("/v2/").status_code in (200, 401):
                        return
            except (httpx.HTTPError, ssl.SSLError):
                pass
            time.sleep(0.2)
        raise RuntimeError(f"replica did not start:\n{self.log.read_text()}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def install_args(data_dir: Path, db: str, *extra: str) -> list[str]:
    http, https = free_port(), free_port()
    return [
        "install",
        "--non-interactive",
        "--external-url",
        f"https://localhost:{https}",
        "--http-port",
        str(http),
        "--https-port",
        str(https),
        "--bind-address",
        "127.0.0.1",
        "--db",
        db,
        "--data-dir",
        str(data_dir),
        *extra,
    ]
