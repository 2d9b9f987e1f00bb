"""Fixtures for driving real registry clients (skopeo, podman, buildah) against `wharf_server`.

Every client runs with a private, throwaway environment under `tmp_path`: HOME/XDG dirs, auth
file, registries.conf, signature policy, blob-info cache, and (podman/buildah) a vfs image store.
Nothing is written to /var/lib/containers, /run/containers, /run/libpod or ~/.docker.

The clients are installed by `scripts/install-test-deps`; a missing one is a failure, not a skip.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

Runner = Callable[..., subprocess.CompletedProcess]


def require_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed; run scripts/install-test-deps")
    return path


def run(
    cmd: list[str], *, env: dict[str, str], check: bool = True, binary: bool = False
) -> subprocess.CompletedProcess:
    """Run a client command; on unexpected failure, fail the test with its full output."""
    proc = subprocess.run(
        cmd, env=env, capture_output=True, text=not binary, timeout=300, stdin=subprocess.DEVNULL
    )
    if check and proc.returncode != 0:
        pytest.fail(
            f"`{shlex.join(cmd)}` exited {proc.returncode}\n"
            f"--- stdout ---\n{proc.stdout!r}\n--- stderr ---\n{proc.stderr!r}"
        )
    return proc


def isolated_client_env(base: Path, hosts: list[str]) -> dict[str, str]:
    """Environment for containers/image based tools (skopeo, podman, buildah), isolated under
    `base`, trusting these registry hosts over plain HTTP. Writes the policy (accept unsigned
    images) to `base`/home/.config/containers/policy.json."""
    home = base / "home"
    config = home / ".config"
    (config / "containers").mkdir(parents=True)
    for d in ("data", "run", "tmp"):
        (base / d).mkdir()
    (base / "run").chmod(0o700)

    # Accept unsigned images; user-level policy.json is preferred over /etc/containers.
    policy = config / "containers" / "policy.json"
    policy.write_text(json.dumps({"default": [{"type": "insecureAcceptAnything"}]}))
    registries = config / "containers" / "registries.conf"
    registries.write_text(
        "unqualified-search-registries = []\n"
        + "".join(f'\n[[registry]]\nlocation = "{h}"\ninsecure = true\n' for h in hosts)
    )
    auth_file = base / "auth.json"
    auth_file.write_text('{"auths": {}}')

    env = {k: v for k, v in os.environ.items() if not k.startswith(("REGISTRY_", "CONTAINERS_"))}
    env.update(
        HOME=str(home),
        XDG_CONFIG_HOME=str(config),
        XDG_DATA_HOME=str(base / "data"),
        XDG_RUNTIME_DIR=str(base / "run"),
        TMPDIR=str(base / "tmp"),
        REGISTRY_AUTH_FILE=str(auth_file),
        CONTAINERS_REGISTRIES_CONF=str(registries),
        # containers/image keeps its blob-info cache in /var/lib/containers/cache when euid is 0
        # and there is no flag to move it; claiming a non-root uid makes it use XDG_DATA_HOME.
        _CONTAINERS_ROOTLESS_UID="1000",
        _CONTAINERS_ROOTLESS_GID="1000",
    )
    return env


@pytest.fixture
def client_env(tmp_path: Path, wharf_server) -> dict[str, str]:
    """Environment for containers/image based tools, isolated under tmp_path."""
    return isolated_client_env(tmp_path / "client-env", [wharf_server.host])


@pytest.fixture
def auth_file(client_env: dict[str, str]) -> Path:
    return Path(client_env["REGISTRY_AUTH_FILE"])


@pytest.fixture
def skopeo(client_env: dict[str, str], tmp_path: Path) -> Runner:
    """`skopeo(*args, check=True, binary=False)` with the isolated environment."""
    exe = require_tool("skopeo")
    policy = Path(client_env["XDG_CONFIG_HOME"]) / "containers" / "policy.json"

    def _skopeo(*args: str, check: bool = True, binary: bool = False):
        cmd = [exe, "--policy", str(policy), "--tmpdir", client_env["TMPDIR"], *args]
        return run(cmd, env=client_env, check=check, binary=binary)

    return _skopeo


@pytest.fixture
def store_args(tmp_path: Path) -> Iterator[list[str]]:
    """Global flags giving podman and buildah one private vfs store."""
    # podman refuses a runroot longer than 50 characters, which tmp_path usually is.
    runroot = tempfile.mkdtemp(prefix="wharf-runroot-")
    yield [
        "--root",
        str(tmp_path / "store" / "root"),
        "--runroot",
        runroot,
        "--storage-driver",
        "vfs",
    ]
    shutil.rmtree(runroot, ignore_errors=True)


@pytest.fixture
def podman(client_env: dict[str, str], store_args: list[str], tmp_path: Path) -> Runner:
    """`podman(*args, check=True)`: private store, no events, no cgroups, state in tmp."""
    exe = require_tool("podman")
    libpod_tmp = tmp_path / "store" / "libpod"

    def _podman(*args: str, check: bool = True, binary: bool = False):
        cmd = [
            exe,
            *store_args,
            "--tmpdir",
            str(libpod_tmp),
            "--cgroup-manager",
            "cgroupfs",
            "--events-backend",
            "none",
            *args,
        ]
        return run(cmd, env=client_env, check=check, binary=binary)

    return _podman


@pytest.fixture
def buildah(client_env: dict[str, str], store_args: list[str]) -> Runner:
    """`buildah(*args, check=True)` sharing podman's private store."""
    exe = require_tool("buildah")

    def _buildah(*args: str, check: bool = True, binary: bool = False):
        return run([exe, *store_args, *args], env=client_env, check=check, binary=binary)

    return _buildah
