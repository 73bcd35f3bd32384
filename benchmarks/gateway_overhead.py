"""Gateway overhead, side by side in one run: a direct call to the upstream, a bare pass-through
proxy (benchmarks/bare_proxy.py), Shipyard's gateway with tracing on, and LiteLLM's proxy — all in
front of the same mock OpenAI-compatible upstream on loopback.

    .venv/bin/python benchmarks/gateway_overhead.py            # full run, writes docs/benchmarks.md
    .venv/bin/python benchmarks/gateway_overhead.py --quick    # shorter runs, no LiteLLM
    .venv/bin/python benchmarks/gateway_overhead.py --no-litellm --before /tmp/before/src
                                                    # a change's before/after, printed only

Load comes from wrk (C, `apt-get install wrk`), so the load generator costs little CPU. On a
machine with 2+ cores the proxy under test is pinned to core 0 and wrk + the upstream to the
others, so every proxy gets exactly one core. LiteLLM is installed by this script into its own
virtualenv (benchmarks/.venvs/litellm) on first use.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import statistics
import string
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from benchdoc import free_port, write_section

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
RESULTS = ROOT / "benchmarks" / "results"
DOC = ROOT / "docs" / "benchmarks.md"
LITELLM_VENV = ROOT / "benchmarks" / ".venvs" / "litellm"
BEFORE = "shipyard (before)"  # the row of --before: Shipyard from another source tree
BODY = {
    "model": "relay",
    "messages": [{"role": "user", "content": "Say something about harbours."}],
    "max_tokens": 16,
}
# Every proxy gets the same header: Shipyard's admin key (`sk-shp-` + 40 base62 characters, given to
# it as SHIPYARD_ADMIN_KEY) is also a strong `sk-` master key for LiteLLM's proxy. The gateway's key
# check is therefore part of what is measured.
BENCH_KEY = "sk-shp-" + "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(40))
AUTH = {"Authorization": f"Bearer {BENCH_KEY}"}
CPUS = os.cpu_count() or 1
PROXY_CPU = "0"
LOAD_CPU = ",".join(str(c) for c in range(1, CPUS)) if CPUS > 1 else "0"


def pinned(cmd: list[str], cpus: str) -> list[str]:
    return ["taskset", "-c", cpus, *cmd] if shutil.which("taskset") and CPUS > 1 else cmd


def wait_ready(url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            r = httpx.post(url + "/v1/chat/completions", json=BODY, headers=AUTH, timeout=5)
            if r.status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer in {timeout}s")


@contextmanager
def process(
    cmd: list[str], cpus: str, env: dict[str, str] | None = None, log: Path | None = None
) -> Iterator[int]:
    out = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115
    proc = subprocess.Popen(
        pinned(cmd, cpus),
        stdout=out,
        stderr=subprocess.STDOUT,
        env={**os.environ, **(env or {})},
        start_new_session=True,
    )
    try:
        yield proc.pid
    finally:
        try:
            os.killpg(proc.pid, 15)
            proc.wait(30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, 9)
        if log:
            out.close()  # type: ignore[union-attr]


def tree_cpu_seconds(root_pid: int) -> float:
    """User+system CPU of a process and all its descendants (all threads)."""
    tick = os.sysconf("SC_CLK_TCK")
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        parents[int(entry)] = int(fields[1])
        times[int(entry)] = (int(fields[11]) + int(fields[12])) / tick
    total, stack = 0.0, [root_pid]
    while stack:
        pid = stack.pop()
        total += times.get(pid, 0.0)
        stack.extend(p for p, pp in parents.items() if pp == pid)
    return total


def wrk(url: str, body: dict[str, Any], connections: int, seconds: int) -> dict[str, Any]:
    script = Path(tempfile.mkstemp(suffix=".lua")[1])
    script.write_text(
        'wrk.method = "POST"\n'
        f"wrk.body = {json.dumps(json.dumps(body))}\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
        f'wrk.headers["Authorization"] = "Bearer {BENCH_KEY}"\n'
    )
    cmd = pinned(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{seconds}s",
            "--timeout",
            "10s",
            "--latency",
            "-s",
            str(script),
            url + "/v1/chat/completions",
        ],
        LOAD_CPU,
    )
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    script.unlink()

    def ms(label: str) -> float:
        m = re.search(rf"^\s*{label}\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if not m:
            raise RuntimeError(f"no {label} in wrk output:\n{out}")
        value, unit = float(m.group(1)), m.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = (int(non2xx.group(1)) if non2xx else 0) + (sum(int(x) for x in sock.groups()) if sock else 0)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    return {
        "rps": rps,
        "p50_ms": ms("50%"),
        "p90_ms": ms("90%"),
        "p99_ms": ms("99%"),
        "requests": requests,
        "errors": errors,
    }


def stream_timing(url: str, n: int) -> dict[str, float]:
    """Median time to the first content token and to the end of the stream, sequential requests."""
    firsts, totals = [], []
    body = {**BODY, "model": "stream", "stream": True}
    with httpx.Client(timeout=30, headers=AUTH) as client:
        client.post(url + "/v1/chat/completions", json={**body, "stream": False})  # warm the connection
        for _ in range(n):
            start = time.perf_counter()
            first = None
            with client.stream("POST", url + "/v1/chat/completions", json=body) as resp:
                resp.raise_for_status()
                for line in resp.iter_lines():
                    if first is None and '"content":"' in line and '"content":""' not in line:
                        first = time.perf_counter() - start
            totals.append(time.perf_counter() - start)
            firsts.append(first if first is not None else totals[-1])
    return {"ttft_ms": statistics.median(firsts) * 1000, "total_ms": statistics.median(totals) * 1000}


def measure(
    name: str, url: str, pid: int | None, seconds: int, stream_url: str | None, stream_n: int
) -> dict[str, Any]:
    wait_ready(url)
    wrk(url, BODY, 8, 2)  # warm up connections and code paths
    lat = wrk(url, BODY, 1, seconds)
    cpu0 = tree_cpu_seconds(pid) if pid else 0.0
    thr = wrk(url, BODY, 64, seconds)
    cpu = (tree_cpu_seconds(pid) - cpu0) if pid else None
    result = {
        "name": name,
        "c1": lat,
        "c64": thr,
        "cpu_ms_per_request": None if cpu is None else 1000 * cpu / max(1, thr["requests"]),
        "stream": stream_timing(stream_url, stream_n) if stream_url else None,
    }
    print(
        f"{name:>10}: c1 p50 {lat['p50_ms']:.3f} ms | c64 {thr['rps']:.0f} req/s, "
        f"errors {thr['errors'] + lat['errors']}",
        flush=True,
    )
    return result


def ensure_litellm() -> Path:
    exe = LITELLM_VENV / "bin" / "litellm"
    if not exe.exists():
        print("installing LiteLLM's proxy into benchmarks/.venvs/litellm (first run only)…", flush=True)
        subprocess.run([PY, "-m", "venv", str(LITELLM_VENV)], check=True)
        subprocess.run(
            [str(LITELLM_VENV / "bin" / "pip"), "install", "--quiet", "litellm[proxy]"], check=True
        )
    return exe


def litellm_version() -> str:
    out = subprocess.run(
        [str(LITELLM_VENV / "bin" / "pip"), "show", "litellm"], capture_output=True, text=True
    )
    m = re.search(r"^Version: (.+)$", out.stdout, re.M)
    return m.group(1) if m else "?"


def shipyard_config(upstream: str, stream_upstream: str) -> str:
    return f"""
