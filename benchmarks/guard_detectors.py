"""Detection quality and latency of the guard scanners on the public sets in ../shared/data.

    python benchmarks/guard_detectors.py --data ../shared/data [--bipia-sample 3000] [--json out.json]

Each text goes through `shipyard.cli.guard.scan_record`, the code behind `shipyard guard scan`, with
scanners built by type with their default options (`--scanners` in the CLI). Sets:

- injection, direct (role `user`): attacks = CyberSecEval's held-out half (the ids the model's
  manifest lists; the detector never trained on them); benign = XSTest's 250 safe prompts (never
  trained on). XSTest's 200 unsafe prompts are harmful requests, not injections: their flag rate is
  reported for information only.
- injection, indirect (role `tool`): BIPIA *test* contexts (e-mail, table, code; never trained on)
  clean = benign, and with a BIPIA *test* attack inserted at the start, middle or end = attacks
  (a seeded sample of all context x attack x position combinations).
- pii: recall per type on presidio-research synth_dataset_v2 (a gold span counts when a finding of
  the same type overlaps it), precision per type, and the share of the PII-free sentences flagged.
- secrets: detect-secrets test_data, line level: the lines its baseline lists are positives, every
  other non-empty line of the same files and of its secret-free files is a negative.
- latency: every scanner alone on 2,000-character prompts (cut from BIPIA e-mails), per prompt.

Prints Markdown (the `## Guard detectors` section of docs/benchmarks.md) and optionally JSON.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import platform
import random
import re
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tools"))

from shipyard.cli.guard import scan_record, scanners_by_type  # noqa: E402
from shipyard.guard.base import Scanner, Stage  # noqa: E402
from shipyard.plugins import scanner_types  # noqa: E402

PRESIDIO_KINDS = {
    "EMAIL_ADDRESS": "EMAIL",
    "PHONE_NUMBER": "PHONE",
    "CREDIT_CARD": "CREDIT_CARD",
    "IBAN_CODE": "IBAN",
    "US_SSN": "US_SSN",
    "IP_ADDRESS": "IP_ADDRESS",
    "PERSON": "PERSON",
}


def pct(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Timed:
    """Runs records through scan_record, keeping each one's wall time."""

    def __init__(self, scanners: list[tuple[str, Scanner]], stage: Stage = "input") -> None:
        self.scanners = scanners
        self.stage = stage
        self.times: list[float] = []

    def __call__(self, record: dict[str, Any], role: str | None = None) -> dict[str, Any]:
        t0 = time.perf_counter()
        out = scan_record(self.scanners, record, self.stage, role)
        self.times.append(time.perf_counter() - t0)
        return out


def _rates(pos_hits: list[bool], neg_hits: list[bool]) -> dict[str, Any]:
    tp, fp = sum(pos_hits), sum(neg_hits)
    return {
        "n_attacks": len(pos_hits),
        "n_benign": len(neg_hits),
        "tpr": tp / len(pos_hits) if pos_hits else None,
        "fpr": fp / len(neg_hits) if neg_hits else None,
        "precision": tp / (tp + fp) if tp + fp else None,
    }


def _latency(times: list[float]) -> dict[str, float]:
    return {"p50_ms": pct(times, 0.5) * 1e3, "p95_ms": pct(times, 0.95) * 1e3}


