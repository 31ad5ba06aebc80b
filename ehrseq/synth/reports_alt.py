"""A second, independent grammar of temporal artery biopsy reports (the "alt" grammar), for out-of-style tests.

:mod:`ehrseq.synth.reports` writes the reports the classifier is trained on. This module writes reports of
the same four labels in phrasings that grammar never uses (``tests/test_reports_alt.py`` checks that the two
share no normalised sentence): other headings and section orders (summary first, "Histology", "Opinion",
"Supplementary report"), four layouts (a findings grid, free narrative, a letter to the clinician, very short
reports), other words for each finding and for its absence ("Langhans-type multinucleate histiocytes",
"neointimal fibroplasia", "devoid of", "nil"), negations whose scope spans a list or several clauses
("neither ... nor", "no A, B or C", "A and B are both absent"), "no evidence of", hedges ("cannot be
excluded", "indeterminate"), abbreviations, typos and upper case.

Latent findings are drawn first (``gca`` about 27 %) and every construction is labelled by meaning:

* ``healed``: treated / healed arteritis, ``gca`` 1 without giant cells;
* ``foreign_body``: giant cells (label 1) of foreign-body type around calcium or suture, ``gca`` 0;
* ``necrotising``: a necrotising arteritis of another kind (polyarteritis-, ANCA-type), transmural with the
  adventitia involved (``adventitial_inflammation`` 1), no giant cells, ``gca`` 0;
* ``non_arterial``: no artery in the specimen (nerve, vein, fat): every label 0;
* ``equivocal``: sparse adventitial lymphocytes and a hedged conclusion: ``gca`` is the latent truth and
  ``p_text_gca`` the probability a perfect reader could give;
* addenda revise the first diagnosis (both ways); the labels are the revised ones. A clinical history of
  GCA or "?GCA" in the request never sets a label.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ehrseq.codes import BIOPSY_LABELS
from ehrseq.errors import ConfigError

ALT_LABELS: tuple[str, ...] = tuple(BIOPSY_LABELS)
ALT_SITES = ("A", "B")  # two style mixes of the alt grammar
ALT_KINDS = ("active", "healed", "negative", "isolated_adventitial", "foreign_body", "necrotising",
             "non_arterial", "equivocal")
LAYOUTS = ("grid", "narrative", "letter", "short")
_LAYOUT_P = {"A": (0.45, 0.25, 0.2, 0.1), "B": (0.15, 0.4, 0.15, 0.3)}
P_GCA = 0.27
P_HEDGE = {True: 0.07, False: 0.03}
P_GCA_GIVEN_HEDGE = P_GCA * P_HEDGE[True] / (P_GCA * P_HEDGE[True] + (1 - P_GCA) * P_HEDGE[False])


@dataclass
class AltCase:
    """The latent findings of one biopsy and how its report is written."""

    gca: bool
    giant_cells: bool
    adventitial: bool
    intimal: bool
    kind: str
    age: int
    female: bool
    side: str
    revision: str = ""  # "", "to_positive" or "to_negative": an addendum revises the first diagnosis
    layout: str = "narrative"

    def labels(self) -> dict[str, int]:
        """The four labels (0/1) of the (revised) report."""
        return {"adventitial_inflammation": int(self.adventitial), "giant_cells": int(self.giant_cells),
                "intimal_hyperplasia": int(self.intimal), "gca": int(self.gca)}


def _pick(rng: np.random.Generator, options: tuple[str, ...] | list[str]) -> str:
    return options[int(rng.integers(len(options)))]


def draw_alt_case(rng: np.random.Generator, site: str = "A", kind: str | None = None,
                  revision: str | None = None, layout: str | None = None) -> AltCase:
    """Draw one biopsy's latent findings; ``kind`` / ``revision`` / ``layout`` fix a construction (for tests)."""
    if kind is not None and kind not in ALT_KINDS:
        raise ConfigError(f"unknown alt report kind '{kind}'; expected one of {list(ALT_KINDS)}")
    if layout is not None and layout not in LAYOUTS:
        raise ConfigError(f"unknown alt report layout '{layout}'; expected one of {list(LAYOUTS)}")
    age = int(np.clip(rng.normal(73, 7), 52, 94))
    female, side = bool(rng.random() < 0.68), _pick(rng, ("left", "right", "right", "left", "bilateral"))
    if kind is None:
        gca = bool(rng.random() < P_GCA)
        u = rng.random()
        if gca:
            kind = "healed" if u < 0.14 else "active"
        else:
            kind = ("necrotising" if u < 0.02 else "foreign_body" if u < 0.035 else "non_arterial" if u < 0.065
                    else "isolated_adventitial" if u < 0.13 else "negative")
        if kind in ("active", "negative") and rng.random() < P_HEDGE[gca]:
            kind = "equivocal"
    else:
        gca = kind in ("active", "healed") or (kind == "equivocal" and bool(rng.random() < P_GCA_GIVEN_HEDGE))
    p_intimal = 0.12 + 0.55 / (1 + np.exp(-(age - 73) / 5))
    gc = kind == "foreign_body" or (kind == "active" and bool(rng.random() < 0.65))
    adv = {"active": bool(rng.random() < 0.85), "healed": bool(rng.random() < 0.4), "negative": False,
           "isolated_adventitial": True, "foreign_body": False, "necrotising": True, "non_arterial": False,
           "equivocal": True}[kind]
    intimal = (kind != "non_arterial") and bool(rng.random() < {"active": 0.7, "healed": 0.92}.get(kind, p_intimal))
    if revision is None:
        ok = kind in ("active", "negative", "isolated_adventitial")
        revision = ("to_positive" if gca else "to_negative") if ok and rng.random() < 0.06 else ""
    elif revision and ((revision == "to_positive") != (kind == "active") or kind not in
                       ("active", "negative", "isolated_adventitial")):
        raise ConfigError("revision 'to_positive' needs kind 'active'; 'to_negative' needs 'negative' or "
                          "'isolated_adventitial'")
    if layout is None:
        layout = LAYOUTS[int(rng.choice(4, p=_LAYOUT_P[site]))]
    if revision and layout == "short":
        layout = "narrative"
    return AltCase(gca, gc, adv, intimal, kind, age, female, side, revision, layout)


