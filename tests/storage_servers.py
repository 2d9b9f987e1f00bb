"""Real cloud object-store emulators for tests: S3 (moto in server mode), Google Cloud Storage
(gcp-storage-emulator) and Azure Blob Storage (Azurite, from tests/node).

Each runs as a separate process on a free loopback port, speaking the cloud's HTTP protocol,
so Wharf's drivers and the cloud SDKs talk to it exactly as to the real service. Nothing is
installed here: the Python emulators come with the dev dependencies (uv.lock), Azurite with
`scripts/install-test-deps` (`npm ci` in tests/node).

    with s3_emulator() as s3:            # or the session fixture `s3_server` (tests/conftest.py)
        url = s3.url("registry")         # a fresh bucket, created here, and a prefix
        env = {**os.environ, **s3.env}   # what a `wharf serve` process needs
        s3.client().list_objects_v2(Bucket=s3.bucket_of(url))

Every process is started in its own process group and stopped (SIGTERM, then SIGKILL) with its
children when the context ends, at interpreter exit, and (PR_SET_PDEATHSIG) when the Python
thread that started it dies, so none outlives the test run.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import pytest

STARTUP_TIMEOUT = 30.0
NODE_DIR = Path(__file__).resolve().parent / "node"
AZURITE_BLOB = NODE_DIR / "node_modules" / "azurite" / "dist" / "src" / "blob" / "main.js"

# Azurite's well-known development account (documented by Microsoft; not a secret).
AZURE_ACCOUNT = "devstoreaccount1"
AZURE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
S3_REGION = "us-east-1"
GCS_PROJECT = "test"

_PR_SET_PDEATHSIG = 1
_libc: Any = None
with contextlib.suppress(OSError):
    _libc = ctypes.CDLL(None, use_errno=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _child_setup() -> None:  # runs in the child between fork and exec
    os.setsid()  # its own process group: stopping it stops its children too
    if _libc is not None:  # die with the thread that started it, even if that is SIGKILLed
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _new_name() -> str:
    """A bucket/container name valid everywhere: 3-63 of [a-z0-9-], starting with a letter."""
    return f"wharf-{secrets.token_hex(8)}"


class EmulatorServer:
    """A running emulator process. Subclasses know the cloud: its URL form and its SDK."""

    kind = ""  # "s3" | "gcs" | "azure"

    def __init__(self, port: int, work_dir: Path) -> None:
        self.port = port
        self.work_dir = work_dir
        self.log_path = work_dir / f"{self.kind}-emulator.log"
        self.proc: subprocess.Popen | None = None
        self.startup_seconds = 0.0  # from spawning the process to its first answer
        self._client: Any = None
        self._lock = threading.Lock()

    # What the tests use ------------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        """The emulator's base URL (http://127.0.0.1:PORT)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        """Environment variables a Wharf process needs to reach this emulator."""
        raise NotImplementedError

    def client(self) -> Any:
        """The cloud SDK's client for this emulator (one per server, created on first use)."""
        with self._lock:
            if self._client is None:
                self._client = self._make_client()
            return self._client

    def new_bucket(self) -> str:
        """Creates a fresh, empty bucket (container); its name."""
        name = _new_name()
        self._create_bucket(name)
        return name

    def url(self, bucket_prefix: str = "", *, bucket: str | None = None) -> str:
        """The Wharf storage URL of `bucket_prefix` in a fresh bucket (created here), or in
        `bucket` when given (an existing one, e.g. from new_bucket())."""
        name = bucket or self.new_bucket()
        prefix = quote(bucket_prefix.strip("/"), safe="/-_.~")
        return f"{self._scheme}://{name}/{prefix}?{self._query}"

    @staticmethod
    def bucket_of(url: str) -> str:
        """The bucket (container) name in a storage URL made by url()."""
        return urlsplit(url).netloc

    # Per cloud -----------------------------------------------------------------------------

    _scheme = ""

    @property
    def _query(self) -> str:
        raise NotImplementedError

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _process_env(self) -> dict[str, str]:
        return dict(os.environ)

    def _make_client(self) -> Any:
        raise NotImplementedError

    def _create_bucket(self, name: str) -> None:
        raise NotImplementedError

    def _answers(self) -> bool:
        """True once the emulator serves HTTP (any status)."""
        try:
            httpx.get(f"{self.endpoint}/", timeout=1, trust_env=False)  # no HTTP(S)_PROXY
        except httpx.HTTPError:
            return False
        return True

    # Process -------------------------------------------------------------------------------

    def start(self) -> None:
        started = time.monotonic()
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self._command(),
                cwd=self.work_dir,
                env=self._process_env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_child_setup,
            )
        deadline = started + STARTUP_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                raise EmulatorExited(
                    f"{self.kind} emulator exited with status {self.proc.returncode} while "
                    f"starting ({' '.join(self._command())}):\n{self.log()}"
                )
            if self._answers():
                break
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"{self.kind} emulator did not answer on {self.endpoint} within "
                    f"{STARTUP_TIMEOUT:.0f} s ({' '.join(self._command())}):\n{self.log()}"
                )
            time.sleep(0.05)
        self.startup_seconds = time.monotonic() - started

    def log(self) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return text[-20000:] or "(empty log)"

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)
        # The group may hold children even when the leader has exited.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        if proc.poll() is None:
            proc.wait()


