"""Request-rate load generators: wrk (GET / PUT with Lua) and ApacheBench (HEAD).

wrk 4.1 cannot do HEAD: its response parser waits for a body of Content-Length bytes, so
every HEAD request hangs. `ab -i` (apache2-utils) handles HEAD correctly and is used for it."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from procs import BenchError

DONE_LUA = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "WRKJSON {\"requests\": %d, \"duration_us\": %d, \"bytes\": %d, \"connect\": %d, " ..
    "\"read\": %d, \"write\": %d, \"status\": %d, \"timeout\": %d, \"lat_mean_us\": %.1f, " ..
    "\"lat_p50_us\": %d, \"lat_p99_us\": %d, \"lat_max_us\": %d}\n",
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency.mean, latency:percentile(50), latency:percentile(99), latency.max))
end
"""


def lua_str(s: str) -> str:
    """A Lua long-bracket string literal."""
    eq = "=" * 4
    if f"]{eq}]" in s:
        raise ValueError("cannot quote")
    return f"[{eq}[{s}]{eq}]"


def addr_lua(addrs: list[tuple[str, int]] | None) -> str:
    """Lua defining `pick_addr(thread)`: with `addrs`, thread i connects to addrs[i % n]
    (all its connections), which spreads the load over several servers the way a
    connection-level (L4) load balancer does; without, it keeps the URL's address."""
    if not addrs:
        return "local pick_addr = function(thread) end\n"
    items = ", ".join(f"{{ {lua_str(h)}, {lua_str(str(p))} }}" for h, p in addrs)
    return f"""
local addrs = {{ {items} }}
local addr_next = 0
local pick_addr = function(thread)
  local a = addrs[(addr_next % #addrs) + 1]
  addr_next = addr_next + 1
  thread.addr = wrk.lookup(a[1], a[2])[1]
end
"""


def get_script(headers: dict[str, str], addrs: list[tuple[str, int]] | None = None) -> str:
    lines = [f"wrk.headers[ {lua_str(k)} ] = {lua_str(v)}" for k, v in headers.items()]
    out = "\n".join(lines) + "\n"
    if addrs:
        out += addr_lua(addrs) + "setup = function(thread) pick_addr(thread) end\n"
    return out + DONE_LUA


def manifest_put_script(
    path_prefix: str,
    tag_prefix: str,
    template: str,
    headers: dict[str, str],
    addrs: list[tuple[str, int]] | None = None,
) -> str:
    """Each request PUTs a distinct manifest: tag = <tag_prefix>-<thread>-<n>,
    body = template % tag (template contains exactly one %s and no other '%')."""
    hdr = ", ".join(f"[ {lua_str(k)} ] = {lua_str(v)}" for k, v in headers.items())
    return f"""
local counter = 0
local tid = 0
local nextid = 1
local path_prefix = {lua_str(path_prefix)}
local tag_prefix = {lua_str(tag_prefix)}
local template = {lua_str(template)}
local headers = {{{hdr}}}
{addr_lua(addrs)}
setup = function(thread)
  pick_addr(thread)
  thread:set("id", nextid)
  nextid = nextid + 1
end

init = function(args)
  tid = id or 0
end

request = function()
  counter = counter + 1
  local tag = string.format("%s-%d-%d", tag_prefix, tid, counter)
  return wrk.format("PUT", path_prefix .. tag, headers, string.format(template, tag))
end
{DONE_LUA}
"""


def run_wrk(
    url: str,
    script: str,
    duration: float,
    connections: int,
    threads: int,
    timeout_s: int = 30,
) -> dict:
    if not shutil.which("wrk"):
        raise BenchError("wrk not found: apt-get install -y --no-install-recommends wrk")
    threads = max(1, min(threads, connections))
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(script)
        lua = f.name
    cmd = [
        "wrk",
        "-t",
        str(threads),
        "-c",
        str(connections),
        "-d",
        f"{duration:g}s",
        "--timeout",
        f"{timeout_s}s",
        "-s",
        lua,
        url,
    ]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 120)
    finally:
        Path(lua).unlink(missing_ok=True)
    m = re.search(r"^WRKJSON (\{.*\})$", p.stdout, re.M)
    if p.returncode != 0 or not m:
        raise BenchError(f"wrk failed ({p.returncode}): {' '.join(cmd)}\n{p.stdout}\n{p.stderr}")
    d = json.loads(m.group(1))
    dur = d["duration_us"] / 1e6
    errors = {k: d[k] for k in ("connect", "read", "write", "status", "timeout") if d[k]}
    res = {
        "tool": "wrk",
        "requests": d["requests"],
        "duration_s": round(dur, 3),
        "rps": round(d["requests"] / dur, 1),
        "bytes": d["bytes"],
        "lat_mean_ms": round(d["lat_mean_us"] / 1000, 2),
        "lat_p50_ms": round(d["lat_p50_us"] / 1000, 2),
        "lat_p99_ms": round(d["lat_p99_us"] / 1000, 2),
        "lat_max_ms": round(d["lat_max_us"] / 1000, 2),
        "errors": errors,
        "connections": connections,
        "threads": threads,
    }
    if errors or d["requests"] == 0:
        raise BenchError(
            f"wrk against {url}: errors {errors} in {d['requests']} requests "
            f"(status = HTTP >= 400)\n{p.stdout}"
        )
    return res


def run_ab_head(url: str, headers: dict[str, str], duration: float, connections: int) -> dict:
    if not shutil.which("ab"):
        raise BenchError("ab not found: apt-get install -y --no-install-recommends apache2-utils")
    cmd = ["ab", "-i", "-k", "-q", "-c", str(connections), "-t", f"{duration:g}", "-n", "100000000"]
    for k, v in headers.items():
        cmd += ["-H", f"{k}: {v}"]
    cmd.append(url)
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 120)
    out = p.stdout

    def grab(pattern: str, default: float | None = None) -> float:
        m = re.search(pattern, out, re.M)
        if not m:
            if default is not None:
                return default
            raise BenchError(f"ab output not understood ({pattern}):\n{out}\n{p.stderr}")
        return float(m.group(1))

    complete = int(grab(r"Complete requests:\s+(\d+)"))
    failed = int(grab(r"Failed requests:\s+(\d+)"))
    non2xx = int(grab(r"Non-2xx responses:\s+(\d+)", 0))
    taken = grab(r"Time taken for tests:\s+([\d.]+)")
    res = {
        "tool": "ab -i -k",
        "requests": complete,
        "duration_s": round(taken, 3),
        "rps": round(complete / taken, 1) if taken else 0.0,
        "lat_mean_ms": round(grab(r"Time per request:\s+([\d.]+) \[ms\] \(mean\)", 0), 2),
        "lat_p50_ms": grab(r"^\s+50%\s+(\d+)", -1),
        "lat_p99_ms": grab(r"^\s+99%\s+(\d+)", -1),
        "errors": {k: v for k, v in (("failed", failed), ("non2xx", non2xx)) if v},
        "connections": connections,
    }
    if p.returncode != 0 or failed or non2xx or complete == 0:
        raise BenchError(f"ab HEAD {url}: rc={p.returncode} {res['errors']}\n{out}\n{p.stderr}")
    return res
