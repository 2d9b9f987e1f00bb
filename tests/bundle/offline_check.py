"""Runs inside a new network namespace (see test_offline_install.py): brings up loopback only,
proves the outside is unreachable, installs the bundle with install.sh, then runs the
installed `wharf version` and `wharf serve` and reports what it saw as one JSON line.

    python offline_check.py BUNDLE_DIR PREFIX WORK_DIR PYTHON

Standard library only: it runs with the test's interpreter, before Wharf is installed.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1


def if_flags(sock: socket.socket, name: str) -> int:
    ifreq = struct.pack("16sh", name.encode(), 0)
    return struct.unpack("16sh", fcntl.ioctl(sock, SIOCGIFFLAGS, ifreq)[:18])[1]


def loopback_only() -> list[str]:
    """Bring `lo` up (as `ip link set lo up` would); return the interfaces that are up."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        flags = if_flags(s, "lo")
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sh", b"lo", flags | IFF_UP))
        return [name for _, name in socket.if_nameindex() if if_flags(s, name) & IFF_UP]


def outside_error() -> str:
    """How connecting to a public address fails here (it must)."""
    try:
        with socket.create_connection(("151.101.0.223", 443), timeout=5):  # pypi.org
            return "connected"
    except OSError as e:
        return errno.errorcode.get(e.errno or 0, str(e))


def clean_env(extra: dict[str, str]) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP")
        and not k.startswith("WHARF_")  # the embedded default, whatever the test pass
    }
    env.update(extra)
    return env


def get_v2(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=2) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def main() -> None:
    bundle, prefix, work, python = (Path(a) for a in sys.argv[1:5])
    report: dict = {"up": loopback_only(), "outside": outside_error()}
    env = clean_env(
        {
            "PIP_INDEX_URL": "http://127.0.0.1:9/simple",  # nothing listens there
            "UV_OFFLINE": "1",
        }
    )

    started = time.monotonic()
    install = subprocess.run(
        [str(bundle / "install.sh"), "--prefix", str(prefix), "--python", str(python)],
        env=env,
        cwd=work,
        capture_output=True,
        text=True,
        timeout=300,
    )
    report["install"] = {
        "rc": install.returncode,
        "seconds": round(time.monotonic() - started, 1),
        "output": (install.stdout + install.stderr)[-4000:],
    }
    if install.returncode != 0:
        print(json.dumps(report))
        return

    wharf = str(prefix / "bin" / "wharf")
    py = str(prefix / "bin" / "python")
    report["version"] = subprocess.run(
        [wharf, "version"], env=env, cwd=work, capture_output=True, text=True, timeout=60
    ).stdout.strip()
    listing = (
        "import importlib.metadata as m, json, wharf;"
        "print(json.dumps({'wharf_file': wharf.__file__,"
        " 'dists': {d.metadata['Name']: d.version for d in m.distributions()}}))"
    )
    report.update(
        json.loads(
            subprocess.run(
                [py, "-c", listing], env=env, cwd=work, capture_output=True, text=True, check=True
            ).stdout
        )
    )

    with socket.socket() as s:  # every port of this namespace's loopback is free; take one
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log_path = work / "serve.log"
    with log_path.open("wb") as log:
        serve = subprocess.Popen(
            [wharf, "serve", "--data-dir", str(work / "data"), "--http-addr", f"127.0.0.1:{port}"],
            env={**env, "WHARF_ADMIN_PASSWORD": "offline-test-password"},
            cwd=work,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and serve.poll() is None:
                try:
                    report["v2_status"] = get_v2(port)
                    break
                except OSError:
                    time.sleep(0.2)
            report["serve_exit_before_stop"] = serve.poll()
        finally:
            serve.terminate()
            try:
                report["serve_exit"] = serve.wait(timeout=20)
            except subprocess.TimeoutExpired:
                serve.kill()
                report["serve_exit"] = serve.wait()
    report["serve_log"] = log_path.read_text(errors="replace")[-4000:]
    print(json.dumps(report))


if __name__ == "__main__":
    main()
