"""Label-preserving paraphrases of grammar-A biopsy reports (:mod:`ehrseq.synth.reports`), for training a
report classifier that must read other hands.

A report is cut into the statements of :data:`ehrseq.models.report_lexicon.GRAMMAR_A` (found only at a
sentence start, so "negative for giant cell arteritis" is never read as "giant cell arteritis") and the text
between them. Each statement may be replaced by an alternative of the *same slot* (same concept, same
polarity: affirmed, absent, hedged or request); the findings of a microscopy section may be re-ordered, joined
in pairs (", but" / ";" where one of the two is negated, so no negation reaches across) or switched between
narrative and synoptic "Field: value" lines; headings, specimen, history and gross text are re-worded; then
light noise: abbreviations, all caps, a typo in a word that is neither a cue nor a finding word. Text that is
not recognised (e.g. a grammar-A typo inside a statement) is kept verbatim, so nothing is ever asserted that
the report did not state. Everything before an addendum is flagged ``superseded`` in the trace: grammar A
draws those first findings for the wrong diagnosis, and the addendum's labels win.

The lexicon was written from general pathology knowledge without sight of the held-out report grammar.
"""

from __future__ import annotations

import functools
import logging
import random
import re
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from ehrseq.codes import BIOPSY_LABELS
from ehrseq.errors import DataValidationError
from ehrseq.models import report_lexicon as lx
from ehrseq.models.negation_cues import POST_NEG, PRE_NEG, WORD


class Substitution(NamedTuple):
    """One (concept, polarity) a paraphraser recognised in a statement (and re-worded, in a variant's trace);
    ``superseded``: it lies before a revising addendum. Both paraphrasers (grammar A here, grammar B in
    :mod:`ehrseq.models.paraphrase_alt`) report in these records."""

    concept: str
    polarity: str
    superseded: bool


class _M(NamedTuple):  # a recognised grammar-A statement
    text: str
    slot: str
    sev: str | None
    superseded: bool


def _expand() -> dict[str, tuple[str, str | None]]:
    out: dict[str, tuple[str, str | None]] = {}
    for slot, forms in lx.GRAMMAR_A.items():
        for form in forms:
            for sev in (lx.SEVERITIES if "{sev}" in form else (None,)):
                out[form.replace("{sev}", sev or "").lower()] = (slot, sev)
    return out


_FORMS = _expand()
_BY_HEAD: dict[str, list[str]] = {}
for _f in sorted(_FORMS, key=len, reverse=True):
    _BY_HEAD.setdefault(_f[:4], []).append(_f)
_STARTS = re.compile(r"\n|[.:;,?)-] ")


@functools.lru_cache(maxsize=8192)
def find_statements(text: str) -> tuple[tuple[int, int, str], ...]:
    """(start, end, slot) of each grammar-A statement in ``text``, longest first, found only at a sentence,
    clause or line start and ending before white space."""
    low, out, last = text.lower(), [], 0
    for pos in (0, *(m.end() for m in _STARTS.finditer(low))):
        if pos < last:
            continue
        for f in _BY_HEAD.get(low[pos:pos + 4], ()):
            end = pos + len(f)
            if low.startswith(f, pos) and (end == len(low) or low[end].isspace()):
                out.append((pos, end, _FORMS[f][0]))
                last = end
                break
    return tuple(out)


_ADDENDUM = re.compile(r"^addendum\b", re.I | re.M)
_FIELD = r"(intima|internal elastic lamina|media|adventitia|giant cells): "
_FIELD_END = re.compile(r"\n" + _FIELD + r"\Z", re.I)
_FIELD_SEP = re.compile(r"\n" + _FIELD, re.I)
_NEG_CUES = tuple(set(PRE_NEG) | set(POST_NEG))
_CUE_WORDS = frozenset(w for c in _NEG_CUES for w in c) | frozenset(
    w for c in lx.ABSENCE_CUES + lx.HEDGE_CUES for w in WORD.findall(c))
_PROTECTED = _CUE_WORDS | frozenset(
    w for pool in (lx.GRAMMAR_A, lx.ALTERNATIVES, lx.TERSE_VALUES, lx.ADDENDUM_BODY)
    for forms in pool.values() for f in forms for w in WORD.findall(f.lower()))
_SIDES = {"l": "left", "left": "left", "r": "right", "right": "right", "bilat": "bilateral", "bilateral": "bilateral"}
_SYMPTOMS = {k.lower(): v for k, v in lx.SYMPTOMS.items()}


