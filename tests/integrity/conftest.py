"""Fixtures for the data-integrity tests: registries of a test's own that can be stopped,
SIGKILLed and started again on the same data directory."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest


def _root_conftest():  # type: ignore[no-untyped-def]
    """tests/conftest.py as a module (it is not importable by name next to this conftest)."""
    name = "_wharf_tests_root_conftest"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            name, Path(__file__).parents[1] / "conftest.py"
        )
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


_root = _root_conftest()
WharfServer = _root.WharfServer
free_port = _root.free_port
start_server = _root.start_server


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: pushes and pulls a GiB; takes tens of seconds")


class Servers:
    """Starts registries on a test's tmp dir and stops whatever is still running at teardown."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.started: list[WharfServer] = []

    def start(self, workers: int = 1, env: dict[str, str] | None = None) -> WharfServer:
        server = start_server(self.tmp, workers=workers, env=env or {})
        self.started.append(server)
        return server

    def restart(
        self, old: WharfServer, *, new_port: bool = True, workers: int | None = None
    ) -> WharfServer:
        """A new `wharf serve` on old's data dir (old must have been stopped or killed)."""
        assert old.proc is not None and old.proc.poll() is not None, "stop or kill it first"
        server = WharfServer(
            data_dir=old.data_dir,
            port=free_port() if new_port else old.port,
            admin_password=old.admin_password,
            workers=old.workers if workers is None else workers,
            db_url=old.db_url,
        )
        server.start()
        self.started.append(server)
        return server

    def stop_all(self) -> None:
        for server in self.started:
            server.stop()


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[Servers]:
    s = Servers(tmp_path)
    yield s
    s.stop_all()


@pytest.fixture
def server(servers: Servers) -> WharfServer:
    """A single-worker registry of the test's own."""
    return servers.start()
