"""The Python tracking API, in the style of MLflow's::

    import shipyard

    with shipyard.start_run(name="baseline", params={"temperature": 0.2}) as run:
        run.log_metric("accuracy", 0.81)
        for step, loss in enumerate(losses):
            run.log_metric("loss", loss, step=step)
        run.log_dict({"labels": labels}, "eval/labels.json")

Leaving the ``with`` block normally marks the run ``finished``; an exception marks it ``failed``
(and propagates); Ctrl-C marks it ``killed``. A run started while another is active (in the same
thread or asyncio task) becomes its child. Everything goes through
:class:`shipyard.registry.runs.RunService`, the same code the CLI and the admin API use, so runs
logged here show up in ``shipyard runs list`` and ``/api/runs``.

The store is the one ``shipyard`` commands use: ``home``/``store_url`` arguments, else
``SHIPYARD_HOME`` / ``SHIPYARD_DATABASE_URL``, else ``./.shipyard``. It is migrated on first use.
"""

from __future__ import annotations

import getpass
import threading
from collections.abc import Iterable, Mapping
from contextvars import ContextVar
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Literal

from shipyard.errors import InvalidRequest
from shipyard.registry.runs import RunDetail, RunService
from shipyard.settings import Settings
from shipyard.store.db import Store
from shipyard.store.runs import ArtifactRow, LinkRow, RunRow

__all__ = ["Run", "active_run", "start_run"]

_active: ContextVar[Run | None] = ContextVar("shipyard_active_run", default=None)
_services: dict[tuple[str, str], RunService] = {}
_services_lock = threading.Lock()


def _service(home: str | None, store_url: str | None) -> tuple[RunService, Settings]:
    """One service (and engine) per store and artifact directory for the life of the process."""
    settings = Settings(overrides={"home": home, "database_url": store_url})
    key = (settings.store_url, str(settings.artifacts_path))
    with _services_lock:
        service = _services.get(key)
        if service is None:
            store = Store.for_settings(settings)
            store.migrate()
            service = RunService(store, settings.artifacts_path)
            _services[key] = service
    return service, settings


def _actor(settings: Settings) -> str:
    # Same rule as the CLI: the `actor` setting, else the operating-system user.
    if settings.actor:
        return str(settings.actor)
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "python"