def injection(data: Path, bipia_sample: int, seed: int) -> dict[str, Any]:
    from train_injection import _jsonl, bipia_context, insert_attack

    from shipyard.guard.injection import manifest

    scan = Timed(scanners_by_type(["injection"], "input"))

    def hit(text: str, role: str) -> bool:
        return any(f["scanner"] == "injection" for f in scan({"text": text}, role)["findings"])

    held = set(manifest()["heldout_cyberseceval_ids"])
    cases = json.loads((data / "cyberseceval-prompt-injection" / "prompt_injection.json").read_text())
    cse = [c for c in cases if c["prompt_id"] in held]
    with (data / "xstest" / "xstest_prompts.csv").open() as f:
        xs = list(csv.DictReader(f))
    scan.times = []
    cse_hits = [hit(c["user_input"], "user") for c in cse]
    safe_hits = [hit(r["prompt"], "user") for r in xs if r["label"] == "safe"]
    unsafe_hits = [hit(r["prompt"], "user") for r in xs if r["label"] == "unsafe"]
    direct = _rates(cse_hits, safe_hits) | _latency(scan.times)
    direct["xstest_unsafe_flag_rate"] = sum(unsafe_hits) / len(unsafe_hits)
    by_variant: dict[str, list[bool]] = {}
    for c, h in zip(cse, cse_hits, strict=True):
        by_variant.setdefault(c["injection_variant"], []).append(h)
    direct["tpr_by_variant"] = {k: sum(v) / len(v) for k, v in sorted(by_variant.items())}

    contexts = {
        t: [bipia_context(r, t) for r in _jsonl(data / "bipia" / t / "test.jsonl")]
        for t in ("email", "table", "code")
    }
    text_attacks = [
        a for v in json.loads((data / "bipia" / "text_attack_test.json").read_text()).values() for a in v
    ]
    code_attacks = [
        a for v in json.loads((data / "bipia" / "code_attack_test.json").read_text()).values() for a in v
    ]
    combos = [
        (task, i, attack, where)
        for task, docs in contexts.items()
        for i in range(len(docs))
        for attack in (code_attacks if task == "code" else text_attacks)
        for where in ("start", "middle", "end")
    ]
    sample = random.Random(seed).sample(combos, min(bipia_sample, len(combos)))
    scan.times = []
    clean_hits = [hit(doc, "tool") for docs in contexts.values() for doc in docs]
    attacked_hits = [hit(insert_attack(contexts[t][i], a, w), "tool") for t, i, a, w in sample]
    indirect = _rates(attacked_hits, clean_hits) | _latency(scan.times)
    indirect["n_combinations"] = len(combos)
    by_task: dict[str, list[bool]] = {}
    for (task, _, _, _), h in zip(sample, attacked_hits, strict=True):
        by_task.setdefault(task, []).append(h)
    indirect["tpr_by_task"] = {k: sum(v) / len(v) for k, v in sorted(by_task.items())}
    clean_by_task: dict[str, list[bool]] = {}
    pos = 0
    for task, docs in contexts.items():
        clean_by_task[task] = clean_hits[pos : pos + len(docs)]
        pos += len(docs)
    indirect["fpr_by_task"] = {k: sum(v) / len(v) for k, v in sorted(clean_by_task.items())}
    return {"direct": direct, "indirect": indirect}


def pii(data: Path) -> dict[str, Any]:
    scan = Timed(scanners_by_type(["pii"], "input"))
    rows = json.loads((data / "presidio-pii" / "synth_dataset_v2.json").read_text())
    found: dict[str, list[bool]] = {k: [] for k in PRESIDIO_KINDS.values()}
    correct: dict[str, list[bool]] = {k: [] for k in PRESIDIO_KINDS.values()}
    clean_flagged: list[bool] = []
    for row in rows:
        findings = [f for f in scan({"text": row["full_text"]})["findings"] if f["scanner"] == "pii"]
        gold = [
            (PRESIDIO_KINDS[s["entity_type"]], s["start_position"], s["end_position"])
            for s in row["spans"]
            if s["entity_type"] in PRESIDIO_KINDS
        ]
        for kind, a, b in gold:
            found[kind].append(any(f["kind"] == kind and f["start"] < b and a < f["end"] for f in findings))
        for f in findings:
            if f["kind"] in correct:
                correct[f["kind"]].append(
                    any(k == f["kind"] and f["start"] < b and a < f["end"] for k, a, b in gold)
                )
        if not row["spans"]:
            clean_flagged.append(bool(findings))
    per_kind = {
        k: {
            "n": len(found[k]),
            "recall": sum(found[k]) / len(found[k]) if found[k] else None,
            "precision": sum(correct[k]) / len(correct[k]) if correct[k] else None,
        }
        for k in found
    }
    return {
        "per_kind": per_kind,
        "clean_sentences": len(clean_flagged),
        "clean_flagged": sum(clean_flagged) / len(clean_flagged) if clean_flagged else None,
    } | _latency(scan.times)