# ------------------------------------------------------------------ words for findings and their absence
GC_POS = ("Langhans-type multinucleate histiocytes lie along the damaged elastica",
          "several multinucleate giant histiocytes are found in the media",
          "giant cell forms are readily found at the intimomedial junction",
          "MNGCs are present in two of the levels", "multinucleated histiocytic cells are scattered in the wall")
GC_NOUN = ("multinucleate giant cells", "giant histiocytes", "Langhans-type cells", "MNGCs", "giant cell forms")
ADV_POS = ("the outer coat is cuffed by lymphocytes and plasma cells",
           "periadventitial lymphocytic aggregates surround the vasa vasorum",
           "chronic inflammatory cells infiltrate the adventitial layer",
           "the adventitia is peppered with lymphocytes and macrophages")
ADV_NOUN = ("adventitial lymphocytes", "periadventitial inflammation", "inflammation of the outer coat",
            "adventitial infiltrates")
INT_POS = ("the intima is expanded by loose fibrous tissue ({sev})", "there is {sev} neointimal fibroplasia",
           "{sev} concentric intimal fibrosis narrows the lumen", "the lumen is compromised by {sev} myointimal "
           "proliferation")
INT_NOUN = ("intimal fibrosis", "neointimal proliferation", "intimal expansion", "myointimal thickening")
SEV = ("slight", "modest", "prominent", "severe", "patchy")
NEG_LIST = ("There is no {x}", "We see no {x}", "No {x} are evident on any level", "The sections show no {x}",
            "Not seen: {x}", "No evidence of {x} in the levels examined", "Nil {x}")