class _Ctx:
    def __init__(self, rng: random.Random, strength: float, arteritis_gc: bool) -> None:
        self.rng, self.p, self.arteritis_gc, self.upper = rng, strength, arteritis_gc, False
        self.family = rng.randrange(4)
        self.case = rng.choice(("upper", "title", "keep", "keep"))
        self.bullet = rng.choice(lx.BULLETS)
        self.records: list[Substitution] = []

    def hit(self, scale: float = 1.0) -> bool:
        return self.rng.random() < self.p * scale

    def pick(self, options: Sequence[str]) -> str:
        return options[self.rng.randrange(len(options))]

    def heading(self, kind: str) -> str:
        h = self.pick(lx.HEADINGS[kind][self.family])
        return h.upper() if self.case == "upper" else h.title() if self.case == "title" else h

    def side(self, raw: str) -> tuple[str, str]:
        s = self.pick(lx.SIDE_FORMS[_SIDES.get(raw.lower(), "left")])
        return s, s[:1].upper() + s[1:]

    def record(self, m: _M) -> None:
        self.records.extend(Substitution(c, p, m.superseded) for c, p in lx.SLOTS[m.slot])


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _like(alt: str, src: str, upper: bool) -> str:
    """``alt`` in the case of ``src``: all caps in an all-caps report, else a lower-case first letter where
    ``src`` has one (site-B style)."""
    if upper:
        return alt.upper()
    if src[:1].islower() and alt[1:2].islower():
        return alt[:1].lower() + alt[1:]
    return alt


def _fill(alt: str, m: _M, ctx: _Ctx) -> str:
    if "{sev}" not in alt and "{Sev}" not in alt:
        return alt
    sev = ctx.pick(lx.SEVERITY_FORMS[m.sev]) if m.sev else "mild"
    return alt.format(sev=sev, Sev=_cap(sev))


def _alternative(m: _M, ctx: _Ctx) -> str:
    if m.slot in lx.ADDENDUM_SLOTS:
        concl = ctx.pick(lx.ALTERNATIVES["gca-" if m.slot == "add-" else "gca+"])
        text = (f"{ctx.pick(lx.ADDENDUM_HEADINGS)}: {ctx.pick(lx.ADDENDUM_BODY[m.slot])} "
                f"{ctx.pick(lx.REVISED_HEADINGS)}: {concl}")
        return text.upper() if ctx.upper else text
    pool = lx.ALTERNATIVES[m.slot]
    if m.slot == "gc+" and ctx.arteritis_gc:
        pool = pool + lx.GIANT_CELLS_ARTERITIS
    return _like(_fill(ctx.pick(pool), m, ctx), m.text, ctx.upper)


def _statement(m: _M, ctx: _Ctx, force: bool = False) -> str:
    """The statement re-worded (recorded in the trace) or, with probability 1 - strength, as written."""
    if force or ctx.hit():
        ctx.record(m)
        return _alternative(m, ctx)
    return m.text


@functools.lru_cache(maxsize=4096)
def _negated(sentence: str) -> bool:
    words = WORD.findall(sentence.lower())
    return any(tuple(words[i:i + len(c)]) == c for i in range(len(words)) for c in _NEG_CUES if words[i] == c[0])


def _join(a: str, b: str, ctx: _Ctx) -> str:
    mixed = _negated(a) != _negated(b)
    glue = ctx.pick(("; ", ", but ", ", whereas ") if mixed else ("; ", " and ", ", and "))
    glue = glue.upper() if ctx.upper else glue
    b = b[:1].lower() + b[1:] if b[1:2].islower() else b
    return a.rstrip(".") + glue + b


def _narrative(parts: list[str], ctx: _Ctx) -> str:
    out: list[str] = []
    for s in parts:
        if out and ":" not in s and ":" not in out[-1] and ctx.hit(0.3):
            out[-1] = _join(out[-1], s, ctx)
        else:
            out.append(s)
    return " ".join(out)


def _group(members: list[tuple[str | None, _M]], synoptic: bool, ctx: _Ctx) -> tuple[str, bool]:
    """Re-render consecutive findings; returns (text, starts on a new line)."""
    if ctx.hit(0.5 if synoptic else 0.4):
        members = ctx.rng.sample(members, len(members))
    to_synoptic = ctx.hit(0.3) if not synoptic else not ctx.hit(0.4)
    if not to_synoptic:
        text = _narrative([_statement(m, ctx) for _, m in members], ctx)
        return ("\n" + text, True) if synoptic else (text, False)
    lines = []
    for label, m in members:
        layer = lx.LAYER[m.slot]
        name = label if label is not None and not ctx.hit() else ctx.pick(lx.FIELD_NAMES[layer])
        if m.slot in lx.TERSE_VALUES and ctx.hit(0.6):
            ctx.record(m)
            value = _like(_fill(ctx.pick(lx.TERSE_VALUES[m.slot]), m, ctx), m.text, ctx.upper)
        else:
            value = _statement(m, ctx)
        lines.append(f"{name.upper() if ctx.upper else name}: {value}")
    return "\n" + "\n".join(lines), True


