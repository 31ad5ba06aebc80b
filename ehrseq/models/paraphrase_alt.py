"""A label-preserving paraphraser for alt-grammar ("grammar B") temporal artery biopsy reports.

:func:`paraphrase_alt_report` reads a report into sentence units (:func:`find_statements_alt` gives the
recognised ones), replaces each recognised statement by another wording of the same concept and polarity
(:mod:`.report_lexicon_alt`), re-words the headings and, with probability ``strength``, re-lays the report out
(narrative, synoptic or terse, sections in another order; a revising addendum always stays last), then adds
light noise (abbreviations, US spelling, a typo in a word that is neither a cue nor a finding, upper case).

A sentence is recognised only as a whole, so a negation whose scope spans a list ("neither A nor B", "no A,
B or C", "A and B are absent") is read and re-written as one unit; a sentence that is not recognised is kept
verbatim. Before matching, the text is normalised (abbreviations expanded, US spelling to UK, one-letter typos
fixed against the lexicon's vocabulary) with a map back to the original characters.

Polarities (:data:`POLARITIES`): ``affirmed``, ``absent``, ``hedged`` (cannot be excluded, equivocal),
``request`` (a clinical question such as "?GCA") and ``history`` (a past diagnosis); neither of the last two
says anything about a label. Statements before a revising addendum are ``superseded``: the addendum's win.
"""

from __future__ import annotations

import logging
import random
import re
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from ehrseq.errors import DataValidationError
from ehrseq.models import report_lexicon_alt as lx
from ehrseq.models.paraphrase import Substitution  # one assertion record for both paraphrasers
from ehrseq.models.report_lexicon_alt import ABS, AFF, HEDGED, POLARITIES, Family

__all__ = ["LABELLING", "POLARITIES", "Substitution", "assertions_alt", "augmented_alt", "find_statements_alt",
           "paraphrase_alt_report"]
log = logging.getLogger(__name__)
LABELLING = (AFF, ABS, HEDGED)  # polarities that set a label (not a request or history)


@dataclass
class _Unit:
    start: int  # span of the content in the original text (no heading, no final full stop)
    end: int
    section: str
    text: str
    slot: str = ""
    family: Family | None = None
    template: str = ""
    values: dict[str, str] = field(default_factory=dict)
    concepts: tuple[str, ...] = ()
    assertions: tuple[tuple[str, str], ...] = ()
    superseded: bool = False
    heading: tuple[int, int, str] | None = None


# ------------------------------------------------------------------------------------------- matching
def _alt(words: tuple[str, ...] | list[str], name: str) -> str:
    body = "|".join(r"\s+".join(map(re.escape, w.split())) for w in sorted(words, key=len, reverse=True))
    return f"(?P<{name}>{body})"


@lru_cache(maxsize=1)
def _placeholders() -> dict[str, str]:
    return {"sev": _alt(list(lx.SEV_SWAP), "sev"), "x": r"(?P<x>[a-z][a-z ,'()-]*?)", "n": r"(?P<n>[a-z][a-z '-]*?)",
            "side": "(?P<side>left|right|bilateral)", "len": r"(?P<len>\d+(?:\.\d+)?)", "age": r"(?P<age>\d{1,3})",
            "sex": "(?P<sex>female|male|woman|man)", "hist": _alt([h for _, b, m in lx.HISTORIES for h in (b, *m)], "hist")}


def _to_rx(template: str) -> re.Pattern[str]:
    out = ""
    for part in re.split(r"(\{\w+\})", template):
        if part.startswith("{") and part.endswith("}"):
            out += _placeholders()[part[1:-1].lower()]
        else:
            out += r"\s+".join(re.escape(w) for w in part.split(" "))
    return re.compile(out, re.IGNORECASE)


@lru_cache(maxsize=1)
def _compiled() -> tuple[list[tuple[Family, str, re.Pattern[str]]], list[tuple[str, str, re.Pattern[str]]]]:
    fams = [(f, t, _to_rx(t)) for f in lx.FAMILIES for t in f.source + f.mine + f.short]
    neg = list(lx.NEG_FRAMES_SOURCE) + [f for f, _ in lx.NEG_FRAMES_MINE + lx.NEG_SHORT_MINE]
    frames = [(ABS, f, _to_rx(f)) for f in neg] + [(AFF, f, _to_rx(f)) for f in lx.AFF_SHORT_MINE]
    return fams, frames