NEG_ONE = ("{X} are not a feature", "{X} are absent", "the wall is devoid of {x}", "{X}: not found",
           "{X} are not present in any level", "the sections lack {x}")


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _join(items: list[str], last: str) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + f" {last} " + items[-1]


def _finding_sentences(c: AltCase, rng: np.random.Generator) -> tuple[list[str], list[str]]:
    """(positive findings one by one, the absent ones in one negation whose scope spans them all)."""
    sev = _pick(rng, SEV)
    pos, neg = [], []
    for present, p_pool, nouns in ((c.giant_cells, GC_POS, GC_NOUN), (c.adventitial, ADV_POS, ADV_NOUN),
                                   (c.intimal, INT_POS, INT_NOUN)):
        if present:
            pos.append(_pick(rng, p_pool).format(sev=sev))
        else:
            neg.append(_pick(rng, nouns))
    if c.kind == "foreign_body":
        pos = [s for s in pos if s not in GC_POS] + [_pick(rng, (
            "foreign-body type giant cells engulf flecks of medial calcium",
            "a suture granuloma with foreign-body giant cells sits in the periarterial fat"))]
    if c.kind == "necrotising":
        pos = [s for s in pos if s not in ADV_POS] + [_pick(rng, (
            "fibrinoid necrosis of the wall with a neutrophil-rich transmural infiltrate reaching the adventitia",
            "segmental necrotising inflammation involves all three coats, adventitia included"))]
    if c.kind in ("active",):
        pos.append(_pick(rng, ("the elastica is split and frayed", "granulomatous panarteritis is present",
                               "histiocytes and lymphocytes infiltrate the media")))
    if c.kind == "healed":
        pos.append(_pick(rng, ("medial scarring and elastic loss point to burnt-out arteritis",
                               "the media is replaced by scar with a patchy loss of elastica")))
    out = [_cap(s) + "." for s in pos]
    rng.shuffle(out)
    negs: list[str] = []
    if len(neg) > 1 and rng.random() < 0.5:
        words = _join(neg, "nor")
        negs.append(_pick(rng, (f"Neither {words} can be demonstrated.", f"We could find neither {words}.")))
    elif neg:
        if rng.random() < 0.6 or len(neg) == 1 and rng.random() < 0.5:
            negs.append(_pick(rng, NEG_LIST).format(x=_join(neg, "or")) + ".")
        else:
            joined = _join(neg, "and")
            negs.append(_cap(_pick(rng, NEG_ONE).format(x=joined, X=_cap(joined))) + ".")
    if c.kind not in ("active", "necrotising") and rng.random() < 0.5:
        negs.append(_pick(rng, ("The elastica is preserved throughout.", "Elastic stains show an intact lamina.")))
    if c.kind == "necrotising" or c.kind == "foreign_body":
        negs.append(_pick(rng, ("There is no granulomatous panarteritis of giant cell type.",
                                "Granulomatous arteritis of cranial type is not seen.")))
    return out, negs


CONCLUSIONS = {
    "active": ("Temporal arteritis, giant cell type.", "Granulomatous arteritis in keeping with GCA.",
               "Appearances are those of giant cell (cranial) arteritis.", "Active Horton arteritis."),
    "healed": ("Healed arteritis: treated giant cell arteritis with scarring.",
               "Burnt-out (steroid-modified) GCA; no active inflammation now."),
    "negative": ("No arteritis.", "Normal temporal artery for age; no evidence of arteritis.",
                 "Temporal artery without vasculitis.", "No features of giant cell arteritis in these levels."),
    "isolated_adventitial": ("Adventitial lymphocytes only; insufficient for a diagnosis of arteritis.",
                             "Periadventitial inflammation alone, not arteritis of giant cell type."),
    "foreign_body": ("Foreign-body giant cell reaction only; no arteritis of giant cell type.",),
    "necrotising": ("Necrotising arteritis, favour polyarteritis nodosa or ANCA-associated vasculitis; "
                    "not giant cell arteritis.", "Necrotising (non-granulomatous) vasculitis, not of giant cell "
                    "type."),
    "non_arterial": ("No artery sampled; the specimen is inadequate to assess arteritis.",
                     "Specimen comprises nerve and fat only; no arterial tissue represented."),
    "equivocal": ("Early or treated GCA cannot be excluded on this material.",
                  "Indeterminate for arteritis; please correlate with the clinical picture.",
                  "Possible early giant cell arteritis, not definitive."),
}
NON_ARTERIAL_BODY = ("The sections show a peripheral nerve twig in fibrofatty tissue.",
                     "Only a thin-walled venous channel and fat are represented.",
                     "The tissue is skin and subcutis with no muscular vessel.")
