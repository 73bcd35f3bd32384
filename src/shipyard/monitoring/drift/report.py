"""A drift check's report: what :func:`~shipyard.monitoring.drift.runner.run_drift` stores in
``drift_reports``, and the flat metrics alert rules read from it (``drift.<key>``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from shipyard.errors import InvalidRequest, NotFound
from shipyard.store import drift as q
from shipyard.store.db import Store


@dataclass
class DriftReport:
    """One drift check. ``results`` holds every test (``tests``), the ones that could not run
    (``skipped``, with the reason), the topic clusters (``topics``) and the settings used."""

    id: int | None
    route: str
    created_at: float
    reference: dict[str, Any]
    current: dict[str, Any]
    n_reference: int
    n_current: int
    drifted: bool
    results: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> DriftReport:
        return cls(
            id=int(row["id"]),
            route=str(row["route"]),
            created_at=float(row["created_at"]),
            reference=row["reference"] or {},
            current=row["current"] or {},
            n_reference=int(row["n_reference"]),
            n_current=int(row["n_current"]),
            drifted=bool(row["drifted"]),
            results=row.get("results") or {},
        )

    def save(self, store: Store) -> None:
        """Store the report as a new ``drift_reports`` row and take the row's id: each field but
        ``id`` is a column of the same name."""
        values = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "id"}
        self.id = q.insert_report(store, **values)

    def metrics(self) -> dict[str, float]:
        """Flat numbers for alert rules, referenced there as ``drift.<key>``:

        - ``drifted`` 1 or 0; ``p_value`` the smallest Bonferroni-corrected p-value (1 when none ran);
        - ``n_reference``, ``n_current``;
        - ``mmd_prompt``, ``mmd_response`` (MMD², unbiased) and ``mmd_prompt_p``, ``mmd_response_p``;
        - for each FEATURE in prompt_chars, response_chars, input_tokens, output_tokens, latency_ms:
          ``ks_FEATURE`` (KS statistic), ``ks_FEATURE_p`` (its p-value), ``psi_FEATURE``;
        - ``psi_max`` the largest PSI; ``topic_shift`` the total variation distance between the
          reference's and the current sample's cluster shares (0 = same mix, 1 = disjoint);
          ``topic_max_growth`` the largest gain of one cluster's share; ``topic_chi2_p``.

        ``_p`` values are uncorrected. Tests that were skipped have no key.
        """
        out: dict[str, float] = {
            "drifted": 1.0 if self.drifted else 0.0,
            "n_reference": float(self.n_reference),
            "n_current": float(self.n_current),
        }
        adjusted: list[float] = []
        psis: list[float] = []
        for t in self.results.get("tests", []):
            out[t["name"]] = float(t["statistic"])
            if t.get("p_value") is not None:
                out[t["name"] + "_p"] = float(t["p_value"])
                adjusted.append(float(t["p_adjusted"]))
            if t["test"] == "psi":
                psis.append(float(t["statistic"]))
        out["p_value"] = min(adjusted) if adjusted else 1.0
        if psis:
            out["psi_max"] = max(psis)
        topics = self.results.get("topics")
        if topics:
            out["topic_shift"] = float(topics["shift"])
            out["topic_max_growth"] = max((float(c["change"]) for c in topics["clusters"]), default=0.0)
            if topics.get("chi2_p") is not None:
                out["topic_chi2_p"] = float(topics["chi2_p"])
        return out

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "metrics": self.metrics()}

    def summary(self) -> dict[str, Any]:
        """Everything but the per-test detail: what a list of reports shows."""
        out = self.to_dict()
        results = out.pop("results")
        out["reasons"] = results.get("reasons", [])
        return out


def get_report(store: Store, report_id: int) -> DriftReport:
    row = q.get_report(store, report_id)
    if row is None:
        raise NotFound(
            f"no drift report {report_id}; `shipyard drift list` (or GET /api/drift) shows the reports",
            param="id",
            code="drift_report_not_found",
        )
    return DriftReport.from_row(row)


def latest_report(store: Store, route: str) -> DriftReport | None:
    row = q.latest_report(store, route)
    return None if row is None else DriftReport.from_row(row)


def list_reports(
    store: Store, route: str | None = None, *, limit: int = 50, offset: int = 0
) -> list[DriftReport]:
    """Reports newest first, with their results (so each has its metrics)."""
    if not 1 <= limit <= 1000:
        raise InvalidRequest(f"`limit` must be between 1 and 1000; got {limit}", param="limit")
    if offset < 0:
        raise InvalidRequest(f"`offset` must be >= 0; got {offset}", param="offset")
    rows = q.list_reports(store, route, limit=limit, offset=offset, with_results=True)
    return [DriftReport.from_row(r) for r in rows]
