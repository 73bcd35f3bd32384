"""The diff engine behind the version pages: two texts as side-by-side and unified rows, unchanged
runs collapsed, changed lines highlighted down to the characters. Rows hold escaped HTML, ready for
``templates/registry/_macros.html``.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field

import markupsafe

DIFF_CONTEXT = 3


@dataclass
class DiffRow:
    """One row of a side-by-side diff (``left``/``right`` are escaped HTML), or a collapsed run of
    unchanged lines (kind ``skip``, ``skipped`` lines)."""

    kind: str  # equal | replace | delete | insert | skip
    left_no: int | None = None
    left: markupsafe.Markup = field(default_factory=markupsafe.Markup)
    right_no: int | None = None
    right: markupsafe.Markup = field(default_factory=markupsafe.Markup)
    skipped: int = 0


@dataclass
class UnifiedRow:
    kind: str  # context | del | ins | skip
    old_no: int | None
    new_no: int | None
    text: markupsafe.Markup
    skipped: int = 0


@dataclass
class Diff:
    left_label: str
    right_label: str
    rows: list[DiffRow]
    unified: list[UnifiedRow]
    added: int
    removed: int

    @property
    def identical(self) -> bool:
        return not self.added and not self.removed


def _intraline(old: str, new: str) -> tuple[markupsafe.Markup, markupsafe.Markup]:
    """Both lines escaped, with the characters that changed wrapped in <del> / <ins>. Lines that
    share little are marked whole: character soup helps nobody read them."""
    sm = difflib.SequenceMatcher(None, old, new, autojunk=False)
    if sm.ratio() < 0.35:
        return (
            markupsafe.Markup("<del>{}</del>").format(old) if old else markupsafe.Markup(""),
            markupsafe.Markup("<ins>{}</ins>").format(new) if new else markupsafe.Markup(""),
        )
    left: list[markupsafe.Markup] = []
    right: list[markupsafe.Markup] = []
    for tag, i1, i2, j1, j2 in sm.get_opcodes():
        a, b = old[i1:i2], new[j1:j2]
        if tag == "equal":
            left.append(markupsafe.escape(a))
            right.append(markupsafe.escape(b))
            continue
        if a:
            left.append(markupsafe.Markup("<del>{}</del>").format(a))
        if b:
            right.append(markupsafe.Markup("<ins>{}</ins>").format(b))
    return markupsafe.Markup("").join(left), markupsafe.Markup("").join(right)


def diff_texts(left: str, right: str, left_label: str, right_label: str, context: int = DIFF_CONTEXT) -> Diff:
    """Side-by-side and unified views of a line diff, unchanged runs longer than ``2 * context``
    collapsed, changed lines highlighted down to the characters."""
    a, b = left.splitlines(), right.splitlines()
    ops = difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes()
    rows: list[DiffRow] = []
    unified: list[UnifiedRow] = []
    added = removed = 0
    esc = markupsafe.escape

    def equal(i: int, j: int) -> None:
        rows.append(DiffRow("equal", i + 1, esc(a[i]), j + 1, esc(b[j])))
        unified.append(UnifiedRow("context", i + 1, j + 1, esc(a[i])))

    for n, (tag, i1, i2, j1, j2) in enumerate(ops):
        if tag == "equal":
            head = 0 if n == 0 else context
            tail = 0 if n == len(ops) - 1 else context
            length = i2 - i1
            if length > head + tail + 1:
                for k in range(head):
                    equal(i1 + k, j1 + k)
                hidden = length - head - tail
                rows.append(DiffRow("skip", skipped=hidden))
                unified.append(UnifiedRow("skip", None, None, markupsafe.Markup(""), hidden))
                for k in range(length - tail, length):
                    equal(i1 + k, j1 + k)
            else:
                for k in range(length):
                    equal(i1 + k, j1 + k)
            continue
        old, new = a[i1:i2], b[j1:j2]
        removed += len(old)
        added += len(new)
        pairs = max(len(old), len(new))
        dels: list[UnifiedRow] = []
        inss: list[UnifiedRow] = []
        for k in range(pairs):
            lo = old[k] if k < len(old) else None
            ro = new[k] if k < len(new) else None
            if lo is not None and ro is not None:
                lh, rh = _intraline(lo, ro)
                rows.append(DiffRow("replace", i1 + k + 1, lh, j1 + k + 1, rh))
                dels.append(UnifiedRow("del", i1 + k + 1, None, lh))
                inss.append(UnifiedRow("ins", None, j1 + k + 1, rh))
            elif lo is not None:
                rows.append(DiffRow("delete", i1 + k + 1, esc(lo)))
                dels.append(UnifiedRow("del", i1 + k + 1, None, esc(lo)))
            elif ro is not None:
                rows.append(DiffRow("insert", right_no=j1 + k + 1, right=esc(ro)))
                inss.append(UnifiedRow("ins", None, j1 + k + 1, esc(ro)))
        unified.extend(dels)
        unified.extend(inss)
    return Diff(left_label, right_label, rows, unified, added, removed)