HISTORY = ("sudden headache, ?GCA", "jaw pain on chewing, query temporal arteritis",
           "known PMR, to exclude GCA", "previous GCA on prednisolone, ?relapse", "visual loss, elevated CRP",
           "temporal tenderness, rule out arteritis")


def _revision_text(c: AltCase, rng: np.random.Generator) -> str:
    head = _pick(rng, ("SUPPLEMENTARY REPORT", "Amended report", "Addendum 1 (further levels)"))
    if c.revision == "to_positive":
        gc = ("reveal multinucleate giant histiocytes along a split elastica" if c.giant_cells else
              "reveal granulomatous inflammation of the media, although giant cells are still not found")
        adv = " and the outer coat is now cuffed by lymphocytes" if c.adventitial else ""
        return f"{head}: Deeper sections {gc}{adv}. The diagnosis is amended to giant cell arteritis."
    return (f"{head}: On review with elastic stains the cells previously taken for giant cells are tangentially "
            "cut smooth muscle, and the elastica is intact. Amended conclusion: no arteritis.")


def _first_version(c: AltCase) -> AltCase:
    """The case as first reported, before an addendum revises it."""
    if c.revision == "to_positive":
        kind = "isolated_adventitial" if c.adventitial else "negative"
        return AltCase(False, False, c.adventitial, c.intimal, kind, c.age, c.female, c.side, "", c.layout)
    if c.revision == "to_negative":
        return AltCase(True, True, c.adventitial, c.intimal, "active", c.age, c.female, c.side, "", c.layout)
    return c


def _typos(text: str, rng: np.random.Generator, n: int) -> str:
    """Drop or double one letter inside ``n`` random words of 6+ letters."""
    words = text.split(" ")
    idx = [i for i, w in enumerate(words) if len(w) >= 6 and w.isalpha()]
    for i in rng.choice(idx, size=min(n, len(idx)), replace=False) if idx else []:
        w, j = words[i], int(rng.integers(1, len(words[i]) - 1))
        words[i] = w[:j] + w[j + 1:] if rng.random() < 0.5 else w[:j] + w[j] + w[j:]
    return " ".join(words)


ABBREVIATIONS = (("giant cell arteritis", "GCA"), ("inflammation", "infl."), ("lymphocytes", "lymphs"),
                 ("multinucleate", "MN"), ("without", "w/o"), ("temporal artery", "temp. art."),
                 ("adventitia", "advent."), ("histiocytes", "histios"))


def _abbreviate(text: str) -> str:
    for long, short in ABBREVIATIONS:
        text = text.replace(long, short)
    return text