# ------------------------------------------------------------------ the text between statements

def _cm(x: str, ctx: _Ctx) -> str:
    v = float(x)
    return ctx.pick((f"{v:.1f} cm", f"{v:.1f}cm", f"{round(v * 10)} mm", f"{round(v * 10)}mm"))


def _history(age: str, sex: str, sym: str, ctx: _Ctx) -> str:
    s = "F" if sex.lower() in ("f", "woman") else "M"
    parts = [ctx.pick(_SYMPTOMS.get(x.strip().lower(), (x.strip(),))) for x in re.split(r", | \+ ", sym)]
    words = ctx.pick(lx.SEX_FORMS[s])
    return ctx.pick(lx.HISTORY_TEMPLATES).format(age=age, sex=words, Sex=_cap(words), s=s, sym=", ".join(parts))


def _specimen(m: re.Match[str], ctx: _Ctx) -> str:
    side, side_c = ctx.side(m[1])
    return f"{ctx.heading('specimen')}: {ctx.pick(lx.SPECIMEN_TEMPLATES).format(side=side, Side=side_c)}"


def _diagnosis_a(m: re.Match[str], ctx: _Ctx) -> str:
    side, side_c = ctx.side(m[1])
    site = ctx.pick(lx.DIAGNOSIS_SITE_LINES).format(side=side, Side=side_c)
    return f"{ctx.heading('diagnosis')}:\n" + (f"{site}\n" if site else "") + ctx.bullet


def _terse_head(m: re.Match[str], ctx: _Ctx) -> str:
    side, side_c = ctx.side(m[1])
    return ctx.pick(lx.SPECIMEN_TEMPLATES).format(side=side, Side=side_c).rstrip(".") + ": "


def _gross(length: str, diam: str | None, ctx: _Ctx) -> str:
    if diam is None:
        body = ctx.pick(lx.GROSS_SHORT).format(L=_cm(length, ctx))
    else:
        body = ctx.pick(lx.GROSS_TEMPLATES).format(L=_cm(length, ctx), D=_cm(diam, ctx))
    return f"{ctx.heading('gross')}: {body}"


_GROSS_A = (r"GROSS DESCRIPTION: Received in formalin is a segment of tan (?:tubular )?tissue measuring ([\d.]+) cm "
            r"in length and ([\d.]+) cm in diameter\. Serially cross-sectioned and entirely submitted\.")
# (a word the text must hold, the pattern, its re-writer): the grammar-A text between statements
_RULES: tuple[tuple[str, re.Pattern[str], object], ...] = tuple((k, re.compile(p, re.I | re.M), f) for k, p, f in (
    ("specimen: ", r"SPECIMEN: (left|right|bilateral) temporal artery, biopsy\.", _specimen),
    ("clinical history: ", r"CLINICAL HISTORY: (\d+)-year-old (woman|man) with ([^.\n]*)\. ",
     lambda m, c: f"{c.heading('history')}: {_history(m[1], m[2], m[3], c)}. "),
    ("gross description: ", _GROSS_A, lambda m, c: _gross(m[1], m[2], c)),
    ("microscopic", r"^MICROSCOPIC(?: \(synoptic\))?:", lambda m, c: f"{c.heading('micro')}:"),
    ("sections show a ", r"Sections show a (?:medium-sized )?muscular artery\.",
     lambda m, c: c.pick(lx.ARTERY_DESCRIPTIONS)),
    ("artery present", r"^Artery present: yes$", lambda m, c: c.pick(lx.SYNOPTIC_ARTERY)),
    ("levels examined", r"^Levels examined: (\d+)$", lambda m, c: c.pick(lx.SYNOPTIC_LEVELS).format(n=m[1])),
    ("diagnosis:", r"^DIAGNOSIS:\n(left|right|bilateral) temporal artery, biopsy:\n- ", _diagnosis_a),
    ("\n- ", r"(?<=\n)- (?=\S)", lambda m, c: c.bullet),
    ("hx: ", r"^Hx: (\d+)([FM]), (.*?), ESR (\d+)\. ",
     lambda m, c: f"{c.heading('history')}: {_history(m[1], m[2], m[3], c)}; ESR {m[4]} mm/h. "),
    (" yo ", r"^(\d+) yo ([FM]) w/ (.*?), \Z", lambda m, c: f"{c.heading('history')}: {_history(m[1], m[2], m[3], c)}. "),
    ("macro: ", r"^Macro: (?:L|R|bilat) TA, ([\d.]+) cm, all embedded\.", lambda m, c: _gross(m[1], None, c)),
    ("gross: ", r"^Gross: single tan vessel segment ([\d.]+)cm, ES in 1 cassette\.", lambda m, c: _gross(m[1], None, c)),
    ("micro", r"^Micro(?: - levels x3)?: ", lambda m, c: f"{c.heading('micro')}: "),
    ("dx: ", r"^Dx: ", lambda m, c: f"{c.heading('diagnosis')}: "),
    ("impression: ", r"^IMPRESSION: ", lambda m, c: f"{c.heading('diagnosis')}: "),
    ("conclusion: ", r"^Conclusion: ", lambda m, c: f"{c.heading('diagnosis')}: "),
    (" ta bx: ", r"\A(L|R|bilat) TA bx: ", _terse_head),
))


