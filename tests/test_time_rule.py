"""One time rule everywhere: the same `since=` selects the same rows on every endpoint that takes one.

A naive ISO time (no offset) means UTC, on every endpoint and in the CLI, whatever the server's or
the shell's local time zone is. The server here runs with a local zone far from UTC (TZ=Asia/Kathmandu,
+05:45), so an endpoint that read a naive time as local time would cut 5 h 45 min away from the
others and select other rows.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from shipyard.store import audit
from shipyard.store import scores as scores_q
from shipyard.store import traces as tq
from shipyard.store.db import Store
from shipyard.tracing.spans import Trace

ZONE = {"TZ": "Asia/Kathmandu"}
GAP_S = 1.2


def _spellings(cut: float) -> dict[str, str]:
    """The same instant, written every way the time rule accepts."""
    utc = datetime.fromtimestamp(cut, UTC)
    kathmandu = utc.astimezone(timezone(timedelta(hours=5, minutes=45)))
    return {
        "naive ISO (UTC)": utc.replace(tzinfo=None).isoformat(),
        "ISO with Z": utc.replace(tzinfo=None).isoformat() + "Z",
        "ISO +00:00": utc.isoformat(),
        "ISO +05:45": kathmandu.isoformat(),
        "epoch seconds": f"{cut:.6f}",
    }


def _write_phase(store: Store, label: str) -> list[str]:
    """Two traces, a score on each, and an audit entry, all written now."""
    now = time.time()
    traces = [
        Trace(
            "chat",
            start=now,
            end=now + 0.01,
            route="timed",
            model="m",
            input=[{"role": "user", "content": label}],
        )
        for _ in range(2)
    ]
    tq.insert_traces(store, traces)
    scores_q.insert_scores(
        store,
        [
            scores_q.ScoreRow(t.trace_id, f"score-{label}", 1.0, True, None, "online", "timed", t.start)
            for t in traces
        ],
    )
    audit.record(store, audit.Actor("time-test"), f"test.{label}", f"thing:{label}")
    return [t.trace_id for t in traces]


def _selected(api: Any, since: str) -> dict[str, Any]:
    """What each endpoint selects with this `since`."""
    traces = api.get("/traces", params={"since": since, "route": "timed", "limit": 100})
    overview = api.get("/overview", params={"since": since, "route": "timed"})
    audited = api.get("/audit", params={"since": since, "actor": "time-test", "limit": 100})
    names = api.get("/scores/names", params={"since": since, "route": "timed"})
    for r in (traces, overview, audited, names):
        assert r.status_code == 200, (r.request.url, r.text)
    series = {}
    for name in ("score-before", "score-after"):
        r = api.get("/scores", params={"name": name, "since": since, "route": "timed", "step": "1h"})
        assert r.status_code == 200, r.text
        series[name] = sum(p["count"] for p in r.json()["points"])
    return {
        "traces": sorted(t["trace_id"] for t in traces.json()["data"]),
        "overview requests": overview.json()["totals"]["requests"],
        "audit": sorted(e["action"] for e in audited.json()["data"]),
        "score names": sorted(n["name"] for n in names.json()["data"]),
        "score points": series,
    }


def test_the_same_since_selects_the_same_rows_everywhere(shipyard_server: Any) -> None:
    server = shipyard_server(env=ZONE)
    store = Store(server.store_url())
    _write_phase(store, "before")
    time.sleep(GAP_S)
    cut = time.time()
    time.sleep(GAP_S)
    after_ids = sorted(_write_phase(store, "after"))

    expected = {
        "traces": after_ids,
        "audit": ["test.after"],
        "score names": ["score-after"],
        "score points": {"score-before": 0, "score-after": 2},
    }
    env = {**os.environ, **ZONE}
    home = str(server.home)
    with server.api() as api:
        overviews = set()
        for spelling, since in _spellings(cut).items():
            selected = _selected(api, since)
            # The overview reads per-minute rollups, so it counts whole minutes from the cut's: the
            # same count for every spelling (a cut 5 h 45 min off would count none).
            overviews.add(selected.pop("overview requests"))
            assert selected == expected, spelling
            # The CLI reads the store directly, in the shell's (here: Kathmandu's) local zone.
            cli = ["traces", "list", "--since", since, "--route", "timed", "--json", "--home", home]
            out = subprocess.run(
                [sys.executable, "-m", "shipyard", *cli],
                capture_output=True,
                text=True,
                env=env,
                timeout=60,
                check=True,
            )
            assert sorted(t["trace_id"] for t in json.loads(out.stdout)) == after_ids, spelling
    assert len(overviews) == 1 and overviews.pop() >= 2, overviews