@lru_cache(maxsize=1)
def _noun_concepts() -> dict[str, str]:
    out = {n.lower(): c for d in (lx.NOUNS_SOURCE, lx.NOUNS_MINE, lx.SYNOPTIC_NAME) for c, v in d.items() for n in v}
    return {" ".join(k.split()): v for k, v in out.items()}


def _key(s: str) -> str:
    return " ".join(s.lower().split())


_LIST_SPLIT = re.compile(r"\s*,\s*(?:(?:or|and|nor)\s+)?|\s+(?:or|and|nor)\s+", re.IGNORECASE)


def _match(content: str) -> tuple[str, Family | None, str, dict[str, str], tuple[str, ...], tuple[tuple[str, str], ...]]:
    """(slot, family, template, values, noun concepts, assertions) of one sentence, or ``slot == ""``."""
    fams, frames = _compiled()
    for fam, tmpl, rx in fams:
        m = rx.fullmatch(content)
        if m:
            values = {k: v for k, v in m.groupdict().items() if v is not None}
            extra: tuple[tuple[str, str], ...] = ()
            if "hist" in values:
                idx = next(i for i, (_, b, mine) in enumerate(lx.HISTORIES)
                           if _key(values["hist"]) in {_key(h) for h in (b, *mine)})
                values["hist"], extra = str(idx), lx.HISTORIES[idx][0]
            return fam.slot, fam, tmpl, values, (), fam.assertions + extra
    nouns = _noun_concepts()
    for pol, tmpl, rx in frames:
        m = rx.fullmatch(content)
        if m:
            items = [_key(i) for i in _LIST_SPLIT.split(m.group("x" if "{x" in tmpl.lower() else "n")) if i.strip()]
            concepts = [nouns.get(i) for i in items]
            if items and None not in concepts:
                cs = tuple(dict.fromkeys(c for c in concepts if c))
                return ("negation" if pol == ABS else "present"), None, tmpl, {}, cs, tuple((c, pol) for c in cs)
    return "", None, "", {}, (), ()


@lru_cache(maxsize=1)
def _heading_rxs() -> list[tuple[str, re.Pattern[str]]]:
    side = "(?:left|right|bilateral)"
    out = [("addendum", r"(?:addendum|supplementary report|amended report)(?:\s+\d+)?(?:\s*\([^)]*\))?")]
    for d in (lx.HEADINGS_SOURCE, lx.HEADINGS_MINE):
        for sec, names in d.items():
            for nm in names:
                body = r"\s+".join(re.escape(w) for w in nm.lower().split()).replace(r"\{side\}", side)
                out.append((sec, body))
    out.sort(key=lambda p: len(p[1]), reverse=True)
    return [(sec, re.compile(f"(?P<h>{b})(?:\\s*:|\\s+-)(?:\\s+|$)", re.IGNORECASE)) for sec, b in out]


def _heading_at(norm: str, pos: int, end: int) -> tuple[str, re.Match[str]] | None:
    """(section, match) of a known heading starting at ``pos``, or None."""
    for sec, rx in _heading_rxs():
        m = rx.match(norm, pos, end)
        if m:
            return sec, m
    return None


_BULLET = re.compile(r"\s*(?:[*\u2022]\s+|-\s+)?")
_SPLIT = re.compile(r"(?<=[.!?])\s+")
_ADDENDUM_CUE = re.compile(r"\b(?:addend|supplementary|amend|revis)", re.IGNORECASE)  # unrecognised: stays last


