"""Wordings of temporal artery biopsy statements for the grammar-B paraphraser (:mod:`.paraphrase_alt`).

Every statement family names what it asserts as ``(concept, polarity)`` pairs. ``source`` holds the phrasings
of the alt report grammar (:mod:`ehrseq.synth.reports_alt`), written here in *normalised* form (abbreviations
expanded, UK spelling, "GCA" spelt out): they are recognised, never written. ``mine`` (sentences) and
``short`` (synoptic / terse lines) are independent wordings of the same meaning, recognised and written.

Concepts: the four labels (:data:`ehrseq.codes.BIOPSY_LABELS`) and ``healed_arteritis``,
``foreign_body_giant_cells``, ``necrotising_arteritis``, ``wrong_tissue``, ``granulomatous_inflammation``,
``medial_inflammation``, ``elastic_fragmentation``. Polarities: :data:`POLARITIES`.

Placeholders: ``{sev}`` a severity word, ``{x}`` a list of finding nouns, ``{n}`` one finding noun, ``{side}``,
``{len}``, ``{age}``, ``{sex}``, ``{hist}``; a capitalised placeholder (``{Sev}``) is written capitalised.
:func:`normalise` turns a report into the normalised form the patterns are written in.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache
from string import ascii_lowercase
from typing import NamedTuple

AFF, ABS, HEDGED, REQUEST, HISTORY = "affirmed", "absent", "hedged", "request", "history"
POLARITIES = (AFF, ABS, HEDGED, REQUEST, HISTORY)  # request: a clinical question; history: a past diagnosis
GC, ADV, INT, GCA = "giant_cells", "adventitial_inflammation", "intimal_hyperplasia", "gca"
SECTIONS = ("clinical", "specimen", "micro", "conclusion", "addendum", "other")


class Family(NamedTuple):
    """One kind of statement: its slot name, report section, assertions and wordings."""

    slot: str
    section: str
    assertions: tuple[tuple[str, str], ...]
    source: tuple[str, ...]
    mine: tuple[str, ...]
    short: tuple[str, ...] = ()


# Severity words: grammar B's and mine; SEV_SWAP maps each to words of about the same degree.
SEV_SWAP = {"slight": ("mild", "minimal"), "modest": ("moderate",), "prominent": ("marked", "conspicuous"),
            "severe": ("marked", "severe"), "patchy": ("focal", "patchy"), "mild": ("slight", "minimal"),
            "minimal": ("mild",), "moderate": ("modest", "moderate"), "marked": ("prominent", "severe"),
            "conspicuous": ("marked",), "focal": ("patchy",)}

# Finding nouns by concept: grammar B's then mine (only mine are written). Used inside negation scopes.
NOUNS_SOURCE = {
    GC: ("multinucleate giant cells", "giant histiocytes", "langhans-type cells", "mngcs", "giant cell forms"),
    ADV: ("adventitial lymphocytes", "periadventitial inflammation", "inflammation of the outer coat",
          "adventitial infiltrates"),
    INT: ("intimal fibrosis", "neointimal proliferation", "intimal expansion", "myointimal thickening"),
}
NOUNS_MINE = {
    GC: ("giant cells", "multinucleated giant cells", "langhans giant cells", "multinucleated histiocytes"),
    ADV: ("adventitial inflammation", "adventitial chronic inflammation", "inflammatory cells in the adventitia",
          "an adventitial lymphocytic infiltrate", "periadventitial lymphocytic infiltrates"),
    INT: ("intimal hyperplasia", "intimal thickening", "fibrointimal hyperplasia", "fibrointimal proliferation",
          "fibro-intimal thickening", "intimal fibroplasia", "intimal proliferation"),
}
SYNOPTIC_NAME = {GC: ("Giant cells", "Multinucleated giant cells"),
                 ADV: ("Adventitial inflammation", "Adventitial infiltrate"),
                 INT: ("Intimal hyperplasia", "Intimal thickening")}

# Negation frames around a list of nouns: (frame, joiner of the last item). Grammar B's are recognised only.
NEG_FRAMES_SOURCE = ("there is no {x}", "we see no {x}", "no {x} are evident on any level", "the sections show no {x}",
                     "not seen: {x}", "no evidence of {x} in the levels examined", "nil {x}", "{x} are not a feature",
                     "{x} are absent", "the wall is devoid of {x}", "{x}: not found", "{x} are not present in any level",
                     "the sections lack {x}", "neither {x} can be demonstrated", "we could find neither {x}")
NEG_FRAMES_MINE = (("No {x} identified", "or"), ("No {x} seen", "or"), ("There is no evidence of {x}", "or"),
                   ("{X} are not identified", "and"), ("No {x} is present", "or"), ("Negative for {x}", "and"),
                   ("Sections show no {x}", "or"), ("{X} are not seen in any of the levels", "and"),
                   ("Neither {x} is identified", "nor"))
NEG_SHORT_MINE = (("{N}: not identified", ""), ("{N}: absent", ""), ("{N}: none seen", ""), ("No {n}", ""))
AFF_SHORT_MINE = ("{N}: present", "{N}: identified", "{N} present")

_EL = "internal elastic lamina"
FAMILIES: tuple[Family, ...] = (
    # ---------------------------------------------------------------- microscopy: positive findings
    Family("gc_pos", "micro", ((GC, AFF),),
           ("langhans-type multinucleate histiocytes lie along the damaged elastica",
            "several multinucleate giant histiocytes are found in the media",
            "giant cell forms are readily found at the intimomedial junction", "mngcs are present in two of the levels",
            "multinucleated histiocytic cells are scattered in the wall"),
           ("Multinucleated giant cells are identified in the media", f"Occasional giant cells are seen near the {_EL}",
            "Scattered multinucleated giant cells are present", "There are several Langhans giant cells in the wall",
            "Multinucleate giant cells are noted at the intima-media junction",
            "Giant cells of Langhans type are present in the inflamed wall"),
           ("Giant cells: present", "Multinucleated giant cells: identified", "Giant cells present")),
    Family("adv_pos", "micro", ((ADV, AFF),),
           ("the outer coat is cuffed by lymphocytes and plasma cells",
            "periadventitial lymphocytic aggregates surround the vasa vasorum",
            "chronic inflammatory cells infiltrate the adventitial layer",
            "the adventitia is peppered with lymphocytes and macrophages"),
           ("There is a lymphocytic infiltrate in the adventitia", "The adventitia contains chronic inflammatory cells",
            "Adventitial chronic inflammation is present", "A lymphoplasmacytic infiltrate is seen in the adventitia",
            "Lymphocytes and plasma cells infiltrate the adventitia",
            "A perivascular lymphocytic infiltrate is present in the adventitia"),
           ("Adventitial inflammation: present", "Adventitial infiltrate: identified", "Adventitial inflammation present")),
    Family("int_pos", "micro", ((INT, AFF),),
           ("the intima is expanded by loose fibrous tissue ({sev})", "there is {sev} neointimal fibroplasia",
            "{sev} concentric intimal fibrosis narrows the lumen", "the lumen is compromised by {sev} myointimal proliferation"),
           ("There is {sev} intimal hyperplasia", "The intima shows {sev} fibrous thickening",
            "{Sev} intimal thickening is present", "{Sev} fibrointimal hyperplasia is seen",
            "The lumen is narrowed by {sev} intimal hyperplasia", "There is {sev} fibro-intimal thickening",
            "The intima is thickened by fibrous tissue ({sev})", "{Sev} intimal proliferation narrows the lumen",
            "Intimal fibroplasia ({sev}) is noted"),
           ("Intimal hyperplasia: present ({sev})", "Intimal thickening: {sev}", "{Sev} intimal hyperplasia",
            "Intima: {sev} fibrous thickening")),
    Family("fb_calcium", "micro", (("foreign_body_giant_cells", AFF), (GC, AFF)),
           ("foreign-body type giant cells engulf flecks of medial calcium",),
           ("Foreign body type giant cells surround foci of medial calcification",
            "There is a foreign body giant cell reaction to calcium deposits in the media",
            "Multinucleated foreign body giant cells lie around calcified debris in the media")),
    Family("fb_suture", "micro", (("foreign_body_giant_cells", AFF), (GC, AFF)),
           ("a suture granuloma with foreign-body giant cells sits in the periarterial fat",),
           ("There is a foreign body giant cell reaction to suture material in the surrounding soft tissue",
            "Foreign body giant cells surround suture material in the fat beside the artery")),
    Family("necrotising", "micro", (("necrotising_arteritis", AFF), (ADV, AFF)),
           ("fibrinoid necrosis of the wall with a neutrophil-rich transmural infiltrate reaching the adventitia",
            "segmental necrotising inflammation involves all three coats, adventitia included"),
           ("There is fibrinoid necrosis of the wall with a transmural neutrophilic infiltrate extending into the "
            "adventitia", "Necrotising inflammation involves the full thickness of the wall, including the adventitia",
            "Segmental fibrinoid necrosis is present, with neutrophils and nuclear debris in the media and adventitia")),
    Family("elastic_split", "micro", (("elastic_fragmentation", AFF),),
           ("the elastica is split and frayed",),
           (f"The {_EL} is fragmented", f"There is fragmentation of the {_EL}",
            f"An elastic stain shows disruption of the {_EL}"), ("Internal elastic lamina: fragmented",)),
    Family("granulomatous", "micro", (("granulomatous_inflammation", AFF),),
           ("granulomatous panarteritis is present",),
           ("There is granulomatous inflammation of the arterial wall", "The arterial wall shows granulomatous inflammation",
            "A granulomatous inflammatory infiltrate is present in the arterial wall")),
    Family("medial_infl", "micro", (("medial_inflammation", AFF),),
           ("histiocytes and lymphocytes infiltrate the media",),
           ("The media is infiltrated by lymphocytes and histiocytes", "A lymphohistiocytic infiltrate involves the media",
            "There is chronic inflammation of the media with histiocytes")),
    Family("healed", "micro", (("healed_arteritis", AFF),),
           ("medial scarring and elastic loss point to burnt-out arteritis",
            "the media is replaced by scar with a patchy loss of elastica"),
           (f"There is medial fibrosis with patchy loss of the {_EL}, in keeping with healed arteritis",
            f"The media is scarred, with focal destruction of the {_EL}, consistent with previous (healed) arteritis",
            f"Medial scarring and loss of the {_EL} indicate a healed arteritis")),
    Family("wrong_nerve", "micro", (("wrong_tissue", AFF),),
           ("the sections show a peripheral nerve twig in fibrofatty tissue",),
           ("Sections show a small peripheral nerve within fibroadipose tissue",
            "The tissue consists of a nerve bundle and fat")),
    Family("wrong_vein", "micro", (("wrong_tissue", AFF),),
           ("only a thin-walled venous channel and fat are represented",),
           ("Only a thin-walled vein and adipose tissue are present", "Sections show a vein within fatty tissue")),
    Family("wrong_skin", "micro", (("wrong_tissue", AFF),),
           ("the tissue is skin and subcutis with no muscular vessel",),
           ("Sections show skin and subcutaneous fat only; no muscular vessel is seen",
            "The specimen is skin with subcutis and contains no muscular vessel")),
    # ---------------------------------------------------------------- microscopy: negative statements
    Family("elastica_intact", "micro", (("elastic_fragmentation", ABS),),
           ("the elastica is preserved throughout", "elastic stains show an intact lamina"),
           (f"The {_EL} is intact", f"An elastic stain shows an intact {_EL}",
            f"Elastic van Gieson staining shows a preserved {_EL}"), ("Internal elastic lamina: intact",)),
    Family("no_gca_pattern", "micro", ((GCA, ABS),),
           ("there is no granulomatous panarteritis of giant cell type",
            "granulomatous arteritis of cranial type is not seen"),
           ("There is no granulomatous arteritis of giant cell type", "Features of giant cell arteritis are not seen",
            "There is no evidence of giant cell (temporal) arteritis")),
    # ---------------------------------------------------------------- conclusions
    Family("dx_active", "conclusion", ((GCA, AFF),),
           ("temporal arteritis, giant cell type", "granulomatous arteritis in keeping with giant cell arteritis",
            "appearances are those of giant cell (cranial) arteritis", "active horton arteritis"),
           ("Giant cell arteritis", "Temporal artery with active giant cell arteritis",
            "Findings consistent with giant cell (temporal) arteritis", "Positive for giant cell arteritis",
            "Features diagnostic of giant cell arteritis")),
    Family("dx_healed", "conclusion", (("healed_arteritis", AFF), (GCA, AFF)),
           ("healed arteritis: treated giant cell arteritis with scarring",
            "burnt-out (steroid-modified) giant cell arteritis; no active inflammation now"),
           ("Healed (treated) giant cell arteritis", "Giant cell arteritis in a healed phase, with medial scarring",
            "Features in keeping with treated, healed giant cell arteritis")),
    Family("dx_negative", "conclusion", ((GCA, ABS),),
           ("no arteritis", "normal temporal artery for age; no evidence of arteritis", "temporal artery without vasculitis",
            "no features of giant cell arteritis in these levels"),
           ("No evidence of giant cell arteritis", "Negative for arteritis", "Temporal artery with no evidence of vasculitis",
            "No arteritis identified", "Temporal artery, negative for giant cell arteritis")),
    Family("dx_adventitial_only", "conclusion", ((ADV, AFF), (GCA, ABS)),
           ("adventitial lymphocytes only; insufficient for a diagnosis of arteritis",
            "periadventitial inflammation alone, not arteritis of giant cell type"),
           ("Adventitial chronic inflammation only; no evidence of giant cell arteritis",
            "Adventitial lymphocytic inflammation without the features of arteritis",
            "Periadventitial lymphocytes only, insufficient for giant cell arteritis")),
    Family("dx_foreign_body", "conclusion", (("foreign_body_giant_cells", AFF), (GC, AFF), (GCA, ABS)),
           ("foreign-body giant cell reaction only; no arteritis of giant cell type",),
           ("Foreign body giant cell reaction; no evidence of giant cell arteritis",
            "Foreign body type giant cells only, not giant cell arteritis")),
    Family("dx_necrotising", "conclusion", (("necrotising_arteritis", AFF), (GCA, ABS)),
           ("necrotising arteritis, favour polyarteritis nodosa or anca-associated vasculitis; not giant cell arteritis",
            "necrotising (non-granulomatous) vasculitis, not of giant cell type"),
           ("Necrotising vasculitis, not of giant cell type; consider polyarteritis nodosa or ANCA-associated vasculitis",
            "Necrotising arteritis (non-granulomatous); the appearances are not those of giant cell arteritis")),
    Family("dx_no_artery", "conclusion", (("wrong_tissue", AFF),),
           ("no artery sampled; the specimen is inadequate to assess arteritis",
            "specimen comprises nerve and fat only; no arterial tissue represented"),
           ("No artery identified; the specimen is inadequate for assessment of arteritis",
            "The specimen does not contain artery; unable to assess for arteritis",
            "Non-diagnostic: no arterial tissue is present")),
    Family("dx_equivocal", "conclusion", ((GCA, HEDGED),),
           ("early or treated giant cell arteritis cannot be excluded on this material",
            "indeterminate for arteritis; please correlate with the clinical picture",
            "possible early giant cell arteritis, not definitive"),
           ("Equivocal for giant cell arteritis",
            "Giant cell arteritis cannot be entirely excluded; clinicopathological correlation is advised",
            "Suspicious for, but not diagnostic of, giant cell arteritis",
            "Borderline features; early giant cell arteritis is not excluded")),
    # ---------------------------------------------------------------- revising addenda
    Family("add_gc", "addendum", ((GC, AFF), ("elastic_fragmentation", AFF)),
           ("deeper sections reveal multinucleate giant histiocytes along a split elastica",),
           (f"Further levels show multinucleated giant cells along a fragmented {_EL}",
            f"Deeper levels now show giant cells related to a disrupted {_EL}")),
    Family("add_gc_adv", "addendum", ((GC, AFF), ("elastic_fragmentation", AFF), (ADV, AFF)),
           ("deeper sections reveal multinucleate giant histiocytes along a split elastica and the outer coat is now "
            "cuffed by lymphocytes",),
           (f"Further levels show multinucleated giant cells along a fragmented {_EL}, and a lymphocytic infiltrate "
            "in the adventitia", f"Deeper levels now show giant cells at a disrupted {_EL}; the adventitia is "
            "infiltrated by lymphocytes")),
    Family("add_gran", "addendum", (("granulomatous_inflammation", AFF), (GC, ABS)),
           ("deeper sections reveal granulomatous inflammation of the media, although giant cells are still not found",),
           ("Further levels show granulomatous inflammation of the media; giant cells are still not identified",
            "Deeper levels show medial granulomatous inflammation, but no giant cells are identified")),
    Family("add_gran_adv", "addendum", (("granulomatous_inflammation", AFF), (GC, ABS), (ADV, AFF)),
           ("deeper sections reveal granulomatous inflammation of the media, although giant cells are still not found "
            "and the outer coat is now cuffed by lymphocytes",),
           ("Further levels show granulomatous inflammation of the media and a lymphocytic infiltrate in the "
            "adventitia; giant cells are still not identified", "Deeper levels show medial granulomatous inflammation "
            "with adventitial lymphocytes, but no giant cells are identified")),
    Family("add_dx_positive", "addendum", ((GCA, AFF),),
           ("the diagnosis is amended to giant cell arteritis",),
           ("The diagnosis is revised to giant cell arteritis", "Revised diagnosis: giant cell arteritis",
            "Amended diagnosis: giant cell arteritis")),
    Family("add_retract", "addendum", ((GC, ABS), ("elastic_fragmentation", ABS)),
           ("on review with elastic stains the cells previously taken for giant cells are tangentially cut smooth "
            "muscle, and the elastica is intact",),
           ("On review of elastic-stained levels, the cells previously interpreted as giant cells are tangentially "
            f"sectioned smooth muscle cells, and the {_EL} is intact", "Review with elastic stains shows that the "
            f"presumed giant cells are tangentially cut smooth muscle cells; the {_EL} is intact")),
    Family("add_dx_negative", "addendum", ((GCA, ABS),),
           ("amended conclusion: no arteritis",),
           ("Revised diagnosis: negative for giant cell arteritis", "Amended diagnosis: no evidence of arteritis",
            "The diagnosis is revised to: no arteritis")),
    # ---------------------------------------------------------------- clinical details, specimen, letter
    Family("clinical", "clinical", (), ("{age} {sex}, {hist}",),
           ("{age}-year-old {sex}; {hist}", "{Sex}, aged {age}: {hist}", "{age} year old {sex} with {hist}")),
    Family("history", "clinical", (), ("{hist}",), ("{Hist}",)),
    Family("specimen", "specimen", (),
           ("{side} superficial temporal artery, {len} cm segment, all blocked",
            "the specimen is a {len} cm length of {side} temporal artery cut into rings"),
           ("{Side} temporal artery, {len} cm in length, embedded in toto",
            "A {len} cm segment of {side} temporal artery, serially sectioned and entirely embedded",
            "Received in formalin: a {len} cm length of {side} temporal artery")),
    Family("letter", "clinical", (),
           ("thank you for sending this {side} temporal artery from your {age}-year-old {sex} patient ({hist})",),
           ("Many thanks for this {side} temporal artery biopsy from your {age}-year-old {sex} patient ({hist})",
            "We have examined the {side} temporal artery from your {age}-year-old {sex} patient ({hist})")),
    Family("sign_off", "other", (), ("with kind regards",), ("Kind regards", "Yours sincerely", "Best wishes")),
)

# Clinical histories: (assertions, grammar B's wording (normalised), my wordings).
HISTORIES: tuple[tuple[tuple[tuple[str, str], ...], str, tuple[str, ...]], ...] = (
    (((GCA, REQUEST),), "sudden headache, ?giant cell arteritis",
     ("new sudden-onset headache, query giant cell arteritis", "acute headache; ?temporal arteritis")),
    (((GCA, REQUEST),), "jaw pain on chewing, query temporal arteritis",
     ("jaw claudication, ?giant cell arteritis", "pain in the jaw when chewing; query giant cell arteritis")),
    (((GCA, REQUEST),), "known pmr, to exclude giant cell arteritis",
     ("polymyalgia rheumatica, exclude giant cell arteritis", "background of PMR; please exclude temporal arteritis")),
    (((GCA, HISTORY),), "previous giant cell arteritis on prednisolone, ?relapse",
     ("history of giant cell arteritis on prednisolone, query relapse",
      "treated giant cell arteritis (prednisolone), ?recurrence")),
    ((), "visual loss, elevated crp", ("loss of vision and raised CRP", "visual disturbance, CRP raised")),
    (((GCA, REQUEST),), "temporal tenderness, rule out arteritis",
     ("tender temporal artery, exclude arteritis", "scalp and temporal tenderness; ?arteritis")),
)

# Section headings: grammar B's (recognised) and mine (recognised and written).
HEADINGS_SOURCE = {"clinical": ("request", "clinical details"), "specimen": ("nature of specimen",),
                   "micro": ("histology",), "conclusion": ("summary", "opinion", "comment", "in summary"),
                   "lead": ("tab", "temporal artery biopsy", "l tab", "r tab", "b tab"),
                   "addendum": ("supplementary report", "amended report", "addendum 1 (further levels)")}
HEADINGS_MINE = {"clinical": ("Clinical history", "Clinical information", "Clinical notes"),
                 "specimen": ("Macroscopic description", "Macroscopy", "Specimen", "Gross description"),
                 "micro": ("Microscopic description", "Microscopy", "Micro"),
                 "conclusion": ("Diagnosis", "Final diagnosis", "Conclusion", "Impression"),
                 "lead": ("{Side} temporal artery biopsy", "{Side} TA biopsy", "Temporal artery biopsy ({side})"),
                 "addendum": ("ADDENDUM", "Addendum (deeper levels)", "Supplementary report (further levels)",
                              "Amended report (additional levels)")}

# Abbreviations and spellings: (written form pattern, normalised form) for reading; (long, short) for writing.
READ_EXPANSIONS = ((r"\bgca\b", "giant cell arteritis"), (r"infl\.", "inflammation"), (r"inflamm\.", "inflammation"),
                   (r"\blymphs\b", "lymphocytes"), (r"\bmn(?=d?\b)", "multinucleate"), (r"\bw/o\b", "without"),
                   (r"\bw/(?=\s)", "with"), (r"temp\. art\.", "temporal artery"), (r"advent\.", "adventitia"),
                   (r"\bhistios\b", "histiocytes"), (r"temporal a\. b(?:x|iopsy)\b", "temporal artery biopsy"),
                   (r"\bta\b", "temporal artery"), (r"\bbx\b", "biopsy"), (r"\biel\b", _EL),
                   (r"\bnecrotiz", "necrotis"), (r"\bfavor\b", "favour"), (r"\bhematoxylin", "haematoxylin"),
                   (r"\bedema\b", "oedema"), (r"\bfiber", "fibre"))
WRITE_ABBREVIATIONS = (("giant cell arteritis", "GCA"), ("temporal artery", "TA"), ("lymphocytes", "lymphs"),
                       (_EL, "IEL"), ("inflammation", "inflamm."), ("biopsy", "bx"))
US_SPELLINGS = (("necrotising", "necrotizing"), ("favour", "favor"), ("fibre", "fiber"))
# Words a typo may land on: neither negation / hedge cues nor finding words.
TYPO_SAFE = frozenset(("specimen", "sections", "received", "segment", "embedded", "entirely", "serially", "sectioned",
                       "formalin", "clinical", "history", "information", "macroscopic", "microscopic", "description",
                       "macroscopy", "microscopy", "length", "examined", "thanks", "patient", "regards", "sincerely",
                       "levels", "further", "consists", "tissue"))


# ------------------------------------------------------------------------ reading: normalising the text
def _words(s: str) -> list[str]:
    return re.findall(r"[a-z]+", s.lower())


@lru_cache(maxsize=1)
def vocab() -> frozenset[str]:
    """Every word of the lexicon, lower case (what a typo is corrected to)."""
    texts = [t for f in FAMILIES for t in f.source + f.mine + f.short]
    texts += [n for d in (NOUNS_SOURCE, NOUNS_MINE, SYNOPTIC_NAME) for v in d.values() for n in v]
    texts += list(NEG_FRAMES_SOURCE) + [f for f, _ in NEG_FRAMES_MINE + NEG_SHORT_MINE]
    texts += [h for _, b, m in HISTORIES for h in (b, *m)] + list(SEV_SWAP)
    texts += [h for d in (HEADINGS_SOURCE, HEADINGS_MINE) for v in d.values() for h in v]
    texts += [r for _, r in READ_EXPANSIONS] + [s for p in WRITE_ABBREVIATIONS for s in p] + list(TYPO_SAFE)
    texts += ["lymphs", "histios", "advent", "infl", "inflamm", "left", "right", "bilateral", "female", "male", "woman"]
    return frozenset(w for t in texts for w in _words(t))


def _fix_typo(word: str) -> str | None:
    """The one lexicon word one dropped or doubled letter away from ``word`` (None if none or several)."""
    w, words = word.lower(), vocab()
    if len(w) < 5 or w in words:
        return None
    cands = {w[:j] + w[j + 1:] for j in range(1, len(w) - 1)}
    cands |= {w[:j] + c + w[j:] for j in range(1, len(w)) for c in ascii_lowercase}
    hits = cands & words
    return hits.pop() if len(hits) == 1 else None


def _mapped_sub(text: str, st: list[int], en: list[int], rx: re.Pattern[str],
                repl: Callable[[re.Match[str]], str | None]) -> tuple[str, list[int], list[int]]:
    """``rx.sub`` that also carries, per character, the span of the original text it came from."""
    out, s2, e2, pos = [], [], [], 0
    for m in rx.finditer(text):
        r = repl(m)
        if r is None or m.end() == m.start():
            continue
        a, b = m.start(), m.end()
        out += [text[pos:a], r]
        s2 += st[pos:a] + [st[a]] * len(r)
        e2 += en[pos:a] + [en[b - 1]] * len(r)
        pos = b
    out.append(text[pos:])
    return "".join(out), s2 + st[pos:], e2 + en[pos:]


_READ = tuple((re.compile(p, re.IGNORECASE), r) for p, r in READ_EXPANSIONS)


def normalise(text: str) -> tuple[str, list[int], list[int]]:
    """``text`` with abbreviations expanded, UK spelling and one-letter typos fixed, and per character of the
    result the start and end of the original characters it came from."""
    t, st, en = text, list(range(len(text))), list(range(1, len(text) + 1))
    for rnd in (0, 1):
        for rx, rep in _READ:
            t, st, en = _mapped_sub(t, st, en, rx, lambda m, r=rep: r)
        if rnd == 0:
            t, st, en = _mapped_sub(t, st, en, re.compile(r"[A-Za-z]+"), lambda m: _fix_typo(m.group()))
    return t, st, en