def render_alt(c: AltCase, rng: np.random.Generator, noise: bool = True) -> str:
    """Write the report of ``c`` in its layout (the addendum, if any, after the first version).

    ``noise=False`` leaves out the random abbreviations, typos and upper case (for hand-checked cases)."""
    first = _first_version(c)
    pos, negs = ([_pick(rng, NON_ARTERIAL_BODY)], []) if first.kind == "non_arterial" else \
        _finding_sentences(first, rng)
    body = pos + negs if rng.random() < 0.7 else negs + pos
    concl = _pick(rng, CONCLUSIONS[first.kind])
    sex = "female" if c.female else "male"
    hist = _pick(rng, HISTORY)
    if c.layout == "short":
        lead = _pick(rng, ("TAB", "Temporal a. bx", f"{c.side[0].upper()} TAB"))
        keep = pos + [s for s in negs if rng.random() < 0.3]  # every positive finding is stated
        text = f"{lead} - {concl} " + " ".join(keep)
    elif c.layout == "grid":
        order = rng.permutation(3)
        sections = [f"Clinical details: {c.age} {sex}, {hist}.",
                    f"Nature of specimen: {c.side} superficial temporal artery, {rng.uniform(0.5, 3.0):.1f} cm "
                    "segment, all blocked.",
                    "Histology:\n" + "\n".join(f"  * {s}" for s in body)]
        summary = f"SUMMARY - {concl}"
        parts = [sections[i] for i in order]
        text = "\n".join([summary, *parts] if rng.random() < 0.5 else [*parts, f"Opinion: {concl}"])
    elif c.layout == "letter":
        text = (f"Thank you for sending this {c.side} temporal artery from your {c.age}-year-old {sex} "
                f"patient ({hist}). " + " ".join(body) + f" In summary: {concl} With kind regards.")
    else:
        text = (f"Request: {hist}. The specimen is a {rng.uniform(0.5, 3.0):.1f} cm length of {c.side} temporal "
                "artery cut into rings. " + " ".join(body) + f"\nComment: {concl}")
    if c.revision:
        text += "\n" + _revision_text(c, rng)
    if noise and rng.random() < 0.15:
        text = _abbreviate(text)
    if noise and rng.random() < 0.08:
        text = _typos(text, rng, int(rng.integers(1, 3)))
    if noise and rng.random() < 0.08:
        text = text.upper()
    return text


def generate_alt_report(rng: np.random.Generator, *, site: str = "A", kind: str | None = None,
                        revision: str | None = None, layout: str | None = None, noise: bool = True
                        ) -> tuple[str, dict[str, int], dict[str, float]]:
    """One alt-grammar report: ``(text, labels, p_text)`` as :func:`ehrseq.synth.reports.generate_report`.

    ``kind`` (one of :data:`ALT_KINDS`), ``revision`` (``""``, ``"to_positive"``, ``"to_negative"``) and
    ``layout`` (one of :data:`LAYOUTS`) fix a construction; left ``None`` they are drawn. ``noise=False``:
    no random abbreviations, typos or upper case.
    """
    _check_site(site)
    c = draw_alt_case(rng, site, kind, revision, layout)
    labels = c.labels()
    p_text = {k: float(v) for k, v in labels.items()}
    if c.kind == "equivocal":
        p_text["gca"] = P_GCA_GIVEN_HEDGE
    return render_alt(c, rng, noise), labels, p_text


def generate_alt_reports(n: int, seed: int = 0, site: str = "A") -> pd.DataFrame:
    """``n`` alt-grammar reports in :func:`ehrseq.synth.reports.generate_reports`'s frame (same columns).

    The same ``(n, seed, site)`` gives the same frame; report ids start ``TAB-ALT``.
    """
    if n < 0:
        raise ConfigError(f"n must be non-negative (got {n})")
    name = _check_site(site)
    rng = np.random.default_rng([seed, ALT_SITES.index(name), 7919])
    rows = []
    for i in range(n):
        text, labels, p_text = generate_alt_report(rng, site=name)
        rows.append({"report_id": f"TAB-ALT-{name}{seed}-{i:06d}", "site": name, "text": text, **labels,
                     "p_text_gca": p_text["gca"]})
    cols = ["report_id", "site", "text", *ALT_LABELS, "p_text_gca"]
    return pd.DataFrame(rows, columns=cols).astype({k: "int64" for k in ALT_LABELS})


def _check_site(site: str) -> str:
    name = site.removeprefix("SITE//")
    if name not in ALT_SITES:
        raise ConfigError(f"unknown site '{site}' for the alt report grammar; expected one of {list(ALT_SITES)}")
    return name