def _parse(text: str) -> list[_Unit]:
    """The report as sentence units, recognised or not, in order."""
    norm, st, en = lx.normalise(text)
    units: list[_Unit] = []
    current, in_addendum = "other", False
    for line in re.finditer(r"[^\n]+", norm):
        bounds = [0, *(m.end() for m in _SPLIT.finditer(line.group())), len(line.group())]
        for a, b in zip(bounds[:-1], bounds[1:], strict=True):
            a, b = a + line.start(), b + line.start()
            pos, heading = a + _BULLET.match(norm, a, b).end() - a, None
            while (found := _heading_at(norm, pos, b)) is not None:
                hsec, hm = found
                heading, pos = (st[hm.start("h")], en[hm.end("h") - 1], hsec), hm.end()
                in_addendum = in_addendum or hsec == "addendum"
                current = "conclusion" if hsec == "lead" else hsec
            end = b
            while end > pos and norm[end - 1].isspace():
                end -= 1
            if end > pos and norm[end - 1] == ".":
                end -= 1
            if end <= pos:
                if heading:
                    units.append(_Unit(heading[1], heading[1], current, "", heading=heading))
                continue
            o0, o1 = st[pos], en[end - 1]
            slot, fam, tmpl, values, cs, asserted = _match(norm[pos:end])
            if fam is not None:
                section = fam.section
            elif slot:
                section = "micro"
            else:
                section = current if (heading or current in ("conclusion", "micro")) else "micro"
            if in_addendum or section == "addendum" or (not slot and _ADDENDUM_CUE.search(norm, pos, end)):
                in_addendum, section = True, "addendum"
            units.append(_Unit(o0, o1, section, text[o0:o1], slot, fam, tmpl, values, cs, asserted, heading=heading))
            current = section
    if any(u.section == "addendum" for u in units):
        first = next(i for i, u in enumerate(units) if u.section == "addendum")
        for u in units[:first]:
            u.superseded = u.section in ("micro", "conclusion")
    return units


def find_statements_alt(text: str) -> tuple[tuple[int, int, str], ...]:
    """``(start, end, slot)`` of each recognised statement of an alt-grammar report, in order.

    ``slot`` is a statement family of :data:`report_lexicon_alt.FAMILIES` (``gc_pos``, ``dx_equivocal``,
    ``add_retract``, ``history`` ...), ``negation`` (a negation over a list of findings) or ``present`` (a
    synoptic "finding: present" line). Spans are in ``text`` and leave out headings and the final full stop.
    """
    return tuple((u.start, u.end, u.slot) for u in _parse(text) if u.slot)


def assertions_alt(text: str) -> list[Substitution]:
    """Every ``(concept, polarity, superseded)`` that the recognised statements of ``text`` assert, in order."""
    return [Substitution(c, p, u.superseded) for u in _parse(text) for c, p in u.assertions]


# ------------------------------------------------------------------------------------------- writing
def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _join(items: list[str], last: str) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + f" {last} " + items[-1]


def _fill(template: str, u: _Unit, rng: random.Random) -> str:
    vals: dict[str, str] = {}
    for k, v in u.values.items():
        if k == "sev":
            v = rng.choice(lx.SEV_SWAP.get(v.lower(), (v.lower(),)))
        elif k == "sex":
            fem = v.lower() in ("female", "woman")
            v = ("female" if fem else "male") if u.slot == "letter" else rng.choice(
                ("female", "woman") if fem else ("male", "man"))
        elif k == "hist":
            _, src, mine = lx.HISTORIES[int(v)]
            v = rng.choice([h for h in mine if _key(h) != _key(u.text)] or list(mine))
        elif k == "side":
            v = v.lower()
        vals[k], vals[_cap(k)] = v, _cap(v)
    return template.format(**vals)


def _render(u: _Unit, rng: random.Random, short: bool) -> list[str]:
    """Other wordings (sentences without the final full stop) of a recognised unit ``u``."""
    if u.family is not None:
        pool = u.family.short if short and u.family.short else u.family.mine
        pool = tuple(t for t in pool if t != u.template) or pool
        return [_cap(_fill(rng.choice(pool), u, rng))]
    cs = list(u.concepts)
    if u.slot == "present":
        return [rng.choice(lx.AFF_SHORT_MINE).format(N=rng.choice(lx.SYNOPTIC_NAME[c])) for c in cs]
    if short or (len(cs) > 1 and rng.random() < 0.3):  # one negation per finding
        out = []
        for c in cs:
            f, _ = rng.choice(lx.NEG_SHORT_MINE)
            out.append(_cap(f.format(N=rng.choice(lx.SYNOPTIC_NAME[c]), n=rng.choice(lx.NOUNS_MINE[c]))))
        return out
    frames = [(f, j) for f, j in lx.NEG_FRAMES_MINE if (j != "nor" or len(cs) == 2) and f != u.template]
    f, j = rng.choice(frames)
    x = _join([rng.choice(lx.NOUNS_MINE[c]) for c in cs], j)
    return [_cap(f.format(x=x, X=_cap(x)))]