providers:
  - {{name: up, type: openai, base_url: "{upstream}/v1", api_key: sk-none}}
  - {{name: up-stream, type: openai, base_url: "{stream_upstream}/v1", api_key: sk-none}}
models:
  - {{name: mock-model, provider: up, pricing: {{input_per_mtok: 0.15, output_per_mtok: 0.6}}}}
  - {{name: mock-stream, provider: up-stream, model: mock-model}}
routes:
  - {{name: relay, targets: [{{model: mock-model}}]}}
  - {{name: stream, targets: [{{model: mock-stream}}]}}
"""


def litellm_config(upstream: str, stream_upstream: str) -> str:
    return f"""
model_list:
  - model_name: relay
    litellm_params: {{model: openai/mock-model, api_base: "{upstream}/v1", api_key: sk-none}}
  - model_name: stream
    litellm_params: {{model: openai/mock-model, api_base: "{stream_upstream}/v1", api_key: sk-none}}
litellm_settings:
  telemetry: false
"""


def run(args: argparse.Namespace) -> dict[str, Any]:
    if not shutil.which("wrk"):
        sys.exit("wrk is needed for load generation: apt-get install -y wrk")
    work = Path(tempfile.mkdtemp(prefix="shipyard-bench-"))
    up_port, stream_port = free_port(), free_port()
    upstream, stream_upstream = f"http://127.0.0.1:{up_port}", f"http://127.0.0.1:{stream_port}"
    shipyard = [PY, "-m", "shipyard"]
    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{CPUS} cores, {os.uname().machine}, Python {sys.version.split()[0]}",
        "pinning": f"proxy on CPU {PROXY_CPU}, wrk + upstream on CPU {LOAD_CPU}"
        if CPUS > 1
        else "none (1 CPU)",
        "seconds": args.seconds,
        "runs": [],
    }
    fixed = "Harbours shelter ships from storms and let trade flow between distant shores every day"
    with (
        process([*shipyard, "mock-upstream", "--port", str(up_port), "--answer", fixed], LOAD_CPU),
        process(
            [
                *shipyard,
                "mock-upstream",
                "--port",
                str(stream_port),
                "--answer",
                fixed,
                "--latency-ms",
                "50",
                "--tokens-per-s",
                "50",
            ],
            LOAD_CPU,
        ),
    ):
        results["runs"].append(
            measure("direct", upstream, None, args.seconds, stream_upstream, args.stream_n)
        )

        port = free_port()
        bare = f"http://127.0.0.1:{port}"
        with process([PY, str(ROOT / "benchmarks" / "bare_proxy.py"), upstream, str(port)], PROXY_CPU) as pid:
            r = measure("bare proxy", bare, pid, args.seconds, None, 0)
        sport = free_port()
        with process(
            [PY, str(ROOT / "benchmarks" / "bare_proxy.py"), stream_upstream, str(sport)], PROXY_CPU
        ):
            wait_ready(f"http://127.0.0.1:{sport}")
            r["stream"] = stream_timing(f"http://127.0.0.1:{sport}", args.stream_n)
        results["runs"].append(r)

        cfg = work / "shipyard.yaml"
        cfg.write_text(shipyard_config(upstream, stream_upstream))
        trees = [("shipyard", None)]
        if args.before:
            # The other tree first: a machine that warms up as it runs would favour the current one.
            trees.insert(0, (BEFORE, str(Path(args.before).resolve())))
        for name, src in trees:
            home = work / f"home-{len(results['runs'])}"
            env = {"SHIPYARD_ADMIN_KEY": BENCH_KEY}
            if src is not None:
                env["PYTHONPATH"] = src
            port = free_port()
            with process(
                [
                    *shipyard,
                    "up",
                    "--port",
                    str(port),
                    "--home",
                    str(home),
                    "--config",
                    str(cfg),
                    "--log-level",
                    "warning",
                ],
                PROXY_CPU,
                env=env,
                log=work / f"{name}.log",
            ) as pid:
                url = f"http://127.0.0.1:{port}"
                r = measure(name, url, pid, args.seconds, url, args.stream_n)
            r["traces_written"] = count_traces(home / "shipyard.db")
            results["runs"].append(r)

        if not args.no_litellm:
            exe = ensure_litellm()
            results["litellm_version"] = litellm_version()
            lcfg = work / "litellm.yaml"
            lcfg.write_text(litellm_config(upstream, stream_upstream))
            port = free_port()
            env = {
                "LITELLM_LOCAL_MODEL_COST_MAP": "True",
                "LITELLM_LOG": "ERROR",
                "LITELLM_MASTER_KEY": BENCH_KEY,
                "DISABLE_SCHEMA_UPDATE": "true",
            }
            with process(
                [
                    str(exe),
                    "--config",
                    str(lcfg),
                    "--port",
                    str(port),
                    "--host",
                    "127.0.0.1",
                    "--num_workers",
                    "1",
                ],
                PROXY_CPU,
                env=env,
                log=work / "litellm.log",
            ) as pid:
                url = f"http://127.0.0.1:{port}"
                results["runs"].append(measure("litellm", url, pid, args.seconds, url, args.stream_n))
    shutil.rmtree(work, ignore_errors=True)
    return results


def count_traces(db: Path) -> int:
    import sqlite3

    with sqlite3.connect(db) as conn:
        return int(conn.execute("SELECT count(*) FROM traces").fetchone()[0])


def tree_label(src: Path) -> str:
    """The commit a source tree was checked out at, for the before/after heading."""
    try:
        out = subprocess.run(
            ["git", "-C", str(src), "log", "-1", "--format=%h %s"], capture_output=True, text=True, check=True
        )
        return out.stdout.strip()[:100]
    except (OSError, subprocess.CalledProcessError):
        return str(src)


def before_after(section: str, before: Path) -> str:
    """The same table, headed as a change's before/after: which tree was `before`."""
    rest = section.partition("\n")[2]  # the table and notes, without the main section's heading
    now = tree_label(ROOT)
    return (
        "## Gateway overhead: before and after a change\n\n"
        f"`shipyard (before)` is the tree at `{tree_label(before)}`; `shipyard` is `{now}`. Both "
        "ran in this one run, on the same machine, one after the other (before first)." + rest
    )


