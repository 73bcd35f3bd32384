"""Test fixtures that run the real thing: `shipyard up` as a subprocess, upstreams as real HTTP
servers, the official openai client."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

ROOT = Path(__file__).resolve().parents[1]
# `SHIPYARD_TEST_DB=postgresql+psycopg://postgres@127.0.0.1:5432/postgres make test`: every server a
# test starts gets a fresh database on that Postgres server instead of a SQLite file in its home.
TEST_DB = os.environ.get("SHIPYARD_TEST_DB")


def create_database(admin_url: str) -> str:
    """A new, empty database on the server of ``admin_url``; its URL."""
    import uuid

    import sqlalchemy as sa

    name = f"shipyard_test_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    finally:
        admin.dispose()
    return admin_url.rsplit("/", 1)[0] + "/" + name


_TEST_DATABASES: dict[Path, str] = {}  # home -> its database, under SHIPYARD_TEST_DB


@pytest.fixture(scope="session", autouse=True)
def _drop_test_databases() -> Iterator[None]:
    yield
    if TEST_DB:
        for url in _TEST_DATABASES.values():
            drop_database(TEST_DB, url)


def store_url_for(home: Path) -> str:
    """The store of a server home: its SQLite file, or under SHIPYARD_TEST_DB its own database."""
    if TEST_DB:
        if home not in _TEST_DATABASES:
            _TEST_DATABASES[home] = create_database(TEST_DB)
        return _TEST_DATABASES[home]
    return f"sqlite:///{home / 'shipyard.db'}"


def cli_env(args: Any) -> dict[str, str]:
    """Extra environment for a CLI call with ``args`` run in this process (typer's CliRunner): the
    database of the home it names, under SHIPYARD_TEST_DB."""
    url = _database_for_args(args)
    return {"SHIPYARD_DATABASE_URL": url} if url is not None else {}


def _database_for_args(args: Any) -> str | None:
    """Under SHIPYARD_TEST_DB: the database of the server home a `shipyard … --home HOME` command
    names, so that the CLI a test runs against a server reaches that server's store."""
    if not isinstance(args, list | tuple) or "--home" not in args:
        return None
    at = list(args).index("--home")
    if at + 1 >= len(args):
        return None
    return _TEST_DATABASES.get(Path(str(args[at + 1])))


if TEST_DB:
    _popen_init = subprocess.Popen.__init__

    def _popen_with_test_db(self: Any, args: Any, *rest: Any, **kwargs: Any) -> None:
        url = _database_for_args(args)
        if url is not None:
            kwargs["env"] = {**(kwargs.get("env") or os.environ), "SHIPYARD_DATABASE_URL": url}
        _popen_init(self, args, *rest, **kwargs)

    subprocess.Popen.__init__ = _popen_with_test_db  # type: ignore[method-assign]


def drop_database(admin_url: str, url: str) -> None:
    import sqlalchemy as sa

    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)'))
    finally:
        admin.dispose()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_key() -> str:
    """A fresh Shipyard-shaped API key (`sk-shp-` + 40 base62 characters)."""
    import secrets
    import string

    return "sk-shp-" + "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(40))


class ShipyardServer:
    """`python -m shipyard up` in a subprocess, on a free port, with its own home directory.

    It starts with an admin key (`admin_key`, via SHIPYARD_ADMIN_KEY) that `openai()`, `api()` and
    `headers` use, so tests of other features go through authentication like every client."""

    def __init__(
        self,
        home: Path,
        config: str | None = None,
        env: dict[str, str] | None = None,
        ready_timeout: float = 180.0,
    ) -> None:
        self.home = home
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config_path: Path | None = None
        if config is not None:
            self.config_path = home.parent / f"{home.name}-shipyard.yaml"
            self.config_path.write_text(config)
        self.env = {**os.environ, **(env or {})}
        self.env.pop("SHIPYARD_CONFIG", None)
        self.database_url: str | None = self.env.get("SHIPYARD_DATABASE_URL")
        if TEST_DB and self.database_url is None:
            # One database per home: a server restarted on the same home finds its data again.
            self.database_url = self.env["SHIPYARD_DATABASE_URL"] = store_url_for(home)
        self.env.setdefault("SHIPYARD_ADMIN_KEY", make_key())
        self.admin_key = self.env["SHIPYARD_ADMIN_KEY"]
        self.headers = {"Authorization": f"Bearer {self.admin_key}"}
        self.ready_timeout = ready_timeout
        self.log_path = home.parent / f"{home.name}-server.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, ready: bool = True) -> ShipyardServer:
        """Start and wait until /readyz says 200 (``ready=False``: until /healthz answers)."""
        args = [sys.executable, "-m", "shipyard", "up", "--port", str(self.port), "--home", str(self.home)]
        if self.config_path is not None:
            args += ["--config", str(self.config_path)]
        self._log = open(self.log_path, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            args, stdout=self._log, stderr=subprocess.STDOUT, env=self.env, cwd=self.home.parent
        )
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"shipyard up exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.url + ("/readyz" if ready else "/healthz"), timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"shipyard up not ready after {self.ready_timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        code = self.proc.returncode
        self.proc = None
        return code

    def openai(self, **kwargs: Any) -> Any:
        import openai

        kwargs.setdefault("api_key", self.admin_key)
        return openai.OpenAI(base_url=self.url + "/v1", max_retries=0, **kwargs)

    def async_openai(self, **kwargs: Any) -> Any:
        import openai

        kwargs.setdefault("api_key", self.admin_key)
        return openai.AsyncOpenAI(base_url=self.url + "/v1", max_retries=0, **kwargs)

    def api(self, **kwargs: Any) -> httpx.Client:
        """An httpx client for the admin API (`/api`) with the admin key."""
        kwargs.setdefault("timeout", 30)
        headers = {**self.headers, **kwargs.pop("headers", {})}
        return httpx.Client(base_url=self.url + "/api", headers=headers, **kwargs)

    def http(self, **kwargs: Any) -> httpx.Client:
        """An httpx client for the whole server (gateway, dashboard) with the admin key."""
        kwargs.setdefault("timeout", 30)
        headers = {**self.headers, **kwargs.pop("headers", {})}
        return httpx.Client(base_url=self.url, headers=headers, **kwargs)

    def store_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'shipyard.db'}"


class ThreadServer:
    """Any ASGI app on a real port, served by uvicorn in a background thread."""

    def __init__(self, app: Any) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(
            uvicorn.Config(
                app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off", access_log=False
            )
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> ThreadServer:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("upstream did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture
def shipyard_server(tmp_path: Path) -> Iterator[Any]:
    """Factory: ``shipyard_server(config_yaml)`` starts a server that is stopped after the test."""
    servers: list[ShipyardServer] = []

    def start(
        config: str | None = None, env: dict[str, str] | None = None, name: str = "home"
    ) -> ShipyardServer:
        s = ShipyardServer(tmp_path / name, config, env).start()
        servers.append(s)
        return s

    yield start
    for s in servers:
        s.stop()


PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database for one test (skipped where no server listens on 5432)."""
    import uuid

    import sqlalchemy as sa

    try:
        admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except Exception as exc:  # pragma: no cover - depends on the machine
        pytest.skip(f"PostgreSQL not reachable at 127.0.0.1:5432: {exc}")
    name = f"shipyard_test_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