_BOUNDARY = re.compile(r"[\s'\"=:,()\[\]{}@/<>-]")


_ASSIGNS = re.compile(r"[:=][ \t]*\S")


def _candidates(line: str) -> set[str]:
    """Substrings of ``line`` that start and end at a delimiter: where detect-secrets' values lie."""
    cuts = sorted(
        {0, len(line)}
        | {m.start() for m in _BOUNDARY.finditer(line)}
        | {m.end() for m in _BOUNDARY.finditer(line)}
    )
    return {line[a:b] for i, a in enumerate(cuts) for b in cuts[i + 1 :] if b - a <= 200}


def secrets_truth(root: Path) -> dict[str, Any]:
    """The lines of detect-secrets' test files that hold a secret its baseline lists.

    The baseline (2020, detect-secrets 0.14) names each secret by file, line and the SHA-1 of its
    value; the files have been edited since, so some listed lines have moved (each_secret.py by one
    line, config.yaml:14 is now blank). A listed entry is placed on the line that now holds a value
    with its hash (the nearest one to the listed line); an entry whose value no longer occurs stays on
    its line if that line still assigns a value, and is dropped if the line is blank or assigns
    nothing (``nested:``). Not negatives either: other lines holding a value the baseline lists (it
    lists a secret once per file, and the files share values), the body of a listed private-key
    block, and lines marked ``pragma: allowlist secret`` (secrets the file's author allowlisted for
    detect-secrets; a gateway must not honour the comment, since whoever writes the text writes the
    comment)."""
    baseline = json.loads((root / "baseline.file").read_text())["results"]
    files = sorted(
        set(baseline)
        | {"files/file_with_no_secrets.py", "files/tmp/file_with_no_secrets.py", "only_comments.yaml"}
    )
    positives: set[tuple[str, int]] = set()
    literal = {(path, r["line_number"]) for path, rs in baseline.items() for r in rs}
    dropped: list[tuple[str, int]] = []
    excluded: dict[tuple[str, int], str] = {}
    listed_anywhere = {r["hashed_secret"] for rs in baseline.values() for r in rs}
    for path in files:
        lines = (root / path).read_text(errors="replace").splitlines()
        hashed = [
            {hashlib.sha1(c.encode()).hexdigest() for c in _candidates(line)} if len(line) < 400 else set()
            for line in lines
        ]
        groups: dict[int, set[str]] = {}
        for r in baseline.get(path, []):
            groups.setdefault(r["line_number"], set()).add(r["hashed_secret"])
        for listed, hashes in groups.items():
            holding = [n for n, hs in enumerate(hashed, 1) if hs & hashes]
            if holding:
                line = min(holding, key=lambda n: abs(n - listed))
            elif listed <= len(lines) and _ASSIGNS.search(lines[listed - 1]):
                line = listed  # the value changed since, but the line still assigns one
            else:
                dropped.append((path, listed))
                continue
            positives.add((path, line))
            if "PRIVATE KEY" in lines[line - 1]:
                end = next(
                    (i for i in range(line, len(lines)) if "END" in lines[i] and "PRIVATE KEY" in lines[i]),
                    line,
                )
                for n in range(line + 1, end + 2):
                    excluded.setdefault((path, n), "inside a listed private-key block")
        for n, text in enumerate(lines, 1):
            if hashed[n - 1] & listed_anywhere:
                excluded.setdefault((path, n), "holds a listed secret")
            if "pragma: allowlist secret" in text:
                excluded[(path, n)] = "allowlisted"
    for key in positives:
        excluded.pop(key, None)
    return {
        "files": files,
        "positives": positives,
        "literal": literal,
        "dropped": dropped,
        "excluded": excluded,
    }