def render(results: dict[str, Any]) -> str:
    runs = {r["name"]: r for r in results["runs"]}
    direct = runs["direct"]
    lines = [
        "## Gateway overhead",
        "",
        f"Measured {results['date']} on {results['machine']}; {results['pinning']}; "
        f"{results['seconds']} s per load level; load from wrk. Reproduce with "
        "`.venv/bin/python benchmarks/gateway_overhead.py`.",
        "",
        "Every proxy fronts the same mock OpenAI-compatible upstream (`shipyard mock-upstream`, "
        "a 16-token answer) on loopback. *Added p50* is the proxy's p50 at concurrency 1 minus the "
        "direct call's. Shipyard runs with everything on: the API key check, request validation, "
        "routing, tracing (every request becomes a trace with 3 spans, written to SQLite by the batch "
        "writer).",
        "",
        "| | p50 @ c=1 | added p50 | p99 @ c=1 | req/s @ c=64 | p99 @ c=64 | errors | CPU ms / req "
        "| stream TTFT p50 | stream total p50 |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in ("direct", "bare proxy", BEFORE, "shipyard", "litellm"):
        r = runs.get(name)
        if r is None:
            continue
        added = "—" if name == "direct" else f"{r['c1']['p50_ms'] - direct['c1']['p50_ms']:+.3f} ms"
        cpu = "—" if r["cpu_ms_per_request"] is None else f"{r['cpu_ms_per_request']:.3f}"
        label = f"litellm {results.get('litellm_version', '')}".strip() if name == "litellm" else name
        lines.append(
            f"| {label} | {r['c1']['p50_ms']:.3f} ms | {added} | {r['c1']['p99_ms']:.3f} ms | "
            f"{r['c64']['rps']:,.0f} | {r['c64']['p99_ms']:.1f} ms | "
            f"{r['c1']['errors'] + r['c64']['errors']} | "
            f"{cpu} | {r['stream']['ttft_ms']:.1f} ms | {r['stream']['total_ms']:.1f} ms |"
        )
    lines.append("")
    ship = runs.get("shipyard")
    bare = runs.get("bare proxy")
    lite = runs.get("litellm")
    if ship and bare:
        lines.append(
            f"- Shipyard reaches **{ship['c64']['rps'] / bare['c64']['rps']:.0%}** of the bare "
            "pass-through proxy's throughput with all its features on."
        )
    if ship and lite:
        lines.append(
            "- Shipyard's throughput at concurrency 64 is "
            f"**{ship['c64']['rps'] / lite['c64']['rps']:.1f}×** "
            f"LiteLLM's; its added p50 latency is {ship['c1']['p50_ms'] - direct['c1']['p50_ms']:.3f} ms "
            f"against LiteLLM's {lite['c1']['p50_ms'] - direct['c1']['p50_ms']:.3f} ms."
        )
        lines.append(
            "- LiteLLM runs as a user would start it: `litellm --config … --num_workers 1` from a plain "
            "`pip install 'litellm[proxy]'` in its own virtualenv, with the master key its recent releases "
            "require and no database; at its CPU cost per request it saturates its core at this load."
        )
    if ship:
        lines.append(
            f"- All {ship['traces_written']:,} requests Shipyard served were traced and written to "
            "its SQLite store during the run."
        )
        lines.append(
            "- Streaming: the upstream sends its first token after 50 ms and then one every 20 ms. "
            "A proxy that buffered would show TTFT ≈ the total; Shipyard's TTFT stays at the direct "
            "call's plus about a millisecond, so each event is forwarded as it arrives."
        )
    lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=15, help="Duration of each load level.")
    parser.add_argument("--stream-n", type=int, default=30, help="Streamed requests timed per proxy.")
    parser.add_argument("--no-litellm", action="store_true", help="Skip LiteLLM (no install).")
    parser.add_argument("--quick", action="store_true", help="5 s runs, no LiteLLM, do not touch the docs.")
    parser.add_argument(
        "--before",
        metavar="SRC",
        help="Also measure Shipyard from another source tree (its src/ directory, e.g. of a "
        "`git worktree add /tmp/before <commit>`), as a `shipyard (before)` row, in the same run; "
        "writes the before/after section of the docs instead of the main one.",
    )
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.stream_n, args.no_litellm = 5, 10, True
    results = run(args)
    if not args.before:
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "gateway_overhead.json").write_text(json.dumps(results, indent=2))
    section = render(results)
    if args.before:
        section = before_after(section, Path(args.before))
    print(section)
    if not args.quick:
        write_section("gateway-before-after" if args.before else "gateway-overhead", section)
        print(f"wrote {DOC.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
