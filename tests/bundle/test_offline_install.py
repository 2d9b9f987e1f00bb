"""The offline bundle installs and runs with the network really unreachable.

scripts/bundle builds the archive (this step may use the network, or uv's and pip's caches);
then, in a new network namespace where only loopback is up (`unshare --net`), with
PIP_INDEX_URL pointing at a closed loopback port and UV_OFFLINE=1, install.sh installs it and
the installed `wharf` prints its version and serves `GET /v2/` on the embedded default. The
installed distributions must be exactly the runtime set of uv.lock plus Wharf.

Needs root (to create the namespace) and `unshare` (util-linux, Essential on Debian).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from packaging.markers import Marker

pytestmark = pytest.mark.once

ROOT = Path(__file__).resolve().parents[2]
CHECK = Path(__file__).with_name("offline_check.py")


def canon(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def lock_runtime_set(src: Path) -> dict[str, str]:
    """Name -> version of uv.lock's runtime dependencies that apply to this interpreter."""
    out = subprocess.run(
        [
            "uv", "export", "--frozen", "--no-dev", "--no-emit-project", "--no-hashes",
            "--no-annotate", "--no-header", "--format", "requirements-txt",
        ],
        cwd=src, check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    wanted = {}
    for line in out.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        requirement, _, marker = line.partition(";")
        name, _, version = requirement.strip().partition("==")
        if not marker.strip() or Marker(marker.strip()).evaluate():
            wanted[canon(name.split("[")[0])] = version.strip()
    return wanted


@pytest.fixture
def tmp_dir() -> Iterator[Path]:
    """A scratch directory removed at the end, passed or failed (the bundle, the extracted
    copy and the installed environment take some 300 MB)."""
    with tempfile.TemporaryDirectory(prefix="wharf-offline-test-") as name:
        yield Path(name)


def test_offline_install(tmp_dir: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("creating a network namespace needs root")
    if shutil.which("unshare") is None:
        pytest.fail("unshare is missing: install the Debian package util-linux")
    # Build from the last commit (what a release ships, and deaf to half-done edits of the
    # working tree), and expect what that commit's pyproject.toml and uv.lock say.
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout.strip()
    src = tmp_dir / "src"
    src.mkdir()
    subprocess.run(
        f"git archive {commit} pyproject.toml uv.lock | tar -x -C {src}",
        shell=True, cwd=ROOT, check=True,
    )  # fmt: skip
    version = tomllib.loads((src / "pyproject.toml").read_text())["project"]["version"]
    wanted = lock_runtime_set(src)

    started = time.monotonic()
    built = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bundle"), "--ref", commit,
         "--output", str(tmp_dir), "--python", sys.executable],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    build_seconds = time.monotonic() - started
    assert built.returncode == 0, built.stderr[-4000:]
    archive = Path(built.stdout.strip().splitlines()[-1])
    assert archive.parent == tmp_dir
    assert re.fullmatch(rf"wharf-offline-{re.escape(version)}-cp3\d+-\w+\.tar\.gz", archive.name)
    _, name = archive.with_name(archive.name + ".sha256").read_text().split()
    assert name == archive.name
    assert subprocess.run(["sha256sum", "--quiet", "-c", f"{archive.name}.sha256"],
                          cwd=tmp_dir).returncode == 0  # fmt: skip

    with tarfile.open(archive) as tar:
        tar.extractall(tmp_dir / "x", filter="data")
    (bundle,) = (tmp_dir / "x").iterdir()
    for member in ("install.sh", "README.md", "SHA256SUMS", "requirements.txt"):
        assert (bundle / member).is_file(), member
    wheels = sorted(p.name for p in (bundle / "wheels").iterdir())
    assert all(w.endswith(".whl") for w in wheels), wheels  # binary wheels only, no sdists
    assert len(wheels) == len(wanted) + 1  # + wharf

    work = tmp_dir / "work"
    work.mkdir()
    prefix = tmp_dir / "prefix"
    # --pid with --kill-child: when unshare ends (or is killed on timeout), the kernel kills
    # every process of the namespace, so no `wharf serve` can outlive the test.
    started = time.monotonic()
    offline = subprocess.run(
        ["unshare", "--net", "--pid", "--fork", "--kill-child",
         sys.executable, str(CHECK), str(bundle), str(prefix), str(work), sys.executable],
        capture_output=True, text=True, timeout=400,
    )  # fmt: skip
    offline_seconds = time.monotonic() - started
    assert offline.returncode == 0, offline.stderr[-4000:]
    report = json.loads(offline.stdout.strip().splitlines()[-1])

    assert report["up"] == ["lo"], report["up"]  # only loopback
    assert report["outside"] in ("ENETUNREACH", "EHOSTUNREACH"), report["outside"]
    assert report["install"]["rc"] == 0, report["install"]["output"]
    assert report["version"] == version
    assert report["wharf_file"].startswith(str(prefix)), report["wharf_file"]
    assert report.get("v2_status") in (200, 401), report["serve_log"]
    assert report["serve_exit_before_stop"] is None, report["serve_log"]

    installed = {canon(n): v for n, v in report["dists"].items()}
    assert installed == {**wanted, "wharf": version}

    print(
        f"bundle: built in {build_seconds:.1f} s, {archive.stat().st_size / 1e6:.1f} MB, "
        f"{len(wheels)} wheels; offline install + serve check {offline_seconds:.1f} s "
        f"(install.sh {report['install']['seconds']} s)"
    )