def _heading(section: str, rng: random.Random, side: str | None) -> str:
    names = lx.HEADINGS_MINE[section]
    if section == "lead" and side is None:
        return rng.choice(("Temporal artery biopsy", "TA biopsy"))
    return rng.choice(names).format(side=side or "", Side=_cap(side or ""))


_NEW, _OLD = "\x02", "\x03"  # around text the paraphraser wrote / kept verbatim (noise touches only the former)


def _stop(s: str) -> str:
    return s if s.rstrip(_NEW + _OLD).endswith((".", "?", "!")) else s + "."


def _restructure(units: list[_Unit], rng: random.Random, replaced: set[int]) -> str:
    layout = rng.choice(("narrative", "synoptic", "terse"))
    sec: dict[str, list[str]] = {s: [] for s in lx.SECTIONS}
    side = next((u.values["side"].lower() for u in units if "side" in u.values), None)
    for i, u in enumerate(units):
        if u.text:
            short = layout != "narrative" and rng.random() < 0.7
            sec[u.section] += _render(u, rng, short) if i in replaced else [f"{_OLD}{u.text}{_NEW}"]
    upper = layout == "synoptic" and rng.random() < 0.5
    lines, body = [], ["clinical", "specimen", "micro", "conclusion"]
    if layout == "terse" and sec["conclusion"]:
        lines.append(f"{_heading('lead', rng, side)}: " + " ".join(map(_stop, sec["conclusion"] + sec["micro"])))
        body = ["clinical", "specimen"]
    elif rng.random() < (0.6 if layout == "synoptic" else 0.3):
        body = ["conclusion", "clinical", "specimen", "micro"]
    for s in body:
        if not sec[s]:
            continue
        head = _heading(s, rng, side)
        head = head.upper() if upper else head
        if layout == "synoptic" and s == "micro":
            lines.append(f"{head}:\n" + "\n".join(f"- {p}" for p in sec[s]))
        else:
            lines.append(f"{head}: " + " ".join(map(_stop, sec[s])))
    if sec["other"]:
        lines.append(" ".join(map(_stop, sec["other"])))
    if sec["addendum"]:
        lines.append(f"{_heading('addendum', rng, side)}: " + " ".join(map(_stop, sec["addendum"])))
    return _NEW + "\n".join(lines) + _OLD


def _in_place(text: str, units: list[_Unit], rng: random.Random, replaced: set[int]) -> str:
    side = next((u.values["side"].lower() for u in units if "side" in u.values), None)
    edits = []
    for i, u in enumerate(units):
        if u.heading is not None and rng.random() < 0.6:
            edits.append((u.heading[0], u.heading[1], _NEW + _heading(u.heading[2], rng, side) + _OLD))
        if i in replaced:
            edits.append((u.start, u.end, _NEW + ". ".join(_render(u, rng, False)) + _OLD))
    for a, b, new in sorted(edits, reverse=True):
        text = text[:a] + new + text[b:]
    return text