def _between(text: str, ctx: _Ctx) -> str:
    low = text.lower()
    for key, rx, fn in _RULES:
        if key in low:
            text = rx.sub(lambda m, fn=fn: fn(m, ctx) if ctx.hit() else m[0], text)  # type: ignore[operator]
    return text


def _move_diagnosis(text: str, ctx: _Ctx) -> str:
    """Diagnosis first (a US habit): the diagnosis block moved above the gross / macro section."""
    lines = text.split("\n")
    starts = [i for i, ln in enumerate(lines) if re.match(r"(DIAGNOSIS:$|Dx: |IMPRESSION: |Conclusion: )", ln, re.I)]
    gross = [i for i, ln in enumerate(lines) if re.match(r"(GROSS DESCRIPTION|Macro|Gross): ", ln, re.I)]
    if len(starts) != 1 or len(gross) != 1 or gross[0] > starts[0]:
        return text
    end = next((i for i in range(starts[0] + 1, len(lines)) if lines[i].lower().startswith("addendum")), len(lines))
    block = lines[starts[0]:end]
    rest = lines[:starts[0]] + lines[end:]
    return "\n".join(rest[:gross[0]] + block + rest[gross[0]:])


def _noise(text: str, ctx: _Ctx) -> str:
    if ctx.hit(0.3):
        keys = [k for k in lx.ABBREVIATIONS if re.search(rf"\b{re.escape(k)}\b", text, re.I)]
        for k in ctx.rng.sample(keys, min(len(keys), 1 + ctx.rng.randrange(2))):
            text = re.sub(rf"\b{re.escape(k)}\b", ctx.pick(lx.ABBREVIATIONS[k]), text, flags=re.I)
    if ctx.hit(0.2):
        words = text.split(" ")
        ok = [i for i, w in enumerate(words) if len(w) >= 5 and w.isalpha() and w.lower() not in _PROTECTED]
        for i in ctx.rng.sample(ok, min(len(ok), 1 + ctx.rng.randrange(2))):
            w, j = words[i], 1 + ctx.rng.randrange(len(words[i]) - 2)
            words[i] = ctx.pick((w[:j] + w[j + 1] + w[j] + w[j + 2:], w[:j] + w[j + 1:], w[:j] + w[j] + w[j:]))
        text = " ".join(words)
    return text.upper() if ctx.hit(0.05) else text