class EmulatorExited(RuntimeError):
    pass


class S3Server(EmulatorServer):
    """moto in server mode (`python -m moto.server`): S3 on path-style URLs, any credentials."""

    kind = "s3"
    _scheme = "s3"
    access_key = "testing"
    secret_key = "testing"  # moto accepts any

    @property
    def env(self) -> dict[str, str]:
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    @property
    def _query(self) -> str:
        return f"endpoint={self.endpoint}&region={S3_REGION}&path_style=true"

    def _command(self) -> list[str]:
        return [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)]

    def _process_env(self) -> dict[str, str]:
        env = dict(os.environ)
        # Objects above ~5 MB are spooled to temporary files: keep them in our work dir.
        env["TMPDIR"] = str(self.work_dir)
        return env

    def _make_client(self) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.session.Session().client(
            "s3",
            region_name=S3_REGION,
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            config=Config(s3={"addressing_style": "path"}, signature_version="s3v4"),
        )

    def _create_bucket(self, name: str) -> None:
        self.client().create_bucket(Bucket=name)


class GCSServer(EmulatorServer):
    """gcp-storage-emulator: the GCS JSON API (with resumable uploads and compose), objects on
    disk in the work dir, anonymous access."""

    kind = "gcs"
    _scheme = "gs"

    @property
    def env(self) -> dict[str, str]:
        return {"STORAGE_EMULATOR_HOST": self.endpoint}

    @property
    def _query(self) -> str:
        return f"endpoint={self.endpoint}&project={GCS_PROJECT}"

    def _command(self) -> list[str]:
        data = self.work_dir / "data"
        return [
            *[sys.executable, "-m", "gcp_storage_emulator", "--data-dir", str(data)],
            *["start", "--host", "127.0.0.1", "--port", str(self.port)],
        ]

    def _make_client(self) -> Any:
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        return storage.Client(
            project=GCS_PROJECT,
            credentials=AnonymousCredentials(),
            client_options={"api_endpoint": self.endpoint},
        )

    def _create_bucket(self, name: str) -> None:
        self.client().create_bucket(name)