def _noise(text: str, rng: random.Random, strength: float) -> str:
    """Abbreviations, US spelling and a typo in the written parts of ``text``; sometimes all upper case."""
    p = 0.3 * strength
    parts = re.split(f"([{_NEW}{_OLD}])", text)
    new = [i for i in range(len(parts)) if i >= 2 and parts[i - 1] == _NEW]
    abbreviations = [pair for pair in lx.WRITE_ABBREVIATIONS if rng.random() < 0.5] if rng.random() < p else []
    spellings = lx.US_SPELLINGS if rng.random() < p else ()
    for i in new:
        for long, short in (*abbreviations, *spellings):
            parts[i] = parts[i].replace(long, short)
    words = [(i, m) for i in new for m in re.finditer(r"\b[a-z]{6,}\b", parts[i]) if m.group() in lx.TYPO_SAFE]
    if words and rng.random() < p:
        i, m = rng.choice(words)
        w, j = m.group(), rng.randrange(1, len(m.group()) - 1)
        typo = w[:j] + w[j + 1:] if rng.random() < 0.5 else w[:j] + w[j] + w[j:]
        parts[i] = parts[i][:m.start()] + typo + parts[i][m.end():]
    out = "".join(x for x in parts if x not in (_NEW, _OLD))
    return out.upper() if rng.random() < 0.3 * p else out


def paraphrase_alt_report(text: str, rng: random.Random, strength: float = 0.7) -> tuple[str, list[Substitution]]:
    """Re-word one alt-grammar report without changing what it asserts about any label.

    Each recognised statement is replaced (with probability ``0.5 + 0.5 * strength``, at least one) by another
    wording of the same concept and polarity; with probability ``strength`` the report is also re-laid out.
    Returns the new text and one :class:`Substitution` per assertion of each replaced statement. A report with
    no recognised statement comes back unchanged with an empty list.
    """
    if not 0.0 <= strength <= 1.0:
        raise DataValidationError("strength must lie in [0, 1]", column="strength",
                                  hint="pass a paraphrase strength between 0 and 1")
    text = text.replace(_NEW, "").replace(_OLD, "")
    units = _parse(text)
    recognised = [i for i, u in enumerate(units) if u.slot]
    if not recognised:
        return text, []
    replaced = {i for i in recognised if rng.random() < 0.5 + 0.5 * strength} or {rng.choice(recognised)}
    out = _restructure(units, rng, replaced) if rng.random() < strength else _in_place(text, units, rng, replaced)
    subs = [Substitution(c, p, units[i].superseded) for i in sorted(replaced) for c, p in units[i].assertions]
    return _noise(out, rng, strength), subs


def augmented_alt(texts: list[str], y: np.ndarray, k: int, seed: int) -> tuple[list[str], np.ndarray]:
    """``texts`` and ``y`` followed by ``k`` paraphrases of each report with a recognised labelled statement.

    A labelled statement affirms, denies or hedges a finding (not a request or history). Paraphrase ``v`` of
    report ``i`` uses ``random.Random(f"{seed}/{i}/{v}")``; its label row is copied from ``y[i]``. Logs a
    warning when fewer than half of the reports are recognised. Raises
    :class:`~ehrseq.errors.DataValidationError` when ``k`` is negative, a text is not a string or the label
    rows do not match the texts.
    """
    y = np.asarray(y)
    if not isinstance(k, int | np.integer) or k < 0:
        raise DataValidationError("k must be a non-negative integer", column="k",
                                  hint="pass the number of paraphrases per report, e.g. k=3")
    bad = sum(not isinstance(t, str) for t in texts)
    if bad:
        raise DataValidationError("texts must be strings", column="text", n_rows=bad,
                                  hint="fill or drop missing reports before augmenting")
    if y.ndim == 0 or y.shape[0] != len(texts):
        raise DataValidationError(f"label rows ({0 if y.ndim == 0 else y.shape[0]}) do not match the "
                                  f"{len(texts)} texts", column="labels",
                                  hint="pass one label row per report, in the same order")
    labelled = [i for i, t in enumerate(texts) if any(a.polarity in LABELLING for a in assertions_alt(t))]
    if texts and len(labelled) < len(texts) / 2:
        log.warning("paraphrase_alt recognised a labelled statement in only %d of %d reports; the rest are "
                    "not augmented", len(labelled), len(texts))
    rows = [i for i in labelled for _ in range(int(k))]
    out = list(texts) + [paraphrase_alt_report(texts[i], random.Random(f"{seed}/{i}/{v}"))[0]
                         for i in labelled for v in range(int(k))]
    return out, np.concatenate([y, y[np.asarray(rows, dtype=int)]]) if rows else y.copy()
