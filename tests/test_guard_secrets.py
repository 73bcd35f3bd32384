"""The `secrets` scanner against detect-secrets' rules: secret-named assignments, passwords in
URLs, quoted and config-line high-entropy strings with its limits and filters, more known formats;
and its quality on detect-secrets' own test files (the full numbers are in docs/benchmarks.md)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from shipyard.guard.base import ScanContext
from shipyard.plugins import scanner_types

ROOT = Path(__file__).resolve().parents[1]
DATA = Path("/work/shared/data")
IN = ScanContext("input")


def scan(text: str, **options: Any) -> list[tuple[str, str]]:
    stype = scanner_types()["secrets"]
    found = stype.factory("secrets", stype.options.model_validate(options)).scan(text, IN)
    return [(f.kind, text[f.start : f.end]) for f in found]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("aws_secret_key = 23456789a1", ("password_assignment", "23456789a1")),
        (
            '"hashed_secret": "a2480a72004fc40d124495fd59f5b482034fbadd",',
            ("password_assignment", "a2480a72004fc40d124495fd59f5b482034fbadd"),
        ),
        ("secret = 'notHighEnoughEntropy'", ("password_assignment", "notHighEnoughEntropy")),
        ("SUPER_SECRET_VALUES = 'f00dcafe12345'", ("password_assignment", "f00dcafe12345")),
        ('const dbPassword = "Tr0ub4dor&3";', ("password_assignment", "Tr0ub4dor&3")),
        ("DB_PASS: hunter22", ("password_assignment", "hunter22")),
        (
            "basic_auth = 'http://username:whywouldyouusehttpforpasswords@example.com'",
            ("basic_auth", "whywouldyouusehttpforpasswords"),
        ),
        ('    "2b00042f7481c7b056c4b410d28f33cf"', ("high_entropy_hex", "2b00042f7481c7b056c4b410d28f33cf")),
        (
            "deploy:\n  secure: thequickbrownfoxjumpsoverthelazydog\n",
            ("high_entropy", "thequickbrownfoxjumpsoverthelazydog"),
        ),
        ("other_value_here: 1234567890a", ("high_entropy_hex", "1234567890a")),
        ("SG." + "a" * 4 + "B1c2D3e4F5g6H7i8J9k0L1" + "." + "m2N3" * 10 + "xyz", None),
        ("npm_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8", ("npm_token", None)),
        ("glpat-" + "a1B2c3D4e5F6g7H8i9J0", ("gitlab_token", None)),
    ],
)
def test_found_like_detect_secrets(text: str, expected: tuple[str, str | None] | None) -> None:
    found = scan(text)
    if expected is None:  # a SendGrid-shaped key: found, whatever the kind
        assert found, text
        return
    kind, value = expected
    assert [k for k, _ in found] == [kind], found
    if value is not None:
        assert found[0][1] == value


@pytest.mark.parametrize(
    "text",
    [
        "max_tokens = 4096",
        "password_min_length = 12",
        "passenger_count: 12345678",
        'token = os.environ["TOKEN"]',
        "api_key = settings.API_KEY",
        "password: ${DB_PASSWORD}",
        "Password: required",
        "id = 'YW1pYWx3YXlzZ2VuZXJhdGluZ3BheWxvYWRzd2hlbmltaHVuZ3J5b3JhbWlhbHdheXNodW5ncnk'",
        "foreign_key_id = vh987tyw9ehy8ghis7vwyhiwbwitefy7w3ASDGYDGUASDG",
        "uuid: '203db13e-70c7-462b-9a3d-bf32640cb0be'",
        "skipped_sequential_false_positive = '0123456789a'",
        "red_herring = 'DEADBEEF'",
        "value: AKIATESTTESTTESTTEST",
        "SUPER_SECRET_VALUE = 'this is just a long string, like a user facing error message'",
        "keyB = 456789123a\n    567891234b\n",
        "The commit 3f786850e387550fdab836ed7e6dc881de23001b fixed internationalization.",
        "postgres://user:password@localhost/db",
    ],
)
def test_left_alone_like_detect_secrets(text: str) -> None:
    assert scan(text) == []


def test_hex_threshold_turns_hex_reports_off() -> None:
    assert scan('x = "2b00042f7481c7b056c4b410d28f33cf"', hex_threshold=4.1) == []


def test_allowlist_pragmas_are_not_honoured() -> None:
    text = "password = 12345678901234  # pragma: allowlist secret"
    assert scan(text) == [("password_assignment", "12345678901234")]


@pytest.mark.skipif(not (DATA / "detect-secrets").is_dir(), reason="public data sets not present")
def test_detect_secrets_baseline_recall_and_false_positives() -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from guard_detectors import secrets
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    result = secrets(DATA)
    assert result["tpr"] >= 0.9 and result["fpr"] <= 0.02, result