def paraphrase_report(text: str, rng: random.Random, strength: float = 0.7) -> tuple[str, list[Substitution]]:
    """One re-worded variant of a grammar-A report and the (concept, polarity) records it re-worded.

    ``strength`` (0..1) scales how much is changed; a variant equal to ``text`` is re-drawn once at full
    strength, so it differs whenever the report holds any recognised statement or heading.
    """
    ctx = _Ctx(rng, strength, arteritis_gc=False)
    src = _move_diagnosis(text, ctx) if ctx.hit(0.25) else text
    found = find_statements(src)
    addendum = _ADDENDUM.search(src)
    add_at = addendum.start() if addendum else None
    ctx.upper = src.isupper()
    ms = [_M(src[a:b], *_FORMS[src[a:b].lower()], add_at is not None and a < add_at) for a, b, _ in found]
    final = [m.slot for m in ms if not m.superseded]
    ctx.arteritis_gc = any(s in ("gca+", "add+gc", "add+") for s in final) and not any(
        s in ("gc_fb", "fb_concl") for s in final)
    chunks = [src[a[1]:b[0]] for a, b in zip(found[:-1], found[1:])]
    chunks = [src[:found[0][0]] if found else src, *chunks] + ([src[found[-1][1]:]] if found else [])
    out, k = [_between(chunks[0], ctx)], 0
    while k < len(ms):
        m = ms[k]
        if m.slot not in lx.FINDING_SLOTS:
            out += [_statement(m, ctx, force=not ctx.records and k == len(ms) - 1), _between(chunks[k + 1], ctx)]
            k += 1
            continue
        field = _FIELD_END.search(out[-1])
        synoptic = field is not None
        members: list[tuple[str | None, _M]] = [(field[1] if field else None, m)]
        if field:
            out[-1] = out[-1][:field.start()]
        j = k + 1
        while j < len(ms) and ms[j].slot in lx.FINDING_SLOTS:
            sep = chunks[j]
            f2 = _FIELD_SEP.fullmatch(sep)
            if (f2 is not None) != synoptic or (f2 is None and sep.strip()):
                break
            members.append((f2[1] if f2 else None, ms[j]))
            j += 1
        body, newline = _group(members, synoptic, ctx)
        if newline and not synoptic:
            out[-1] = out[-1].rstrip(" ")
        out += [body, _between(chunks[j], ctx)]
        k = j
    result = "".join(out)
    if ctx.upper and ctx.rng.random() < 0.8:
        result = result.upper()
    result = _noise(result, ctx)
    if result == text and strength < 1.0:
        return paraphrase_report(text, rng, 1.0)
    return result, ctx.records


def paraphrase_with_trace(texts: Sequence[str], labels: np.ndarray, n_variants: int = 1, seed: int = 0,
                          strength: float = 0.7) -> tuple[list[str], np.ndarray, np.ndarray, list[list[Substitution]]]:
    """:func:`paraphrase_reports` plus, per variant, the :class:`Substitution` records it made."""
    y = np.asarray(labels)
    if isinstance(texts, str) or y.ndim == 0 or y.shape[0] != len(texts):
        n_lab = "a scalar" if y.ndim == 0 else f"{y.shape[0]} row(s)"
        raise DataValidationError(f"labels has {n_lab} but there are {len(texts)} report(s)", column="labels",
                                  hint="pass one label row per report, in the same order")
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise DataValidationError("report text is not a string", column="text", n_rows=len(bad),
                                  hint=f"first bad position: {bad[0]}; fill or drop missing texts")
    if not isinstance(n_variants, int | np.integer) or n_variants < 1:
        raise DataValidationError("n_variants must be a positive integer", column="n_variants")
    if not 0.0 <= float(strength) <= 1.0:
        raise DataValidationError("strength must lie in [0, 1]", column="strength")
    out, traces = [], []
    for i, t in enumerate(texts):
        for v in range(int(n_variants)):
            new, rec = paraphrase_report(t, random.Random(f"{seed}/{i}/{v}"), float(strength))
            out.append(new)
            traces.append(rec)
    src = np.repeat(np.arange(len(texts), dtype=np.int64), int(n_variants))
    return out, y[src].copy(), src, traces


def paraphrase_reports(texts: Sequence[str], labels: np.ndarray, n_variants: int = 1, seed: int = 0,
                       strength: float = 0.7) -> tuple[list[str], np.ndarray, np.ndarray]:
    """``n_variants`` label-preserving re-wordings of each grammar-A report.

    Returns ``(texts, labels, source)``: the new reports (variants of report ``i`` are consecutive), their
    label rows (the source rows, copied) and the index of each variant's source report. The same ``seed``
    gives the same output; ``strength`` (0..1) scales how much each report is changed.
    """
    new, y, src, _ = paraphrase_with_trace(texts, labels, n_variants, seed, strength)
    return new, y, src


def augmented(texts: list[str], y: np.ndarray, k: int, seed: int) -> tuple[list[str], np.ndarray]:
    """``texts`` / ``y`` followed by ``k`` paraphrases of each report in which the augmenter recognised at least
    one labelled statement (the others are not copied: a copy that re-words nothing adds only noise)."""
    new, y_new, src, traces = paraphrase_with_trace(texts, y, n_variants=k, seed=seed)
    keep = [i for i, tr in enumerate(traces) if any(s.concept in BIOPSY_LABELS for s in tr)]
    n_rec = len({int(src[i]) for i in keep})
    if n_rec < 0.5 * len(texts):
        logging.getLogger(__name__).warning(
            "augment: the paraphraser recognised a labelled statement in only %d of %d training reports (it "
            "knows ehrseq's synthetic report style); the others are used as written", n_rec, len(texts))
    return list(texts) + [new[i] for i in keep], np.concatenate([y, y_new[keep]])