def secrets(data: Path) -> dict[str, Any]:
    scan = Timed(scanners_by_type(["secrets"], "input"))
    root = data / "detect-secrets" / "test_data"
    truth = secrets_truth(root)
    pos: list[bool] = []
    neg: list[bool] = []
    literal_pos: list[bool] = []
    literal_neg: list[bool] = []
    allowlisted: list[bool] = []
    for path in truth["files"]:
        text = (root / path).read_text(errors="replace")
        findings = scan({"text": text})["findings"]
        starts = [0]
        for line in text.splitlines(keepends=True):
            starts.append(starts[-1] + len(line))
        for n, line in enumerate(text.splitlines(keepends=True), 1):
            a, b = starts[n - 1], starts[n]
            flagged = any(f["start"] < b and a < f["end"] for f in findings)
            key = (path, n)
            if key in truth["literal"]:
                literal_pos.append(flagged)
            elif line.strip():
                literal_neg.append(flagged)
            if key in truth["positives"]:
                pos.append(flagged)
            elif truth["excluded"].get(key) == "allowlisted":
                allowlisted.append(flagged)
            elif key not in truth["excluded"] and line.strip():
                neg.append(flagged)
    literal = _rates(literal_pos, literal_neg)
    return (
        _rates(pos, neg)
        | {
            "n_files": len(truth["files"]),
            "dropped": [f"{p}:{n}" for p, n in truth["dropped"]],
            "n_excluded": sum(1 for v in truth["excluded"].values() if v != "allowlisted"),
            "allowlisted_flagged": f"{sum(allowlisted)}/{len(allowlisted)}",
            "literal": literal,
        }
        | _latency(scan.times)
    )


def latency_2k(data: Path, n: int = 60) -> dict[str, Any]:
    """Every scanner type alone on 2,000-character prompts: what it adds to a request."""
    from train_injection import _jsonl

    emails = [r["context"] for r in _jsonl(data / "bipia" / "email" / "test.jsonl")]
    texts = []
    for i in range(n):
        text = ""
        j = i
        while len(text) < 2000:
            text += emails[j % len(emails)] + "\n"
            j += 7
        texts.append(text[:2000])
    out: dict[str, Any] = {}
    for name, stype in sorted(scanner_types().items()):
        stage: Stage = "input" if "input" in stype.stages else "output"
        try:
            scanners = scanners_by_type([name], stage)
        except Exception as exc:  # a type that needs options has no default to measure
            out[name] = {"skipped": str(exc)}
            continue
        scan = Timed(scanners, stage)
        for text in texts[:5]:
            scan({"text": text, "system_prompt": "You are a helpful assistant for ACME."}, "user")
        scan.times = []
        for text in texts:
            scan({"text": text, "system_prompt": "You are a helpful assistant for ACME."}, "user")
        out[name] = {"stage": stage} | _latency(scan.times)
    return out


def _f(v: Any, digits: int = 1) -> str:
    if v is None:
        return "–"
    return f"{100 * v:.{digits}f}%"


