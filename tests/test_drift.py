"""Drift detection on a real store with real WordLlama embeddings: a topic switch and doubled
lengths are found, samples from one distribution are not (false alarms counted over 20 seeds), the
statistics equal scipy's and a hand computation, and the CLI and the API drive the same checks."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import sqlalchemy as sa
from scipy import stats as sps
from typer.testing import CliRunner

from shipyard.errors import InvalidRequest, NotFound
from shipyard.monitoring import drift, stats
from shipyard.monitoring.drift import DriftConfig, InsufficientSamples, run_drift
from shipyard.registry import datasets
from shipyard.store import traces as tq
from shipyard.store.db import Store
from shipyard.store.tables import traces
from shipyard.tracing.spans import Trace

NOW = time.time()
DAY = 86400.0
REFERENCE = "7d offset 1d"
CURRENT = "1h"

# -- synthetic traffic ------------------------------------------------------------------------------
COOKING = (
    "How long should I {cook} {food} at {temp} degrees?",
    "What can I use instead of {ingredient} in a {dish} recipe?",
    "My {dish} came out {problem}, what did I do wrong?",
    "Can I freeze {food} after I {cook} it?",
    "Is it safe to eat {food} that sat on the counter overnight?",
    "Give me a quick {dish} recipe with {ingredient} and {ingredient2}.",
    "Why is my {dish} always {problem} even though I follow the recipe?",
)
TAX = (
    "Can I deduct {expense} on my {year} tax return?",
    "How do I report {income} to the IRS as a {who}?",
    "What is the deadline for {form} if I {situation}?",
    "Do I owe {tax} on {income}?",
    "Is {expense} tax deductible for a {who}?",
    "How is {income} taxed after I {situation}?",
    "Which records should a {who} keep to claim {expense}?",
)
WORDS = {
    "cook": ["roast", "bake", "grill", "braise", "simmer", "pan fry", "slow cook"],
    "food": ["chicken thighs", "salmon", "pork shoulder", "potatoes", "a whole turkey", "brisket"],
    "temp": ["180", "200", "350", "425", "160"],
    "ingredient": ["butter", "eggs", "buttermilk", "heavy cream", "baking soda", "garlic", "yeast"],
    "ingredient2": ["lemon", "parmesan", "spinach", "honey", "thyme", "mushrooms"],
    "dish": ["banana bread", "lasagna", "risotto", "pancake batter", "curry", "sourdough", "pie crust"],
    "problem": ["too dry", "dense and gummy", "bland", "burnt on the bottom", "too salty", "soggy"],
    "expense": [
        "home office costs", "mileage for client visits", "student loan interest", "charitable donations",
        "medical bills", "a new laptop for work", "health insurance premiums",
    ],
    "year": ["2023", "2024", "2025"],
    "income": [
        "freelance income", "capital gains from selling stock", "rental income", "cryptocurrency profits",
        "a signing bonus", "dividends", "gig economy earnings",
    ],
    "who": ["sole proprietor", "freelancer", "landlord", "married couple filing jointly", "retiree"],
    "form": ["filing form 1040", "a quarterly estimated tax payment", "form 1099-NEC", "an amended return"],
    "situation": ["moved to another state", "work remotely abroad", "got married", "sold my house"],
    "tax": ["self-employment tax", "state income tax", "capital gains tax", "the alternative minimum tax"],
}  # fmt: skip
_ANSWER = (
    "sure here is what usually works best first check the details then adjust step by step and keep "
    "notes so you can compare results next time most people find this approach reliable"
)
ANSWER_WORDS = _ANSWER.split()


def prompt(rng: np.random.Generator, templates: tuple[str, ...]) -> str:
    template = templates[int(rng.integers(len(templates)))]
    return template.format(**{k: v[int(rng.integers(len(v)))] for k, v in WORDS.items()})


def answer(rng: np.random.Generator, scale: float = 1.0) -> str:
    n = max(3, int(rng.normal(40, 12) * scale))
    return " ".join(ANSWER_WORDS[int(i)] for i in rng.integers(len(ANSWER_WORDS), size=n))


def traffic(
    route: str,
    n: int,
    since: float,
    until: float,
    rng: np.random.Generator,
    *,
    topic: str = "mixed",
    length_scale: float = 1.0,
) -> list[Trace]:
    out = []
    for start in np.sort(rng.uniform(since, until, size=n)):
        if topic == "mixed":
            templates = COOKING if rng.random() < 0.5 else TAX
        else:
            templates = COOKING if topic == "cooking" else TAX
        text = prompt(rng, templates)
        reply = answer(rng, length_scale)
        latency = round(float(rng.lognormal(math.log(800 * length_scale), 0.3)), 3)
        out.append(
            Trace(
                operation="chat",
                route=route,
                target="fake-chat",
                provider="fake",
                model="fake-chat",
                start=float(start),
                end=float(start) + latency / 1000,
                input=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": text}],
                output=reply,
                input_tokens=len(text) // 4 + 3,
                output_tokens=len(reply) // 4 + 1,
                attempts=1,
            )
        )
    return out


def ref_window(rng: np.random.Generator, route: str, n: int, **kw: Any) -> list[Trace]:
    return traffic(route, n, NOW - 8 * DAY, NOW - DAY - 60, rng, **kw)


def cur_window(rng: np.random.Generator, route: str, n: int, **kw: Any) -> list[Trace]:
    return traffic(route, n, NOW - 3500, NOW - 1, rng, **kw)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    home = tmp_path_factory.mktemp("drift-home")
    s = Store(f"sqlite:///{home / 'shipyard.db'}")
    s.migrate()
    rng = np.random.default_rng(1)
    batch: list[Trace] = []
    batch += ref_window(rng, "topics", 300, topic="cooking")
    batch += cur_window(rng, "topics", 300, topic="tax")
    batch += ref_window(rng, "lengths", 300)
    batch += cur_window(rng, "lengths", 300, length_scale=2.0)
    batch += ref_window(rng, "cooking", 300, topic="cooking")
    batch += cur_window(rng, "cooking", 120, topic="cooking")
    batch += ref_window(rng, "quiet", 40)
    batch += cur_window(rng, "quiet", 10)
    for seed in range(20):  # fresh samples from one distribution for each seed
        srng = np.random.default_rng(1000 + seed)
        batch += ref_window(srng, f"steady-{seed}", 300)
        batch += cur_window(srng, f"steady-{seed}", 300)
    tq.insert_traces(s, batch)
    yield s
    s.close()


def check(store: Store, route: str, **kw: Any) -> drift.DriftReport:
    return run_drift(store, route, kw.pop("reference", REFERENCE), kw.pop("current", CURRENT), now=NOW, **kw)


def test_topic_switch_is_detected_and_shown_as_clusters(store: Store) -> None:
    report = check(store, "topics")
    m = report.metrics()
    assert report.drifted and m["drifted"] == 1.0
    assert (report.n_reference, report.n_current) == (300, 300)
    level = report.results["alpha"] / report.results["n_tests"]
    assert m["mmd_prompt_p"] <= level, m
    assert any(r.startswith("mmd_prompt") for r in report.results["reasons"])
    # The answers come from one generator on both sides: no drift there.
    assert m["mmd_response_p"] > level and m["ks_response_chars_p"] > level
    topics = report.results["topics"]
    assert m["topic_shift"] > 0.8
    grown = topics["clusters"][0]
    shrunk = min(topics["clusters"], key=lambda c: c["change"])
    assert grown["change"] > 0.2 and grown["examples_from"] == "current"
    assert all(
        any(w in e.lower() for w in ("tax", "irs", "deduct", "income", "form")) for e in grown["examples"]
    )
    assert shrunk["change"] < -0.2 and shrunk["examples_from"] == "reference"
    cooking = (
        " ".join(COOKING) + " " + " ".join(" ".join(WORDS[v]) for v in ("cook", "food", "ingredient", "dish"))
    )
    cooking_words = set(cooking.lower().replace("?", " ").replace(",", " ").split())
    assert set(shrunk["keywords"]) & cooking_words, shrunk["keywords"]
    assert len(grown["examples"]) >= 2 and grown["keywords"]
    # Saved, and the store gives it back.
    latest = drift.latest_report(store, "topics")
    assert latest is not None and latest.id == report.id and latest.metrics() == m


def test_doubled_lengths_are_detected(store: Store) -> None:
    report = check(store, "lengths")
    m = report.metrics()
    assert report.drifted
    level = report.results["alpha"] / report.results["n_tests"]
    for feature in ("response_chars", "output_tokens", "latency_ms"):
        assert m[f"ks_{feature}_p"] <= level, feature
        assert m[f"psi_{feature}"] >= 0.25, feature
    # Prompts come from the same mixture of topics on both sides.
    assert m["mmd_prompt_p"] > level and m["ks_prompt_chars_p"] > level
    assert m["topic_shift"] < 0.2
    psi_test = next(t for t in report.results["tests"] if t["name"] == "psi_response_chars")
    assert psi_test["drifted"] and psi_test["detail"]["votes"]


def test_false_alarm_rate_over_20_seeds(store: Store) -> None:
    reports = [check(store, f"steady-{seed}", seed=seed) for seed in range(20)]
    alarms = [r.route for r in reports if r.drifted]
    smallest = sorted(r.metrics()["p_value"] for r in reports)[:3]
    print(f"false alarms: {len(alarms)}/20 {alarms}; smallest corrected p-values {smallest}")
    assert len(alarms) <= 1, [r.results["reasons"] for r in reports if r.drifted]
    assert all(r.n_reference == 300 and r.n_current == 300 for r in reports)
    # At 300 a side PSI is trusted enough to vote (and still raised no alarm).
    assert all(t["detail"]["votes"] for r in reports for t in r.results["tests"] if t["test"] == "psi")


def test_report_ks_values_equal_scipy_on_the_stored_values(store: Store) -> None:
    report = check(store, "steady-3", seed=3)
    m = report.metrics()
    with store.engine.connect() as conn:

        def column(name: str, since: float, until: float) -> np.ndarray:
            q = sa.select(traces.c[name]).where(
                traces.c.route == "steady-3", traces.c.start_time >= since, traces.c.start_time < until
            )
            return np.asarray(conn.execute(q).scalars().all(), dtype=float)

        for feature in ("latency_ms", "output_tokens", "input_tokens"):
            ref = column(feature, NOW - 8 * DAY, NOW - DAY)
            cur = column(feature, NOW - 3600, NOW)
            expected = sps.ks_2samp(ref, cur)
            assert m[f"ks_{feature}"] == pytest.approx(expected.statistic, abs=1e-9)
            assert m[f"ks_{feature}_p"] == pytest.approx(expected.pvalue, abs=1e-9)


@pytest.mark.parametrize("seed", range(6))
def test_ks_equals_scipy_including_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n1, n2 = int(rng.integers(5, 400)), int(rng.integers(5, 400))
    if seed % 3 == 0:  # heavy ties: small integers
        x, y = rng.integers(0, 6, n1).astype(float), rng.integers(0, 7, n2).astype(float)
    elif seed % 3 == 1:  # equal sizes, continuous, shifted
        x, y = rng.normal(0, 1, n1), rng.normal(0.3, 1, n1)
    else:  # values shared between the samples
        pool = rng.normal(size=30)
        x, y = rng.choice(pool, n1), np.concatenate([rng.choice(pool, n2), [pool[0]] * 5])
    ours = stats.ks_test(x, y)
    theirs = sps.ks_2samp(x, y)
    assert ours.statistic == pytest.approx(theirs.statistic, abs=1e-9)
    assert ours.p_value == pytest.approx(theirs.pvalue, abs=1e-9)
    # And the statistic is the largest gap between the empirical distribution functions.
    grid = np.union1d(x, y)
    gap = np.max(
        np.abs(
            np.searchsorted(np.sort(x), grid, "right") / len(x)
            - np.searchsorted(np.sort(y), grid, "right") / len(y)
        )
    )
    assert ours.statistic == pytest.approx(gap, abs=1e-12)


def test_psi_equals_a_hand_computation() -> None:
    # Reference quartile edges (linear interpolation): 2.75, 4.5, 6.25 -> reference bins hold 2, 2, 2, 2.
    # Current: four values below 2.75, none in the second bin, two in each of the others.
    res = stats.psi([1, 2, 3, 4, 5, 6, 7, 8], [1, 1, 1, 1, 5, 6, 7, 8], bins=4, epsilon=1e-4)
    assert res.detail["edges"] == [2.75, 4.5, 6.25]
    expected = (0.5 - 0.25) * math.log(0.5 / 0.25) + (1e-4 - 0.25) * math.log(1e-4 / 0.25)
    assert res.statistic == pytest.approx(expected, abs=1e-12)
    assert res.statistic == pytest.approx(2.1285159, abs=1e-6)
    # Ten default bins; a value on an edge counts in the bin above; identical samples give 0.
    ref = np.arange(100.0)
    assert stats.psi(ref, ref).statistic == 0.0
    shifted = stats.psi(ref, ref + 10)
    # Edges 9.9, 19.8, …, 89.1; 10…109 leave the first bin empty and put 20 values in the last.
    assert shifted.detail["edges"] == pytest.approx([9.9 * i for i in range(1, 10)])
    p = np.full(10, 0.1)
    q = np.array([1e-4, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.2])
    assert shifted.detail["current_shares"] == pytest.approx(list(q))
    assert shifted.statistic == pytest.approx(float(np.sum((q - p) * np.log(q / p))), abs=1e-12)


def test_mmd_permutation_test() -> None:
    rng = np.random.default_rng(0)
    same = stats.mmd_test(rng.normal(size=(200, 16)), rng.normal(size=(200, 16)), permutations=400, seed=1)
    moved = stats.mmd_test(
        rng.normal(size=(200, 16)), rng.normal(0.3, 1, size=(200, 16)), permutations=400, seed=1
    )
    assert same.p_value is not None and moved.p_value is not None
    assert same.p_value > 0.05 and moved.p_value == pytest.approx(1 / 401)
    assert moved.statistic > same.statistic
    # Seeded: the same inputs and seed give the same p-value.
    again = stats.mmd_test(rng.normal(size=(50, 4)), rng.normal(size=(50, 4)), permutations=300, seed=5)
    assert again.detail["permutations"] == 300
    # Enough permutations that a p-value can pass the Bonferroni level.
    assert 1 / (stats.permutations_for(7, 0.01) + 1) <= 0.01 / 7 / 2


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("7x", "`7x` is not a duration (30s, 15m, 2h, 7d)"),
        ("", "is empty"),
        ("7d offset", "no duration after `offset`"),
        ("7d offset 1y", "`1y`, which is not a duration"),
        ("0h", "empty window"),
        ("2026-13-01..2026-11-08", "`2026-13-01`, which is not a time"),
        ("2026-11-08..2026-11-01", "ends before it starts"),
        ("..2026-11-01", "no start time"),
        ("dataset:", "names no dataset"),
        ("dataset:golden@vx", "must be a number"),
        ("last week", "is not a window spec"),
    ],
)
def test_bad_specs_give_clear_errors(spec: str, message: str) -> None:
    with pytest.raises(InvalidRequest) as exc:
        drift.parse_spec(spec, "current")
    assert message in exc.value.message and exc.value.param == "current"
    if not spec.startswith("dataset:"):  # the message lists the forms a spec can take
        assert "`7d offset 1d`" in exc.value.message and "`dataset:NAME@v2`" in exc.value.message


def test_spec_grammar() -> None:
    w = drift.parse_spec("7d  offset  1d")
    assert (w.kind, w.spec, w.bounds(1_000_000.0)) == (
        "window",
        "7d offset 1d",
        (1_000_000.0 - 8 * DAY, 1_000_000.0 - DAY),
    )
    r = drift.parse_spec("2026-11-01T00:00..2026-11-08T00:00+02:00")
    assert r.bounds(0) == (1793491200.0, 1793491200.0 + 7 * DAY - 2 * 3600)
    assert drift.parse_spec("1700000000..").bounds(1_800_000_000.0) == (1.7e9, 1.8e9)
    d = drift.parse_spec("dataset:support-golden@v2")
    assert (d.kind, d.dataset, d.version, d.spec) == (
        "dataset",
        "support-golden",
        2,
        "dataset:support-golden@v2",
    )
    assert drift.parse_spec("dataset:support-golden").version is None
    assert drift.join_offset("7d", "1d", "reference") == "7d offset 1d"
    with pytest.raises(InvalidRequest, match="shifts a duration window"):
        drift.join_offset("dataset:x@v1", "1d", "reference")


def test_bad_parameters_and_overlap(store: Store) -> None:
    with pytest.raises(InvalidRequest, match="overlaps the current window") as exc:
        check(store, "topics", reference="7d")
    assert "`7d offset 1h`" in exc.value.message
    with pytest.raises(InvalidRequest, match="`alpha` must be between 0 and 1"):
        check(store, "topics", alpha=1.5)
    with pytest.raises(
        InvalidRequest, match="`max_samples` \\(10\\) must be at least `min_samples` \\(30\\)"
    ):
        check(store, "topics", max_samples=10)
    with pytest.raises(NotFound, match="no dataset `nope`"):
        check(store, "topics", reference="dataset:nope@v1")


def test_too_few_traces_is_a_clear_error_and_writes_nothing(store: Store) -> None:
    from shipyard.store import drift as q

    before = q.count_reports(store)
    with pytest.raises(InsufficientSamples) as exc:
        check(store, "quiet")
    msg = exc.value.message
    assert "the current window `1h`" in msg and "has 10 successful trace(s) of route `quiet`" in msg
    assert "needs at least 30 (`min_samples`)" in msg and "widen the current window" in msg
    assert (
        exc.value.status == 400 and exc.value.code == "insufficient_samples" and exc.value.param == "current"
    )
    with pytest.raises(InsufficientSamples) as exc:
        check(store, "no-such-route")
    msg = exc.value.message
    assert "the reference window `7d offset 1d`" in msg and "has 0 successful trace(s)" in msg
    assert "routes with traces in that window: cooking, lengths, quiet" in msg
    assert check(store, "quiet", min_samples=10).n_current == 10
    before += 1
    assert q.count_reports(store) == before


def test_dataset_reference(store: Store) -> None:
    rng = np.random.default_rng(7)
    examples = [{"input": {"question": prompt(rng, COOKING)}} for _ in range(150)]
    datasets.create_version(store, "cooking-golden", examples, create_missing=True)
    shifted = check(store, "topics", reference="dataset:cooking-golden@v1", max_samples=100)
    steady = check(store, "cooking", reference="dataset:cooking-golden")
    assert shifted.reference["kind"] == "dataset" and shifted.reference["version"] == 1
    assert shifted.n_reference == 100 and shifted.reference["n_examples"] == 150
    assert shifted.drifted and shifted.metrics()["mmd_prompt_p"] <= shifted.results["corrected_alpha"]
    skipped = {s["name"]: s["reason"] for s in shifted.results["skipped"]}
    assert "has no responses" in skipped["mmd_response"] and "has no latency_ms" in skipped["ks_latency_ms"]
    assert shifted.results["n_tests"] == 2  # prompt embeddings and prompt length
    assert not steady.drifted, steady.results["reasons"]


def test_traces_without_captured_text_still_get_the_numeric_tests(tmp_path: Path) -> None:
    s = Store(f"sqlite:///{tmp_path / 'nocapture.db'}")
    s.migrate()
    rng = np.random.default_rng(5)
    batch = ref_window(rng, "private", 60) + cur_window(rng, "private", 60, length_scale=2.0)
    tq.insert_traces(s, batch, capture="none")
    report = check(s, "private")
    skipped = {x["name"] for x in report.results["skipped"]}
    assert {"mmd_prompt", "mmd_response", "ks_prompt_chars", "ks_response_chars"} <= skipped
    assert report.results["topics"] is None and report.results["n_tests"] == 3  # tokens in/out, latency
    assert report.drifted and report.metrics()["ks_latency_ms_p"] < 0.01
    s.close()


def test_postgres_store(pg_url: str) -> None:
    s = Store(pg_url)
    s.migrate()
    rng = np.random.default_rng(6)
    tq.insert_traces(s, ref_window(rng, "pg", 80, topic="cooking") + cur_window(rng, "pg", 80, topic="tax"))
    report = check(s, "pg", max_samples=60)
    assert (report.n_reference, report.n_current) == (60, 60) and report.drifted
    again = check(s, "pg", max_samples=60)  # same seed, same sample, same verdict
    assert again.current["n_in_window"] == 80 and again.metrics() == report.metrics()
    latest = drift.latest_report(s, "pg")
    assert latest is not None and latest.id == again.id and latest.results == again.results
    assert [r.id for r in drift.list_reports(s, "pg")] == [again.id, report.id]
    with pytest.raises(InsufficientSamples, match="routes with traces in that window: pg"):
        check(s, "elsewhere")
    s.close()


def test_big_windows_are_sampled_uniformly(tmp_path: Path) -> None:
    s = Store(f"sqlite:///{tmp_path / 'big.db'}")
    s.migrate()
    rng = np.random.default_rng(8)
    # Busy first day, quiet rest: a sample uniform over traces (not over time) follows the traffic.
    batch = traffic("busy", 2400, NOW - 8 * DAY, NOW - 7 * DAY, rng) + traffic(
        "busy", 600, NOW - 7 * DAY, NOW - DAY, rng
    )
    for t in batch[::10]:
        t.status = "error"  # never sampled
    for t in batch[1::97]:  # traces that share a start time with another
        twin = traffic("busy", 1, t.start, t.start + 1, rng)[0]
        twin.start, twin.end = t.start, t.end
        batch.append(twin)
    tq.insert_traces(s, batch)
    ok = {t.trace_id: t.start for t in batch if t.status == "ok"}
    spec = drift.parse_spec(REFERENCE)
    sample = drift.load_sample(s, "busy", spec, now=NOW, max_samples=600, rng=np.random.default_rng([0, 1]))
    assert sample.source["n_in_window"] == len(batch) > 2000 and sample.n == 600
    again = drift.load_sample(s, "busy", spec, now=NOW, max_samples=600, rng=np.random.default_rng([0, 1]))
    other = drift.load_sample(s, "busy", spec, now=NOW, max_samples=600, rng=np.random.default_rng([1, 1]))
    assert again.prompts == sample.prompts and other.prompts != sample.prompts
    assert len(set(sample.ids)) == 600 and all(tid in ok for tid in sample.ids)  # no error traces
    starts = np.asarray([ok[tid] for tid in sample.ids])
    assert sps.ks_2samp(starts, np.asarray(list(ok.values()))).pvalue > 0.01
    assert 0.7 < float(np.mean(starts < NOW - 7 * DAY)) < 0.9  # ~80% of the traffic was on the busy day
    s.close()


def test_drift_config() -> None:
    cfg = DriftConfig(route="support")
    assert (cfg.reference, cfg.current, cfg.every, cfg.interval_s) == ("7d offset 1d", "1h", "15m", 900.0)
    assert (cfg.alpha, cfg.min_samples, cfg.max_samples, cfg.psi_threshold) == (0.01, 30, 500, 0.25)
    for bad, fragment in (
        ({"route": "r", "color": "red"}, "Extra inputs are not permitted"),
        ({"route": "r", "every": "soon"}, "not a duration"),
        ({"route": "r", "current": "7q"}, "`7q` is not a duration"),
        ({"route": "r", "max_samples": 20}, "max_samples (20) is below min_samples (30)"),
        ({"route": "r", "alpha": 0}, "greater than 0"),
    ):
        with pytest.raises(ValueError, match=None) as exc:
            DriftConfig.model_validate(bad)
        assert fragment in str(exc.value), (bad, str(exc.value))


def test_metrics_keys(store: Store) -> None:
    report = drift.list_reports(store, "lengths", limit=1)[0]
    m = report.metrics()
    expected = {"drifted", "p_value", "n_reference", "n_current", "mmd_prompt", "mmd_prompt_p", "psi_max"}
    expected |= {"mmd_response", "mmd_response_p", "topic_shift", "topic_max_growth", "topic_chi2_p"}
    for f in drift.NUMERIC_FEATURES:
        expected |= {f"ks_{f}", f"ks_{f}_p", f"psi_{f}"}
    assert set(m) == expected
    assert all(isinstance(v, float) and math.isfinite(v) for v in m.values())
    assert m["p_value"] == min(t["p_adjusted"] for t in report.results["tests"] if t["p_value"] is not None)


# -- CLI and API ------------------------------------------------------------------------------------
def test_cli(store: Store, tmp_path: Path) -> None:
    from shipyard.cli.main import app

    home = str(Path(store.url.split("///", 1)[1]).parent)
    runner = CliRunner()
    now_relative = f"{time.time() - NOW + 3600:.0f}s"  # the current window still covers the test traffic
    args = [
        "drift",
        "--route",
        "topics",
        "--reference",
        "7d",
        "--reference-offset",
        "1d",
        "--current",
        now_relative,
    ]
    res = runner.invoke(app, [*args, "--home", home], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    for text in ("DRIFTED", "mmd_prompt", "ks_latency_ms", "psi_prompt_chars", "corrected p", "topics", "+"):
        assert text in res.output, text
    res = runner.invoke(app, [*args, "--home", home, "--json", "--fail-on-drift"])
    assert res.exit_code == 3
    body = json.loads(res.output)
    assert body["drifted"] is True and body["metrics"]["drifted"] == 1.0 and body["id"] > 0
    res = runner.invoke(app, ["drift", "list", "--route", "topics", "--home", home], env={"COLUMNS": "200"})
    assert res.exit_code == 0 and "drifted" in res.output and str(body["id"]) in res.output
    res = runner.invoke(app, ["drift", "show", str(body["id"]), "--home", home, "--json"])
    assert res.exit_code == 0 and json.loads(res.output)["id"] == body["id"]
    res = runner.invoke(app, ["drift", "--help"])
    assert res.exit_code == 0 and "dataset:NAME@v2" in res.output and "7d offset 1d" in res.output
    assert "2026-11-01T08:00+02:00" in res.output
    res = runner.invoke(app, ["drift", "--route", "topics", "--current", "yesterday", "--home", home])
    assert res.exit_code == 1 and "`yesterday` is not a window spec" in res.output
    res = runner.invoke(app, ["drift", "show", "99999", "--home", home])
    assert res.exit_code == 1 and "no drift report 99999" in res.output


API_CONFIG = """
providers: [{name: fake, type: mock}]
models: [{name: fake-chat, provider: fake}]
routes: [{name: support, targets: [{model: fake-chat}]}]
"""


def test_api(shipyard_server: Callable[..., Any]) -> None:
    server = shipyard_server(API_CONFIG)
    store = Store(server.store_url())
    rng = np.random.default_rng(3)
    now = time.time()
    tq.insert_traces(
        store,
        traffic("support", 150, now - 8 * DAY, now - DAY, rng, topic="cooking")
        + traffic("support", 150, now - 3000, now - 1, rng, topic="tax"),
    )
    api = server.url + "/api/drift"
    with httpx.Client(timeout=60, headers=server.headers) as client:
        assert client.get(api).json()["data"] == []
        res = client.post(
            api + "/run", json={"route": "support", "reference": "7d offset 1d", "current": "1h"}
        )
        assert res.status_code == 201, res.text
        report = res.json()
        assert (
            report["drifted"] and report["n_reference"] == 150 and report["metrics"]["mmd_prompt_p"] < 0.002
        )
        assert {t["name"] for t in report["results"]["tests"]} >= {
            "mmd_prompt",
            "ks_latency_ms",
            "psi_latency_ms",
        }
        listed = client.get(api, params={"route": "support", "limit": 5}).json()
        assert [r["id"] for r in listed["data"]] == [report["id"]] and listed["next"] is None
        assert listed["data"][0]["reasons"] and "results" not in listed["data"][0]
        full = client.get(f"{api}/{report['id']}").json()
        assert full["results"]["topics"]["clusters"] and full["metrics"] == report["metrics"]

        missing = client.get(f"{api}/4242")
        assert missing.status_code == 404 and "no drift report 4242" in missing.json()["error"]["message"]
        bad = client.post(api + "/run", json={"route": "support", "current": "1 hour"})
        assert bad.status_code == 400
        assert (
            bad.json()["error"]["param"] == "current"
            and "not a window spec" in bad.json()["error"]["message"]
        )
        extra = client.post(api + "/run", json={"route": "support", "window": "1h"})
        assert extra.status_code == 400 and extra.json()["error"]["param"] == "window"
        few = client.post(api + "/run", json={"route": "nothing-here"})
        assert few.status_code == 400 and few.json()["error"]["code"] == "insufficient_samples"
        unknown = client.post(api + "/run", json={"route": "support", "reference": "dataset:ghost"})
        assert unknown.status_code == 404 and "no dataset `ghost`" in unknown.json()["error"]["message"]
    store.close()


def test_checks_limit_blas_threads_only_while_they_run() -> None:
    from threadpoolctl import threadpool_info

    before = [i["num_threads"] for i in threadpool_info()]
    with drift.one_blas_thread(), drift.one_blas_thread():
        assert all(i["num_threads"] == 1 for i in threadpool_info())
    assert [i["num_threads"] for i in threadpool_info()] == before