class AzureServer(EmulatorServer):
    """Azurite's blob service (from tests/node), the well-known devstoreaccount1 account."""

    kind = "azure"
    _scheme = "az"
    account = AZURE_ACCOUNT
    key = AZURE_KEY

    @property
    def account_url(self) -> str:
        return f"{self.endpoint}/{self.account}"

    @property
    def env(self) -> dict[str, str]:
        return {"AZURE_STORAGE_KEY": self.key}

    @property
    def _query(self) -> str:
        return f"account={self.account}&endpoint={self.account_url}"

    def _command(self) -> list[str]:
        node = shutil.which("node")
        if node is None or not AZURITE_BLOB.is_file():
            raise RuntimeError(
                f"Azurite is not installed (no `node`, or no {AZURITE_BLOB}): "
                "run scripts/install-test-deps"
            )
        location = self.work_dir / "data"
        location.mkdir(exist_ok=True)
        return [
            node,
            "--max-old-space-size=256",
            str(AZURITE_BLOB),
            *["--blobHost", "127.0.0.1", "--blobPort", str(self.port)],
            *["--location", str(location)],
            "--silent",
            "--skipApiVersionCheck",
            "--loose",
            "--disableTelemetry",
            "--disableProductStyleUrl",
        ]

    def _make_client(self) -> Any:
        from azure.storage.blob import BlobServiceClient

        return BlobServiceClient(
            account_url=self.account_url,
            credential={"account_name": self.account, "account_key": self.key},
        )

    def _create_bucket(self, name: str) -> None:
        self.client().create_container(name)


_running: set[EmulatorServer] = set()


@atexit.register
def _stop_all() -> None:
    for server in list(_running):
        server.stop()


@contextlib.contextmanager
def _emulator(cls: type[EmulatorServer], work_dir: Path | None) -> Iterator[EmulatorServer]:
    own_dir = work_dir is None
    if work_dir is None:
        work_dir = Path(tempfile.mkdtemp(prefix=f"wharf-{cls.kind}-emulator-"))
    server: EmulatorServer | None = None
    try:
        for attempt in range(3):
            server = cls(_free_port(), work_dir)
            _running.add(server)
            try:
                server.start()
                break
            except EmulatorExited:
                # Most likely another process took the free port between our probe and the
                # emulator's bind; try another one.
                _running.discard(server)
                if attempt == 2:
                    raise
        assert server is not None
        yield server
    finally:
        if server is not None:
            server.stop()
            _running.discard(server)
        if own_dir:
            shutil.rmtree(work_dir, ignore_errors=True)


def s3_emulator(work_dir: Path | None = None) -> contextlib.AbstractContextManager[S3Server]:
    """moto's S3 server, running until the context ends. Data and log go to `work_dir`
    (kept), or to a temporary directory (removed at the end)."""
    return _emulator(S3Server, work_dir)  # type: ignore[return-value]


def gcs_emulator(work_dir: Path | None = None) -> contextlib.AbstractContextManager[GCSServer]:
    """gcp-storage-emulator, running until the context ends. Data and log go to `work_dir`
    (kept), or to a temporary directory (removed at the end)."""
    return _emulator(GCSServer, work_dir)  # type: ignore[return-value]


def azure_emulator(work_dir: Path | None = None) -> contextlib.AbstractContextManager[AzureServer]:
    """Azurite's blob service, running until the context ends. Data and log go to `work_dir`
    (kept), or to a temporary directory (removed at the end)."""
    return _emulator(AzureServer, work_dir)  # type: ignore[return-value]


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """One moto S3 server for the whole session (tests use fresh buckets).
    Its data and log (`log_path`) stay in pytest's temporary directory."""
    with s3_emulator(tmp_path_factory.mktemp("s3-emulator")) as server:
        yield server


@pytest.fixture(scope="session")
def gcs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GCSServer]:
    """One GCS emulator for the whole session (tests use fresh buckets).
    Its data and log (`log_path`) stay in pytest's temporary directory."""
    with gcs_emulator(tmp_path_factory.mktemp("gcs-emulator")) as server:
        yield server


@pytest.fixture(scope="session")
def azure_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AzureServer]:
    """One Azurite blob service for the whole session (tests use fresh containers).
    Its data and log (`log_path`) stay in pytest's temporary directory."""
    with azure_emulator(tmp_path_factory.mktemp("azure-emulator")) as server:
        yield server
