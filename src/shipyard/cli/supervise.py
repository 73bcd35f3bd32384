"""`shipyard up --workers N`: N gateway processes on one listening socket, kept running.

The supervisor (the process the user started) binds the port and claims the store as one server
does, then does once what must happen once: migrate the store, apply the config, make sure an admin
key exists. It then starts N workers, each `shipyard up --worker-fd FD` on the inherited socket
(the kernel hands each new connection to one of them), and restarts a worker that dies. Ctrl-C or
SIGTERM stops them all gracefully: each finishes its requests and writes its traces.

What the workers share, and how: rate limits, budgets and the response cache in Redis (so N > 1
needs `redis_url`); traces, registry and keys in the store (each worker reloads registry changes and
key revocations within `reload_interval`); alert evaluation and drift checks run in the one worker
holding the store's `monitoring` lease (``store/leases.py``). Each worker has its own `/metrics`:
scrape every worker, or sum in Prometheus; the dashboard reads the store and sees all of them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from shipyard.cli.common import console, err_console
from shipyard.settings import Settings

RESTART_WINDOW_S = 30.0  # a worker that dies this soon after starting, MAX_QUICK_DEATHS times: stop
MAX_QUICK_DEATHS = 5
POLL_S = 0.2


@dataclass
class Worker:
    index: int
    proc: subprocess.Popen[bytes]
    started: float = field(default_factory=time.monotonic)


def worker_args(settings: Settings, fd: int, index: int) -> list[str]:
    """The command line of worker ``index``: the supervisor's settings, the socket's descriptor."""
    args = [sys.executable, "-m", "shipyard", "up", "--worker-fd", str(fd), "--worker-index", str(index)]
    args += ["--home", str(settings.home_path), "--host", settings.host, "--port", str(settings.port)]
    args += ["--log-level", settings.log_level]
    if settings.config:
        args += ["--config", str(settings.config)]
    return args


def supervise(settings: Settings, fd: int, count: int) -> int:
    """Run ``count`` workers on the listening socket ``fd`` until told to stop; the exit status."""
    stopping = False

    def stop(signum: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = True

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    env = {**os.environ, "SHIPYARD_WORKERS": "1"}  # a worker serves; it never supervises

    def spawn(index: int) -> Worker:
        proc = subprocess.Popen(worker_args(settings, fd, index), pass_fds=(fd,), env=env)
        return Worker(index, proc)

    workers = [spawn(i) for i in range(1, count + 1)]
    console.print(
        f"  workers  {count} ({', '.join(f'pid {w.proc.pid}' for w in workers)}); "
        "a worker that stops is restarted",
        highlight=False,
    )
    quick_deaths = 0
    status = 0
    try:
        while not stopping:
            time.sleep(POLL_S)
            for i, worker in enumerate(workers):
                code = worker.proc.poll()
                if code is None or stopping:
                    continue
                lived = time.monotonic() - worker.started
                quick_deaths = quick_deaths + 1 if lived < RESTART_WINDOW_S else 0
                if quick_deaths >= MAX_QUICK_DEATHS:
                    err_console.print(
                        f"[red]error:[/red] workers keep stopping right after they start (last: exit "
                        f"code {code}); stopping. See the log above for why."
                    )
                    stopping, status = True, 1
                    break
                err_console.print(
                    f"[yellow]worker {worker.index} (pid {worker.proc.pid}) stopped with exit code {code} "
                    f"after {lived:.0f} s; restarting it[/yellow]"
                )
                workers[i] = spawn(worker.index)
    finally:
        for worker in workers:
            if worker.proc.poll() is None:
                worker.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + settings.shutdown_timeout + 10
        for worker in workers:
            try:
                worker.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                worker.proc.kill()
                worker.proc.wait()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return status
