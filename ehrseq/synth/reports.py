"""Synthetic temporal artery biopsy reports with known labels (for McMaster et al. 2021-style classifiers).

The latent findings are drawn first, then rendered as text, so labels follow meaning, not surface words:

* ``gca`` (the overall conclusion): prevalence about 27 %. About 15 % of GCA biopsies are *healed / treated*
  arteritis (giant cells absent, the conclusion still GCA); giant cells are seen in about 60 % of GCA.
* ``adventitial_inflammation``: most GCA biopsies, plus about 8 % of negatives as *isolated adventitial
  inflammation*, which is reported as non-diagnostic.
* ``intimal_hyperplasia``: common in GCA and rising with age (atherosclerosis, age-related thickening).
* ``giant_cells``: in a few negatives these are *foreign-body* giant cells around medial calcification.

Rendering varies like real pathology: synoptic and narrative styles, macroscopic / microscopic / diagnosis
sections, negations, equivocal conclusions ("suspicious for but not diagnostic of"), wrong tissue (vein, no
artery: every label 0), addenda that revise the diagnosis (the addendum wins), abbreviations, typos, upper case
and terse one-liners. Site ``A`` writes mostly synoptic, structured reports; site ``B`` narrative or terse ones
with more abbreviations.

Label noise is confined to *equivocal* reports: their text does not settle ``gca``, whose label is the latent
truth. ``generate_report`` returns, with the text and labels, the probability each label is 1 given what the
text says (1.0 or 0.0 except ``gca`` in equivocal reports), i.e. the ceiling a perfect reader could reach.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ehrseq.codes import BIOPSY_LABELS

REPORT_LABELS: tuple[str, ...] = tuple(BIOPSY_LABELS)
SITES = ("A", "B")

P_GCA = 0.27
P_EQUIVOCAL = {True: 0.06, False: 0.03}  # P(hedged report | gca)
# P(gca | the report is equivocal), from the two rates above (approximate: ignores the giant-cell condition).
P_GCA_GIVEN_EQUIVOCAL = P_GCA * P_EQUIVOCAL[True] / (P_GCA * P_EQUIVOCAL[True] + (1 - P_GCA) * P_EQUIVOCAL[False])


@dataclass
class _Case:
    """The latent findings of one biopsy."""

    gca: bool
    giant_cells: bool
    adventitial: bool
    intimal: bool
    kind: str  # active | healed | negative | isolated_adventitial | foreign_body | wrong_tissue | equivocal
    age: int
    female: bool
    side: str
    addendum: bool


def _pick(rng: np.random.Generator, options: list[str] | tuple[str, ...]) -> str:
    return options[int(rng.integers(len(options)))]


def _draw_case(rng: np.random.Generator, truth: dict[str, bool] | None) -> _Case:
    t = {k: bool(v) for k, v in (truth or {}).items()}
    unknown = set(t) - set(REPORT_LABELS)
    if unknown:
        raise ValueError(f"unknown truth label(s) {sorted(unknown)}; expected a subset of {list(REPORT_LABELS)}")
    age = int(np.clip(rng.normal(72, 8), 50, 95))
    female = bool(rng.random() < 0.7)
    side = _pick(rng, ("left", "right", "left", "right", "bilateral"))
    gca = t.get("gca", bool(rng.random() < P_GCA))
    p_intimal_age = 0.1 + 0.6 / (1 + np.exp(-(age - 72) / 5))
    if gca:
        # P(healed | gca) = 0.15; given "no giant cells" it is 0.15 / (0.15 + 0.85 * 0.30), about 0.37.
        p_healed = {None: 0.15, False: 0.37, True: 0.0}[t.get("giant_cells")]
        healed = bool(rng.random() < p_healed)
        gc = t.get("giant_cells", (not healed) and bool(rng.random() < 0.70))
        healed = healed and not gc
        adv = t.get("adventitial_inflammation", bool(rng.random() < (0.5 if healed else 0.85)))
        intimal = t.get("intimal_hyperplasia", bool(rng.random() < (0.9 if healed else 0.7)))
        kind = "healed" if healed else "active"
    else:
        gc = t.get("giant_cells", bool(rng.random() < 0.01))
        adv = t.get("adventitial_inflammation", bool(rng.random() < 0.08))
        intimal = t.get("intimal_hyperplasia", bool(rng.random() < p_intimal_age))
        kind = "foreign_body" if gc else ("isolated_adventitial" if adv else "negative")
        if not (gc or adv or intimal) and rng.random() < 0.04:
            kind = "wrong_tissue"
    hedgeable = kind not in ("healed", "wrong_tissue") and not gc and "adventitial_inflammation" not in t
    if hedgeable and rng.random() < P_EQUIVOCAL[gca]:
        kind, adv = "equivocal", True
    addendum = kind in ("active", "negative", "isolated_adventitial") and rng.random() < 0.05
    return _Case(gca, gc, adv, intimal, kind, age, female, side, addendum)


# ---------------------------------------------------------------- phrase pools: (site A style, site B style)

GIANT_POS = (
    ["Multinucleated giant cells are present.", "Giant cells are identified adjacent to the fragmented internal "
     "elastic lamina.", "Scattered multinucleated giant cells are seen within the media.",
     "Occasional giant cells are present.", "Rare giant cells are seen."],
    ["multinucleated GCs present.", "giant cells seen along the IEL.", "+ giant cells.", "giant cells present.",
     "a few giant cells are noted.", "GCs identified at the intima-media junction."],
)
GIANT_NEG = (
    ["No giant cells are identified.", "Giant cells are not seen.", "No multinucleated giant cells are present.",
     "There is no evidence of giant cells.", "Giant cells: none seen."],
    ["no giant cells seen.", "no GCs.", "negative for giant cells.", "giant cells absent.",
     "without giant cells."],
)
ADV_POS = (
    ["There is lymphohistiocytic inflammation involving the adventitia.", "A chronic inflammatory infiltrate "
     "is present in the adventitia.", "Adventitial lymphocytic inflammation is present."],
    ["adventitial lymphocytes +.", "patchy adventitial chronic inflammation.",
     "lymphoid cuffing of adventitial vasa vasorum.", "mild adventitial inflam."],
)
ADV_NEG = (
    ["The adventitia is unremarkable.", "No adventitial inflammation is seen.",
     "There is no inflammatory infiltrate in the adventitia."],
    ["adventitia unremarkable.", "no adventitial inflam.", "no inflammatory infiltrate."],
)
INTIMA_POS = (
    ["There is {sev} intimal hyperplasia.", "The intima shows {sev} fibrointimal thickening.",
     "{Sev} intimal proliferation narrows the lumen."],
    ["{sev} intimal thickening.", "{sev} intimal hyperplasia.", "intimal fibroplasia ({sev})."],
)
INTIMA_NEG = (
    ["The intima is thin.", "There is no significant intimal hyperplasia.", "The intima is unremarkable."],
    ["intima thin.", "no intimal hyperplasia.", "intima unremarkable."],
)

CONCLUSION = {
    "gca": (
        ["Temporal artery with active arteritis, consistent with giant cell arteritis.",
         "Giant cell arteritis.", "Findings diagnostic of giant cell (temporal) arteritis.",
         "Positive for giant cell arteritis."],
        ["active GCA.", "c/w giant cell arteritis.", "POSITIVE for GCA.", "TA bx diagnostic of GCA."],
    ),
    "healed": (
        ["Healed arteritis with intimal fibrosis and fragmentation of the internal elastic lamina, consistent "
         "with treated giant cell arteritis.", "Features of healed (treated) giant cell arteritis; no active "
         "inflammation."],
        ["healed / treated GCA. no active inflam.", "c/w healed arteritis (on steroids), i.e. GCA."],
    ),
    "negative": (
        ["Negative for arteritis.", "Temporal artery, no evidence of vasculitis.", "No arteritis identified.",
         "Benign temporal artery."],
        ["neg for arteritis.", "no GCA.", "NEGATIVE for vasculitis.", "no evidence of GCA."],
    ),
    "isolated_adventitial": (
        ["Isolated adventitial inflammation, not diagnostic of arteritis. Negative for giant cell arteritis."],
        ["isolated adventitial inflam only - not diagnostic of GCA. neg for arteritis."],
    ),
    "foreign_body": (
        ["Occasional foreign-body type giant cells around medial calcification; no arteritis. Negative for "
         "giant cell arteritis."],
        ["foreign body type GCs assoc w/ calcification, no vasculitis. neg for GCA."],
    ),
    "wrong_tissue": (
        ["Segment of vein; no artery identified. Non-diagnostic specimen, re-biopsy if clinically indicated.",
         "Fibroadipose tissue and nerve; no artery is present. Non-diagnostic."],
        ["vein only, no artery seen - nondiagnostic.", "no TA identified in specimen (vein). repeat bx?"],
    ),
    "equivocal": (
        ["Sparse perivascular lymphocytes in the adventitia; features suspicious for but not diagnostic of giant "
         "cell arteritis. Clinical correlation recommended.", "Equivocal for arteritis; see comment."],
        ["?early GCA - suspicious but not diagnostic. correlate clinically.", "equivocal for GCA, cannot exclude."],
    ),
}
SYMPTOMS = ["new headache", "jaw claudication", "scalp tenderness", "visual disturbance", "polymyalgia symptoms",
            "fever and weight loss", "raised inflammatory markers"]
SYMPTOMS_B = ["HA", "jaw claud", "scalp tender", "vis disturbance", "PMR sx", "raised ESR", "amaurosis"]


def _sev(rng: np.random.Generator) -> str:
    return _pick(rng, ("mild", "moderate", "marked", "focal", "age-related"))


def _findings(c: _Case, rng: np.random.Generator, s: int) -> dict[str, str]:
    """One sentence per finding, in site style ``s`` (0 = A, 1 = B)."""
    sev = _sev(rng)
    intima = _pick(rng, (INTIMA_POS if c.intimal else INTIMA_NEG)[s]).format(sev=sev, Sev=sev.capitalize())
    if c.kind == "active":
        iel = _pick(rng, (["The internal elastic lamina is fragmented.", "There is destruction of the internal "
                           "elastic lamina."], ["IEL fragmented.", "IEL disrupted."])[s])
        media = _pick(rng, (["The media contains a lymphohistiocytic infiltrate.", "Granulomatous inflammation "
                             "involves the media."], ["granulomatous medial inflam.", "media w/ histiocytes."])[s])
    elif c.kind == "healed":
        iel = _pick(rng, (["The internal elastic lamina shows focal loss and scarring on EVG stain."],
                          ["EVG: IEL focally lost, scarring."])[s])
        media = _pick(rng, (["The media is thinned with patchy fibrosis; no active inflammation."],
                            ["media thin + fibrotic, no active inflam."])[s])
    else:
        iel = _pick(rng, (["The internal elastic lamina is intact on EVG stain.", "EVG shows reduplication of an "
                           "intact internal elastic lamina."], ["EVG: IEL intact.", "IEL intact, reduplicated."])[s])
        media = _pick(rng, (["The media is unremarkable.", "The media shows focal calcification."],
                            ["media ok.", "medial calcification."])[s])
        if c.kind == "foreign_body":
            media = ("The media shows calcification with a foreign-body giant cell reaction." if s == 0
                     else "medial calcification w/ foreign body GC reaction.")
    return {
        "intima": intima,
        "iel": iel,
        "media": media,
        "adventitia": _pick(rng, (ADV_POS if c.adventitial else ADV_NEG)[s]),
        "giant": _pick(rng, (GIANT_POS if c.giant_cells else GIANT_NEG)[s]),
    }


def _conclusion(c: _Case, rng: np.random.Generator, s: int) -> str:
    key = {"active": "gca"}.get(c.kind, c.kind)
    return _pick(rng, CONCLUSION[key][s])


def _addendum(c: _Case, rng: np.random.Generator, s: int) -> tuple[dict[str, str], str, str]:
    """(initial findings, initial conclusion, addendum text) for a report whose diagnosis is later revised."""
    if c.gca:
        wrong = _Case(False, False, False, c.intimal, "negative", c.age, c.female, c.side, False)
        found = "giant cells and " if c.giant_cells else ""
        text = (f"ADDENDUM: Deeper levels show {found}lymphohistiocytic inflammation of the media with "
                "fragmentation of the internal elastic lamina. REVISED DIAGNOSIS: giant cell arteritis.")
    else:
        wrong = _Case(True, False, True, c.intimal, "equivocal", c.age, c.female, c.side, False)
        text = ("ADDENDUM: EVG stain and deeper levels show an intact internal elastic lamina and no arteritis. "
                "REVISED DIAGNOSIS: negative for giant cell arteritis.")
    if s == 1 and rng.random() < 0.5:
        text = text.replace("ADDENDUM", "Addendum").replace("REVISED DIAGNOSIS", "revised dx")
    return _findings(wrong, rng, s), _pick(rng, CONCLUSION["gca" if wrong.gca else "equivocal"][s]), text


def _typos(text: str, rng: np.random.Generator, n: int) -> str:
    """Swap two letters inside ``n`` random words of 5+ letters."""
    words = text.split(" ")
    long_words = [i for i, w in enumerate(words) if len(w) >= 5 and w.isalpha()]
    for i in rng.choice(long_words, size=min(n, len(long_words)), replace=False) if long_words else []:
        w = words[i]
        j = int(rng.integers(1, len(w) - 2))
        words[i] = w[:j] + w[j + 1] + w[j] + w[j + 2 :]
    return " ".join(words)


def _render_a(c: _Case, rng: np.random.Generator) -> str:
    f = _findings(c, rng, 0)
    conclusion, addendum = _conclusion(c, rng, 0), ""
    if c.addendum:
        f, conclusion, addendum = _addendum(c, rng, 0)
    sex = "woman" if c.female else "man"
    sym = ", ".join(rng.choice(SYMPTOMS, size=int(rng.integers(1, 4)), replace=False))
    length, diam = rng.uniform(0.4, 3.5), rng.uniform(0.1, 0.4)
    parts = [
        f"SPECIMEN: {c.side.capitalize()} temporal artery, biopsy.",
        f"CLINICAL HISTORY: {c.age}-year-old {sex} with {sym}. Rule out giant cell arteritis.",
        f"GROSS DESCRIPTION: Received in formalin is a segment of tan {'tubular ' if rng.random() < 0.5 else ''}"
        f"tissue measuring {length:.1f} cm in length and {diam:.1f} cm in diameter. Serially cross-sectioned "
        "and entirely submitted.",
    ]
    if c.kind == "wrong_tissue":
        parts.append("MICROSCOPIC: Sections show a thin-walled vein and fibroadipose tissue. No artery is present.")
    elif rng.random() < 0.7:  # synoptic
        parts.append("MICROSCOPIC (synoptic):\nArtery present: yes\n"
                     f"Levels examined: {int(rng.integers(3, 9))}\nIntima: {f['intima']}\n"
                     f"Internal elastic lamina: {f['iel']}\nMedia: {f['media']}\nAdventitia: {f['adventitia']}\n"
                     f"Giant cells: {f['giant']}")
    else:  # narrative
        order = rng.permutation(["intima", "iel", "media", "adventitia", "giant"])
        parts.append("MICROSCOPIC: Sections show a medium-sized muscular artery. " + " ".join(f[k] for k in order))
    parts.append(f"DIAGNOSIS:\n{c.side.capitalize()} temporal artery, biopsy:\n- {conclusion}")
    if c.intimal and c.kind not in ("active", "healed", "wrong_tissue") and rng.random() < 0.5:
        parts.append("- Atherosclerosis with age-related intimal thickening.")
    if addendum:
        parts.append(addendum)
    text = "\n".join(parts)
    if rng.random() < 0.05:
        text = _typos(text, rng, int(rng.integers(1, 3)))
    return text


def _render_b(c: _Case, rng: np.random.Generator) -> str:
    f = _findings(c, rng, 1)
    conclusion, addendum = _conclusion(c, rng, 1), ""
    if c.addendum:
        f, conclusion, addendum = _addendum(c, rng, 1)
    side = {"left": "L", "right": "R", "bilateral": "bilat"}[c.side]
    if c.kind == "wrong_tissue":
        body = "sections show vein + fat only."
    else:
        keep = [k for k in ("giant", "iel", "media", "intima", "adventitia")
                if k == "giant" or rng.random() < 0.8 or (k == "intima" and c.intimal)
                or (k == "adventitia" and c.adventitial)]
        body = " ".join(f[k] for k in rng.permutation(keep))
    if rng.random() < 0.15 and not addendum:  # terse one-liner
        text = f"{side} TA bx: {conclusion} {body}"
    else:
        sex = "F" if c.female else "M"
        sym = " + ".join(rng.choice(SYMPTOMS_B, size=int(rng.integers(1, 3)), replace=False))
        hx = _pick(rng, (f"Hx: {c.age}{sex}, {sym}, ESR {int(rng.integers(10, 120))}. ?GCA",
                         f"{c.age} yo {sex} w/ {sym}, r/o GCA."))
        macro = _pick(rng, (f"Macro: {side} TA, {rng.uniform(0.4, 3.5):.1f} cm, all embedded.",
                            f"Gross: single tan vessel segment {rng.uniform(0.4, 3.5):.1f}cm, ES in 1 cassette."))
        micro = _pick(rng, ("Micro: ", "Sections show a muscular artery. ", "Micro - levels x3: "))
        dx = _pick(rng, ("Dx: ", "IMPRESSION: ", "Conclusion: "))
        text = f"{hx}\n{macro}\n{micro}{body}\n{dx}{conclusion}"
        if addendum:
            text += f"\n{addendum}"
    if rng.random() < 0.15:
        text = _typos(text, rng, int(rng.integers(1, 4)))
    if rng.random() < 0.12:
        text = text.upper()
    return text


def generate_report(
    rng: np.random.Generator, *, site: str, truth: dict[str, bool] | None = None
) -> tuple[str, dict[str, int], dict[str, float]]:
    """Draw one biopsy and write its report.

    ``truth`` fixes any subset of :data:`REPORT_LABELS` (e.g. ``{"gca": True}`` from a cohort generator); the
    rest are drawn conditionally. Returns ``(text, labels, p_text)``: ``labels`` maps each label to 0/1, and
    ``p_text`` gives the probability each label is 1 given what the text says (see the module docstring).
    """
    name = site.removeprefix("SITE//")
    if name not in SITES:
        raise ValueError(f"unknown site '{site}'; expected one of {list(SITES)}")
    c = _draw_case(rng, truth)
    text = _render_a(c, rng) if name == "A" else _render_b(c, rng)
    labels = {
        "adventitial_inflammation": int(c.adventitial),
        "giant_cells": int(c.giant_cells),
        "intimal_hyperplasia": int(c.intimal),
        "gca": int(c.gca),
    }
    p_text = {k: float(v) for k, v in labels.items()}
    if c.kind == "equivocal":
        p_text["gca"] = P_GCA_GIVEN_EQUIVOCAL
    return text, labels, p_text


GRAMMARS = ("base", "alt")


def generate_reports(n: int, seed: int = 0, site: str = "A", grammar: str = "base") -> pd.DataFrame:
    """``n`` reports from one site: report_id, site, text, the four labels (int 0/1) and ``p_text_gca``.

    The same ``(n, seed, site, grammar)`` gives the same frame. ``grammar="alt"`` writes the reports with
    the independent second grammar of :mod:`ehrseq.synth.reports_alt` (same frame, for out-of-style tests).
    """
    if grammar not in GRAMMARS:
        raise ValueError(f"unknown report grammar '{grammar}'; expected one of {list(GRAMMARS)}")
    if grammar == "alt":
        from ehrseq.synth.reports_alt import generate_alt_reports

        return generate_alt_reports(n, seed=seed, site=site)
    if n < 0:
        raise ValueError("n must be non-negative")
    name = site.removeprefix("SITE//")
    if name not in SITES:
        raise ValueError(f"unknown site '{site}'; expected one of {list(SITES)}")
    rng = np.random.default_rng([seed, SITES.index(name)])
    rows = []
    for i in range(n):
        text, labels, p_text = generate_report(rng, site=name)
        rows.append({"report_id": f"TAB-{name}{seed}-{i:06d}", "site": name, "text": text, **labels,
                     "p_text_gca": p_text["gca"]})
    cols = ["report_id", "site", "text", *REPORT_LABELS, "p_text_gca"]
    return pd.DataFrame(rows, columns=cols).astype({k: "int64" for k in REPORT_LABELS})
