"""A small, offline PII scrub: e-mail addresses, phone numbers, credit-card numbers and IBANs.

Everything here is regular expressions plus checksums, so it runs anywhere with no model and no
network. It is deliberately conservative with digits: a scrub that eats years, prices, dates, order
numbers and postcodes makes datasets useless, so

- credit-card numbers must pass the Luhn check and IBANs the ISO 13616 mod-97 check;
- a phone number needs the shape of one (separated digit groups, a `+` country code, brackets
  around an area code), or, as a bare run of 10–11 digits, a phone word such as "call" or "tel"
  right before it; dates, IP addresses and runs of years are left alone.

Each finding becomes a typed marker (``<EMAIL>``, ``<PHONE>``, ``<CREDIT_CARD>``, ``<IBAN>``)
so that a scrubbed example still reads naturally and an eval can tell what was there.

Text is read through the guard's shared normaliser (:func:`shipyard.guard.normalize.normalized`):
a value written with zero-width characters, non-breaking spaces or full-width digits inside is
found, and its span covers the whole obfuscated value in the original text. Card numbers and IBANs
may also be split by tabs, doubled spaces or a line break, and an e-mail address may have spaces
around its ``@`` (then its domain must end in a common or two-letter top-level domain, so "thanks
@ john.smith" stays a sentence).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from shipyard.guard.base import splice
from shipyard.guard.normalize import normalized

EMAIL = "EMAIL"
PHONE = "PHONE"
CREDIT_CARD = "CREDIT_CARD"
IBAN = "IBAN"
US_SSN = "US_SSN"
IP_ADDRESS = "IP_ADDRESS"
PERSON = "PERSON"
KINDS: tuple[str, ...] = (EMAIL, IBAN, CREDIT_CARD, PHONE)
# Kinds the guard pipeline may also ask for. They are not in the datasets' default scrub: IP
# addresses are often the very data a dataset is about (logs, configs), and names are found only
# next to cues such as "Mr." or "my name is", so their recall is modest.
EXTRA_KINDS: tuple[str, ...] = (US_SSN, IP_ADDRESS, PERSON)
ALL_KINDS: tuple[str, ...] = (*KINDS, *EXTRA_KINDS)


@dataclass(frozen=True)
class Finding:
    """One piece of PII: its kind and where it is (``text[start:end]``)."""

    kind: str
    start: int
    end: int
    text: str


# -- e-mail -----------------------------------------------------------------------------------------
_EMAIL_RE = re.compile(
    r"(?<![\w.%+-])"
    r"[A-Za-z0-9](?:[A-Za-z0-9._%+-]{0,62}[A-Za-z0-9_%+-])?"
    # Spaces, tabs or one line break around the "@": how a value is smuggled past a plain regex.
    r"(?P<at>[ \t]{0,3}(?:\r?\n[ \t]{0,3})?@[ \t]{0,3}(?:\r?\n[ \t]{0,3})?)"
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+(?P<tld>[A-Za-z]{2,24})"
    r"(?![\w-])"
)
_TLD_TEXT = (
    "com net org edu gov mil int info biz name pro mobi app dev io ai co me tv cloud online site tech "
    "xyz email mail live shop store blog page"
)
_COMMON_TLDS = frozenset(_TLD_TEXT.split())


def _email_ok(_text: str, m: re.Match[str]) -> bool:
    if m.group("at") == "@":
        return True
    tld = m.group("tld").lower()
    return len(tld) == 2 or tld in _COMMON_TLDS


# -- IBAN -------------------------------------------------------------------------------------------
# Country code, two check digits, then 11–30 letters/digits, optionally printed in groups of four.
_IBAN_RE = re.compile(
    r"(?<![A-Za-z0-9])[A-Za-z]{2}[0-9]{2}(?:[ \t]{0,3}[A-Za-z0-9]{4}){2,7}(?:[ \t]{0,3}[A-Za-z0-9]{1,4})?"
    r"(?![A-Za-z0-9])",
)
_LAST_GROUP = re.compile(r"[ \t]+[A-Za-z0-9]+$")


def _find_ibans(text: str) -> Iterator[tuple[int, int]]:
    for m in _IBAN_RE.finditer(text):
        candidate = m.group(0)
        # The last space-separated group may be the next word ("… 7006 to other bank"): drop
        # trailing groups until the checksum holds.
        while True:
            if iban_ok(candidate):
                yield m.start(), m.start() + len(candidate)
                break
            last = _LAST_GROUP.search(candidate)
            if last is None:
                break
            candidate = candidate[: last.start()]


def iban_ok(candidate: str) -> bool:
    """ISO 13616: move the first four characters to the end, letters to numbers, mod 97 == 1."""
    s = re.sub(r"\s", "", candidate).upper()
    if not 15 <= len(s) <= 34 or not s[:2].isalpha() or not s[2:4].isdigit():
        return False
    digits = "".join(str(int(ch, 36)) for ch in s[4:] + s[:4])
    return int(digits) % 97 == 1


# -- credit cards -----------------------------------------------------------------------------------
# 12–19 digits, optionally in groups (4-4-4-4, 4-6-5, …) separated by a hyphen, up to three spaces
# or tabs, or one line break.
_CARD_SEP = r"(?:[ \t]{1,3}|[ \t]*\r?\n[ \t]*|[ \t]*-[ \t]*)"
_CARD_RE = re.compile(r"(?<![\w+.,-])\d(?:" + _CARD_SEP + r"?\d){11,18}(?![\w.,]?\d)(?!-\d)")
_CARD_GROUPS = re.compile(r"[ \t]*-[ \t]*|\s+")


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _card_ok(candidate: str) -> bool:
    digits = re.sub(r"\D", "", candidate)
    if not 12 <= len(digits) <= 19 or len(set(digits)) == 1:
        return False
    groups = _CARD_GROUPS.split(candidate)
    # Printed cards group their digits in blocks of 4 (Amex 4-6-5, Diners 4-6-4), or of 8 or 12
    # where some separators were invisible characters; a run split any other way (3-3-4…) is a
    # phone number or a reference, not a card.
    if len(groups) > 1 and not (
        all(len(g) % 4 == 0 for g in groups[:-1]) or [len(g) for g in groups[:2]] == [4, 6]
    ):
        return False
    if len(groups) > 1 and all(_YEAR_RE.match(g) for g in groups):
        return False  # a column of years
    return luhn_ok(digits)


# -- phone numbers ----------------------------------------------------------------------------------
# Digit groups joined by one separator (space, hyphen, dot), optionally led by a `+` country code,
# a bracketed area code or the "(0)" trunk marker, and optionally followed by an extension (x123,
# ext. 123). Newlines never join groups: in addresses and forms a postcode is often on the line
# just above a phone number. Which shapes count is decided in `_phone_ok`.
_SEP = r"(?:[ \t]?[-.][ \t]?|[ \t])"
_PHONE_RE = re.compile(
    r"(?<![\w+/.:-])(?<!\d,)"
    r"(?P<number>"
    r"(?:\+[ \t]?\d{1,3}(?:[ \t]?\(0\))?" + _SEP + r"?)?"  # +44, +41 (0)
    r"(?:\(\d{1,5}\)[ \t]?)?"  # (415), (0)20, (08)
    r"\d{1,12}(?:" + _SEP + r"\(?\d{1,12}\)?)*"
    r")"
    r"(?P<ext>[ \t]*(?:x|ext\.?|extension)[ \t]*\d{1,6})?"
    r"(?![\w.,:]?\d)(?![A-Za-z])",
    re.IGNORECASE,
)
# Words that announce a phone number ("call me on", "Phone:", "my number is") or label one
# ("… office", "… fax"). Shapes that are as often something else — two digit groups, a bare run —
# count only next to one of these.
_PHONE_BEFORE = re.compile(
    r"(?:\b(?:phone|tel|telephone|mobile|mob|cell|cellphone|fax|call|calls|called|text|sms|whatsapp|"
    r"contact|number|reach|dial|ring|landline|hotline)\b[^\w\n]{0,3}"
    r"(?:(?:me|us|him|her|them|at|on|is|to|via|number|no|nr|was|directly)\b[^\w\n]{0,3}){0,3}"
    # Labels in a form or a signature ("Desk: …"); without the colon "office is at …" is an address.
    r"|\b(?:desk|office|home|work|direct)\s*:\s*)$",
    re.IGNORECASE,
)
_PHONE_AFTER = re.compile(
    r"^[^\w\n]{0,3}(?:office|fax|mobile|cell|home|work|desk|landline|phone|tel)\b", re.IGNORECASE
)
_DATE_RE = re.compile(
    r"^(?:(?:19|20)\d\d[-./](?:0?[1-9]|1[0-2])[-./](?:0?[1-9]|[12]\d|3[01])"
    r"|(?:0?[1-9]|[12]\d|3[01])[-./](?:0?[1-9]|1[0-2])[-./](?:19|20)\d\d"
    r"|(?:0?[1-9]|1[0-2])[-./](?:0?[1-9]|[12]\d|3[01])[-./](?:19|20)\d\d)$"
)
_IPV4_RE = re.compile(r"^\d{1,3}(?:\.\d{1,3}){3}$")
_SSN_RE = re.compile(r"^\d{3}-\d{2}-\d{4}$")
_US_TRUNK_RE = re.compile(r"^1[-. ]\d{3}[-. ]\d{3}[-. ]\d{4}$")
_YEAR_RE = re.compile(r"^(?:1[89]|20)\d\d$")
_CURRENCY_BEFORE = re.compile(r"(?:[$€£¥₹]|\b(?:USD|EUR|GBP|CHF|JPY))\s*$", re.IGNORECASE)
_CURRENCY_AFTER = re.compile(
    r"^\s*(?:[$€£¥₹%]|(?:USD|EUR|GBP|CHF|JPY|dollars|euros|pounds)\b)", re.IGNORECASE
)


def _phone_ok(text: str, m: re.Match[str]) -> bool:
    number = m.group("number")
    digits = re.sub(r"\D", "", number)
    n = len(digits)
    if not 7 <= n <= 15:
        return False
    before = text[max(0, m.start() - 40) : m.start()]
    after = text[m.end() : m.end() + 16]
    if _CURRENCY_BEFORE.search(before) or _CURRENCY_AFTER.match(after):
        return False
    if _DATE_RE.match(number) or _IPV4_RE.match(number) or _SSN_RE.match(number):
        return False
    groups = re.findall(r"\d+", number)
    if len(groups) > 1 and all(_YEAR_RE.match(g) for g in groups):
        return False  # "1999 2004": years
    context = bool(_PHONE_BEFORE.search(before) or _PHONE_AFTER.match(after)) or m.group("ext") is not None
    if number.startswith("+") or (number.startswith("00") and n >= 10):
        return n >= 8
    if "(" in number:
        return True
    if len(groups) == 1:
        # A bare run is as likely an order number, an account or a timestamp.
        return 10 <= n <= 11 and context
    if len(groups[0]) == 1:
        # "1 200 000" is an amount; "1-800-555-0199" a US number with its trunk prefix.
        return bool(_US_TRUNK_RE.match(number))
    if max(len(g) for g in groups) > 8 or min(len(g) for g in groups[1:]) == 1:
        return False  # "978-3-16-148410-0": an ISBN, a part number
    if len(groups) == 2:
        if groups[0].startswith("0") and n >= 10:
            return True  # trunk prefix + subscriber number: "0341 8387176", "0961-7596216"
        if re.match(r"^\d{3}-\d{4}$", number):
            return True  # US local number
        # "370 3911 Fourth Avenue", "17151 2450": house numbers and postcodes look the same.
        return context
    if all(len(g) <= 2 for g in groups) and n < 10 and " " in number and not re.search(r"[-.]", number):
        return context  # "sizes 10 12 14 16"
    return True


# -- US social security numbers --------------------------------------------------------------------
# Printed as 3-2-4 digits with hyphens or spaces; a bare run of nine digits counts only right after
# "SSN" or "social security". The SSA never issues area 000, 666 or 900–999, group 00 or serial
# 0000, and it voided the numbers printed on sample cards (078-05-1120, 219-09-9999).
_SSN_FULL_RE = re.compile(r"(?<![\w-])(\d{3})([- ])(\d{2})\2(\d{4})(?![\w-]|\.\d)")
_SSN_BARE_RE = re.compile(
    r"\b(?:ssn|social\s+security(?:\s+(?:number|no\.?|#))?)\b[^\w\n]{0,4}(?:is\s+)?(\d{9})\b",
    re.IGNORECASE,
)
_SSN_VOID = {"078051120", "219099999", "123456789"}


def ssn_ok(digits: str) -> bool:
    area, group, serial = digits[:3], digits[3:5], digits[5:]
    return (
        len(digits) == 9
        and area not in ("000", "666")
        and not area.startswith("9")
        and group != "00"
        and serial != "0000"
        and digits not in _SSN_VOID
    )


def _find_ssns(text: str) -> Iterator[tuple[int, int]]:
    for m in _SSN_FULL_RE.finditer(text):
        if ssn_ok(m.group(1) + m.group(3) + m.group(4)):
            yield m.start(), m.end()
    low = text.lower()
    if "ssn" not in low and "social" not in low:
        return
    for m in _SSN_BARE_RE.finditer(text):
        if ssn_ok(m.group(1)):
            yield m.start(1), m.end(1)


# -- IP addresses -----------------------------------------------------------------------------------
# IPv4 with every octet ≤ 255 and no leading zeros, not part of a longer dotted run (a version
# number like 1.2.3.4.5 or an OID); IPv6 candidates are checked by the standard library.
_IPV4_FIND_RE = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w]|\.\d)")
_IPV6_FIND_RE = re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])")


def _find_ips(text: str) -> Iterator[tuple[int, int]]:
    import ipaddress

    for m in _IPV4_FIND_RE.finditer(text):
        if all(len(o) == 1 or o[0] != "0" for o in m.group(0).split(".")):
            try:
                ipaddress.IPv4Address(m.group(0))
            except ValueError:
                continue
            yield m.start(), m.end()
    for m in _IPV6_FIND_RE.finditer(text):
        candidate = m.group(0)
        if candidate.count(":") < 2 or not re.search(r"[0-9A-Fa-f]", candidate):
            continue  # "::" alone, or a time like 12:30:45 (checked below)
        if re.fullmatch(r"\d{1,2}:\d{2}(?::\d{2})?", candidate):
            continue
        try:
            ipaddress.IPv6Address(candidate)
        except ValueError:
            continue
        yield m.start(), m.end()


# -- person names -----------------------------------------------------------------------------------
# Without a model, a name is recognisable only by its cue: a title ("Dr. Jane Smith"), an
# introduction ("my name is Jane Smith", "I'm Jane"), or a form label ("Name: Jane Smith"). A
# name mentioned with no cue ("ask Jane about it") is missed: recall is modest by design, and
# precision is what keeps the redaction from mangling ordinary capitalised words.
_NAME = r"[A-Z][a-z]+(?:[-'][A-Z]?[a-z]+)?"
_NAME_SEQ = rf"{_NAME}(?:\s+(?:[A-Z]\.\s*)?{_NAME}){{0,3}}"
_PERSON_RES = (
    re.compile(rf"\b(?:Mr|Mrs|Ms|Mx|Dr|Prof|Sir|Madam|Miss)\.?\s+(?P<name>{_NAME_SEQ})"),
    re.compile(
        rf"\b(?i:my\s+name\s+is|i\s+am\s+called|this\s+is|signed|regards,|sincerely,|thanks,)\s+"
        rf"(?P<name>{_NAME_SEQ})"
    ),
    re.compile(rf"\b(?i:i'?m|i\s+am)\s+(?P<name>{_NAME}\s+{_NAME}(?:\s+{_NAME})?)"),
    re.compile(rf"\b(?i:full\s+name|name|patient|customer|employee|contact)\s*:[ \t]*(?P<name>{_NAME_SEQ})"),
)
# Capitalised words that follow the cues above without being names ("I am Happy", "this is Monday").
_NOT_NAMES_LINES = (
    "I A The This That Here There Not Also Just Very Really Good Fine Okay Ok New It We You They",
    "Monday Tuesday Wednesday Thursday Friday Saturday Sunday January February March April May June",
    "July August September October November December Happy Sorry Glad Sure Your Our Their His Her",
    "Thanks Thank Hello Hi Dear Team Support Customer Service Admin Manager User",
)
_NOT_NAMES = frozenset(w for line in _NOT_NAMES_LINES for w in line.split())


def _find_persons(text: str) -> Iterator[tuple[int, int]]:
    for rx in _PERSON_RES:
        for m in rx.finditer(text):
            words = m.group("name").split()
            # Keep the leading run of words that are not common capitalised non-names.
            keep = 0
            for w in words:
                if w in _NOT_NAMES:
                    break
                keep += 1
            if keep == 0:
                continue
            start = m.start("name")
            end = start + len(" ".join(words[:keep])) if keep < len(words) else m.end("name")
            if keep < len(words):
                # Recompute the end on the original spacing.
                end = start
                for w in words[:keep]:
                    end = text.index(w, end) + len(w)
            yield start, end


# -- detection and replacement ----------------------------------------------------------------------
def _regex_finder(pattern: re.Pattern[str], check: Callable[[str, re.Match[str]], bool]) -> _Finder:
    def find(text: str) -> Iterator[tuple[int, int]]:
        for m in pattern.finditer(text):
            if check(text, m):
                yield m.start(), m.end()

    return find


_Finder = Callable[[str], Iterable[tuple[int, int]]]
_DETECTORS: tuple[tuple[str, _Finder], ...] = (
    (EMAIL, _regex_finder(_EMAIL_RE, _email_ok)),
    (IBAN, _find_ibans),
    (CREDIT_CARD, _regex_finder(_CARD_RE, lambda _text, m: _card_ok(m.group(0)))),
    (US_SSN, _find_ssns),
    (PHONE, _regex_finder(_PHONE_RE, _phone_ok)),
    (IP_ADDRESS, _find_ips),
    (PERSON, _find_persons),
)


def find_pii(text: str, kinds: Iterable[str] = KINDS) -> list[Finding]:
    """Every finding in ``text``, in order, without overlaps.

    Detectors run in a fixed priority (e-mail, IBAN, card, SSN, phone, IP, person) and a later one
    never claims characters an earlier one took: a card number is not also reported as a phone
    number. ``kinds`` defaults to the datasets' scrub set; ``ALL_KINDS`` adds SSN, IP and names.
    Spans are in ``text`` itself, even when the value was found in its normalised reading.
    """
    wanted = set(kinds)
    unknown = wanted - set(ALL_KINDS)
    if unknown:
        raise ValueError(f"unknown PII kind(s) {sorted(unknown)}; known: {', '.join(ALL_KINDS)}")
    norm = normalized(text)
    read = norm.text
    spans: list[tuple[str, int, int]] = []
    for kind, finder in _DETECTORS:
        if kind not in wanted:
            continue
        for start, end in finder(read):
            if not any(start < b and a < end for _, a, b in spans):
                spans.append((kind, start, end))
    taken = []
    for kind, start, end in spans:
        a, b = norm.origin(start, end)
        taken.append(Finding(kind, a, b, text[a:b]))
    return sorted(taken, key=lambda f: f.start)


def scrub_text(text: str, kinds: Iterable[str] = KINDS) -> str:
    """``text`` with each finding replaced by its marker, e.g. ``<EMAIL>``."""
    findings = find_pii(text, kinds)
    if not findings:
        return text
    return splice(text, findings, lambda f: f"<{f.kind}>")


def scrub(value: Any, kinds: Iterable[str] = KINDS) -> Any:
    """Scrub every string inside a JSON value (dicts, lists, strings); other values are kept.

    Dict keys are left alone: in chat messages and template variables they are field names
    (``role``, ``content``, ``customer_email``), not data.
    """
    kinds = tuple(kinds)
    if isinstance(value, str):
        return scrub_text(value, kinds)
    if isinstance(value, dict):
        return {k: scrub(v, kinds) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [scrub(v, kinds) for v in value]
    return value