def markdown(r: dict[str, Any], command: str) -> str:
    d, i = r["injection"]["direct"], r["injection"]["indirect"]
    lines = [
        "## Guard detectors",
        "",
        f"Reproduce: `{command}` ({r['machine']}; {r['seconds']:.0f} s). Every text goes through the code of "
        "`shipyard guard scan --scanners <type>` (default options); nothing here was trained on the "
        "evaluation data (see `src/shipyard/guard/models/injection.json` for what the injection model saw).",
        "",
        "| scanner | attacks (positives) | benign (negatives) | TPR | FPR | precision | p50 / p95 per text |",
        "|---|---|---|---|---|---|---|",
        f"| injection, direct | CyberSecEval held-out half, {d['n_attacks']} | XSTest safe prompts, "
        f"{d['n_benign']} | {_f(d['tpr'])} | {_f(d['fpr'])} | {_f(d['precision'])} "
        f"| {d['p50_ms']:.1f} / {d['p95_ms']:.1f} ms |",
        f"| injection, indirect (role `tool`) | BIPIA test attacks in test contexts, {i['n_attacks']} of "
        f"{i['n_combinations']:,} | BIPIA clean test contexts, {i['n_benign']} | {_f(i['tpr'])} "
        f"| {_f(i['fpr'])} | {_f(i['precision'])} | {i['p50_ms']:.1f} / {i['p95_ms']:.1f} ms |",
    ]
    s = r["secrets"]
    lit = s["literal"]
    lines.append(
        f"| secrets | lines holding a detect-secrets baseline secret, {s['n_attacks']} | other lines of its "
        f"test files, {s['n_benign']} | {_f(s['tpr'])} | {_f(s['fpr'])} | {_f(s['precision'])} "
        f"| {s['p50_ms']:.1f} / {s['p95_ms']:.1f} ms per file |"
    )
    p = r["pii"]
    lines += [
        "",
        "Secrets ground truth: detect-secrets' 2020 baseline lists each secret by file, line and the SHA-1 "
        "of its value, and its test files have changed since; each listed secret is placed on the line that "
        f"now holds a value with its hash (dropped when none does and the listed line assigns nothing: "
        f"{', '.join(s['dropped']) or 'none'}); other lines holding a listed value, the body of a listed "
        f"private-key block ({s['n_excluded']} lines in all) and lines marked `pragma: allowlist secret` are "
        f"not negatives (the scanner flags {s['allowlisted_flagged']} of those: it ignores the pragma on "
        f"purpose). Scored against the baseline's line numbers as written ({lit['n_attacks']} lines, "
        f"{lit['n_benign']} other non-empty lines): TPR {_f(lit['tpr'])}, FPR {_f(lit['fpr'])}.",
        "",
        f"PII on presidio-research synth_dataset_v2 (1,500 sentences; p50 {p['p50_ms']:.2f} ms, p95 "
        f"{p['p95_ms']:.2f} ms per sentence; {_f(p['clean_flagged'])} of the {p['clean_sentences']} PII-free "
        "sentences get a finding):",
        "",
        "| type | gold spans | recall | precision |",
        "|---|---|---|---|",
    ]
    for kind, v in p["per_kind"].items():
        lines.append(f"| {kind} | {v['n']} | {_f(v['recall'])} | {_f(v['precision'])} |")
    lines += [
        "",
        "Injection recall by CyberSecEval variant: "
        + ", ".join(f"{k} {_f(v, 0)}" for k, v in d["tpr_by_variant"].items())
        + ". BIPIA recall by context: "
        + ", ".join(f"{k} {_f(v, 0)}" for k, v in i["tpr_by_task"].items())
        + "; false positives by context: "
        + ", ".join(f"{k} {_f(v, 0)}" for k, v in i["fpr_by_task"].items())
        + ". XSTest's unsafe prompts (harmful requests, not injections) are flagged "
        + f"{_f(d['xstest_unsafe_flag_rate'])}.",
        "",
        "Each scanner alone on a 2,000-character prompt (60 prompts cut from BIPIA e-mails):",
        "",
        "| scanner | stage | p50 | p95 |",
        "|---|---|---|---|",
    ]
    for name, v in r["latency_2k"].items():
        if "skipped" in v:
            lines.append(f"| {name} | – | needs options | |")
        else:
            lines.append(f"| {name} | {v['stage']} | {v['p50_ms']:.2f} ms | {v['p95_ms']:.2f} ms |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--bipia-sample", type=int, default=3000, help="attacked contexts to sample")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    data = Path(args.data)
    t0 = time.perf_counter()
    steps: list[tuple[str, Callable[[], Any]]] = [
        ("injection", lambda: injection(data, args.bipia_sample, args.seed)),
        ("pii", lambda: pii(data)),
        ("secrets", lambda: secrets(data)),
        ("latency_2k", lambda: latency_2k(data)),
    ]
    results: dict[str, Any] = {}
    for name, step in steps:
        print(f"running {name}…", file=sys.stderr)
        results[name] = step()
    results["seconds"] = time.perf_counter() - t0
    results["machine"] = f"{platform.machine()}, Python {platform.python_version()}"
    command = "python benchmarks/guard_detectors.py --data ../shared/data"
    if args.bipia_sample != 3000:
        command += f" --bipia-sample {args.bipia_sample}"
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(markdown(results, command))


if __name__ == "__main__":
    main()