class Run:
    """A run being tracked. Get one from :func:`start_run`; end it with ``with`` or :meth:`finish`."""

    def __init__(self, service: RunService, row: RunRow, previous: Run | None) -> None:
        self._service = service
        self._previous = previous
        self.run_id: str = row["run_id"]
        self.name: str | None = row["name"]
        self.experiment: str = row["experiment"]
        self.parent_run_id: str | None = row["parent_run_id"]
        self.artifact_dir: Path = service.artifact_dir(self.run_id)
        self._status: str = row["status"]

    def __repr__(self) -> str:
        return (
            f"<shipyard.Run {self.run_id} name={self.name!r} experiment={self.experiment!r} {self._status}>"
        )

    @property
    def status(self) -> str:
        return self._status

    @property
    def service(self) -> RunService:
        return self._service

    def info(self) -> RunDetail:
        """Everything recorded so far: params, latest metrics, tags, links, artifacts."""
        return self._service.get(self.run_id)

    # -- params, metrics, tags ----------------------------------------------------------------------
    def log_param(self, key: str, value: Any) -> None:
        """Record an input of the run. Logging it again with a different value raises Conflict."""
        self._service.log_params(self.run_id, {key: value})

    def log_params(self, params: Mapping[str, Any]) -> None:
        self._service.log_params(self.run_id, params)

    def log_metric(
        self, key: str, value: float, step: int | None = None, timestamp: float | None = None
    ) -> None:
        """A scalar (step 0) or, with ``step``, one point of a series."""
        self._service.log_metric(self.run_id, key, value, step=step, timestamp=timestamp)

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Several metrics at once (one transaction), all at the same step."""
        self._service.log_metrics(
            self.run_id, [{"key": k, "value": v, "step": step} for k, v in metrics.items()]
        )

    def set_tag(self, key: str, value: Any) -> None:
        self._service.set_tags(self.run_id, {key: value})

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        self._service.set_tags(self.run_id, tags)

    # -- artifacts ----------------------------------------------------------------------------------
    def log_artifact(self, path: str | Path, name: str | None = None) -> list[ArtifactRow]:
        """Copy a file or a directory into the run's artifacts (as ``name``, default its own name)."""
        return self._service.log_artifact(self.run_id, path, name)

    def log_bytes(self, data: bytes | IO[bytes], name: str) -> ArtifactRow:
        return self._service.write_artifact(self.run_id, name, data)

    def log_text(self, text: str, name: str) -> ArtifactRow:
        return self._service.write_artifact(self.run_id, name, text)

    def log_dict(self, obj: Any, name: str) -> ArtifactRow:
        """Save an object as YAML when ``name`` ends in .yaml/.yml, else as JSON."""
        return self._service.write_dict(self.run_id, name, obj)

    # -- lineage ------------------------------------------------------------------------------------
    def link(self, kind: str, name: str, version: int | None = None) -> list[LinkRow]:
        """Record that the run used ``kind`` ``name`` at ``version`` (dataset, prompt, model, route,
        provider — or another run, with no version). Returns all of the run's links."""
        return self._service.add_links(self.run_id, [{"kind": kind, "name": name, "version": version}])

    def link_dataset(self, name: str, version: int) -> list[LinkRow]:
        return self.link("dataset", name, version)

    def link_prompt(self, name: str, version: int) -> list[LinkRow]:
        return self.link("prompt", name, version)

    def link_model(self, name: str, version: int) -> list[LinkRow]:
        return self.link("model", name, version)

    def link_route(self, name: str, version: int) -> list[LinkRow]:
        return self.link("route", name, version)

    # -- ending -------------------------------------------------------------------------------------
    def finish(self, status: str = "finished") -> None:
        """End the run as ``finished``, ``failed`` or ``killed``; it stops being the active run."""
        row = self._service.finish(self.run_id, status)
        self._status = row["status"]
        if _active.get() is self:
            _active.set(self._previous)

    def __enter__(self) -> Run:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> Literal[False]:
        if self._status != "running":  # ended inside the block: keep what the code chose
            if _active.get() is self:
                _active.set(self._previous)
            return False
        if exc_type is None:
            self.finish("finished")
        elif issubclass(exc_type, Exception):
            self.set_tag("error", f"{exc_type.__name__}: {exc}"[:2000])
            self.finish("failed")
        else:  # KeyboardInterrupt, SystemExit: the run was stopped, not broken
            self.finish("killed")
        return False


def active_run() -> Run | None:
    """The run started most recently in this thread or task and not yet ended, if any."""
    run = _active.get()
    return run if run is not None and run.status == "running" else None


def start_run(
    name: str | None = None,
    experiment: str | None = None,
    params: Mapping[str, Any] | None = None,
    tags: Mapping[str, Any] | None = None,
    links: Iterable[Mapping[str, Any]] | None = None,
    home: str | None = None,
    store_url: str | None = None,
    nested: bool = False,
    parent_run_id: str | None = None,
) -> Run:
    """Start a run and make it the active one.

    A run started while another is active (in the same store) becomes its child automatically,
    as with MLflow's nested runs; ``nested=True`` additionally insists that there is a parent.
    ``experiment`` defaults to the active parent's experiment, else ``default``.
    ``parent_run_id`` names a parent explicitly (e.g. one started by another process).
    ``links`` are ``{"kind", "name", "version"}`` mappings, as :meth:`Run.link` takes.
    """
    service, settings = _service(home, store_url)
    previous = active_run()
    parent = parent_run_id
    if parent is None and previous is not None and previous.service is service:
        parent = previous.run_id
    if nested and parent is None:
        raise InvalidRequest(
            "start_run(nested=True) needs an active run to nest under; start the parent run first "
            "(`with shipyard.start_run(...)`), or pass parent_run_id",
            param="nested",
        )
    if experiment is None:
        experiment = previous.experiment if previous is not None and parent == previous.run_id else "default"
    row = service.create(
        name=name,
        experiment=experiment,
        params=params,
        tags=tags,
        links=links,
        parent_run_id=parent,
        created_by=_actor(settings),
    )
    run = Run(service, row, previous)
    _active.set(run)
    return run
