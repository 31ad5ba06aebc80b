"""Surface forms of the concepts of a temporal artery biopsy report, for :mod:`ehrseq.models.paraphrase`.

Provenance: the *alternatives* were written from general knowledge of how pathologists word temporal artery
biopsy reports (UK, US and Australian habits; synoptic and narrative layouts; NegEx / ConText-style negation
and hedging), by someone who had not opened the held-out second report grammar, its tests, its benchmark or
any of its output. The *grammar-A forms* (:data:`GRAMMAR_A`) are the phrases of the training generator
:mod:`ehrseq.synth.reports`, copied so the augmenter can find them; they are kept apart from the alternatives.

A *slot* is one kind of statement; :data:`SLOTS` gives the (concept, polarity) records it makes. Label concepts
are the four labels of :data:`ehrseq.codes.BIOPSY_LABELS`; the rest (``iel``, ``media``, ``artery``) describe
the vessel without setting a label. Polarities: ``affirmed``, ``absent``, ``hedged`` (the text does not settle
it) and ``request`` (the clinician's question, not a finding). Label semantics of grammar A that matter:

* foreign-body giant cells around medial calcification count as ``giant_cells`` = 1 (with ``gca`` = 0);
* "healed arteritis with intimal fibrosis" and "no active inflammation" in a healed-GCA conclusion set neither
  ``intimal_hyperplasia`` nor ``adventitial_inflammation`` (both follow the findings sentences only);
* "isolated adventitial inflammation, not diagnostic of arteritis" is ``adventitial_inflammation`` = 1;
* everything before an addendum is superseded by it: the initial findings were drawn for the wrong diagnosis.

``{sev}`` in a form is a severity word (:data:`SEVERITIES`), kept in meaning by :data:`SEVERITY_FORMS`.
"""

from __future__ import annotations

AFFIRMED, ABSENT, HEDGED, REQUEST = "affirmed", "absent", "hedged", "request"
POLARITIES: tuple[str, ...] = (AFFIRMED, ABSENT, HEDGED, REQUEST)
ADV, GC, INT, GCA = "adventitial_inflammation", "giant_cells", "intimal_hyperplasia", "gca"
LABEL_CONCEPTS: tuple[str, ...] = (ADV, GC, INT, GCA)

SEVERITIES: tuple[str, ...] = ("mild", "moderate", "marked", "focal", "age-related")
SEVERITY_FORMS: dict[str, tuple[str, ...]] = {
    "mild": ("mild", "slight", "minor", "mild"), "moderate": ("moderate", "moderate"),
    "marked": ("marked", "severe", "prominent", "florid"), "focal": ("focal", "patchy", "segmental"),
    "age-related": ("age-related", "age-related"),
}

# slot -> the (concept, polarity) records a statement of that slot makes
SLOTS: dict[str, tuple[tuple[str, str], ...]] = {
    "adv+": ((ADV, AFFIRMED),), "adv-": ((ADV, ABSENT),),
    "gc+": ((GC, AFFIRMED),), "gc-": ((GC, ABSENT),), "gc_fb": ((GC, AFFIRMED),),
    "int+": ((INT, AFFIRMED),), "int-": ((INT, ABSENT),), "int_athero": ((INT, AFFIRMED),),
    "iel+": (("iel", AFFIRMED),), "iel-": (("iel", ABSENT),), "iel_healed": (("iel", AFFIRMED),),
    "media+": (("media", AFFIRMED),), "media-": (("media", ABSENT),), "media_healed": (("media", AFFIRMED),),
    "media_calc": (("media", AFFIRMED),),
    "gca+": ((GCA, AFFIRMED),), "gca_healed": ((GCA, AFFIRMED),), "gca-": ((GCA, ABSENT),),
    "gca?": ((GCA, HEDGED),), "gca?adv": ((ADV, AFFIRMED), (GCA, HEDGED)),
    "iso_adv": ((ADV, AFFIRMED), (GCA, ABSENT)), "fb_concl": ((GC, AFFIRMED), (GCA, ABSENT)),
    "no_artery": (("artery", ABSENT),), "no_artery_micro": (("artery", ABSENT),),
    "gca_request": ((GCA, REQUEST),),
    "add+gc": ((GC, AFFIRMED), ("media", AFFIRMED), (GCA, AFFIRMED)),
    "add+": (("media", AFFIRMED), (GCA, AFFIRMED)), "add-": (("iel", ABSENT), (GCA, ABSENT)),
}
LAYER: dict[str, str] = {  # finding slot -> the layer (synoptic field) it describes
    "adv+": "adventitia", "adv-": "adventitia", "gc+": "giant", "gc-": "giant", "gc_fb": "media",
    "int+": "intima", "int-": "intima", "iel+": "iel", "iel-": "iel",
    "iel_healed": "iel", "media+": "media", "media-": "media", "media_healed": "media", "media_calc": "media",
}
FINDING_SLOTS: frozenset[str] = frozenset(LAYER)
ADDENDUM_SLOTS: frozenset[str] = frozenset(("add+gc", "add+", "add-"))

# ------------------------------------------------------------------ grammar-A forms (ehrseq.synth.reports)
GRAMMAR_A: dict[str, tuple[str, ...]] = {
    "adv+": ("There is lymphohistiocytic inflammation involving the adventitia.",
             "A chronic inflammatory infiltrate is present in the adventitia.",
             "Adventitial lymphocytic inflammation is present.", "adventitial lymphocytes +.",
             "patchy adventitial chronic inflammation.", "lymphoid cuffing of adventitial vasa vasorum.",
             "mild adventitial inflam."),
    "adv-": ("The adventitia is unremarkable.", "No adventitial inflammation is seen.",
             "There is no inflammatory infiltrate in the adventitia.", "adventitia unremarkable.",
             "no adventitial inflam.", "no inflammatory infiltrate."),
    "gc+": ("Multinucleated giant cells are present.",
            "Giant cells are identified adjacent to the fragmented internal elastic lamina.",
            "Scattered multinucleated giant cells are seen within the media.", "Occasional giant cells are present.",
            "Rare giant cells are seen.", "multinucleated GCs present.", "giant cells seen along the IEL.",
            "+ giant cells.", "giant cells present.", "a few giant cells are noted.",
            "GCs identified at the intima-media junction."),
    "gc-": ("No giant cells are identified.", "Giant cells are not seen.", "No multinucleated giant cells are present.",
            "There is no evidence of giant cells.", "Giant cells: none seen.", "no giant cells seen.", "no GCs.",
            "negative for giant cells.", "giant cells absent.", "without giant cells."),
    "gc_fb": ("The media shows calcification with a foreign-body giant cell reaction.",
              "medial calcification w/ foreign body GC reaction."),
    "int+": ("There is {sev} intimal hyperplasia.", "The intima shows {sev} fibrointimal thickening.",
             "{sev} intimal proliferation narrows the lumen.", "{sev} intimal thickening.",
             "{sev} intimal hyperplasia.", "intimal fibroplasia ({sev})."),
    "int-": ("The intima is thin.", "There is no significant intimal hyperplasia.", "The intima is unremarkable.",
             "intima thin.", "no intimal hyperplasia.", "intima unremarkable."),
    "int_athero": ("Atherosclerosis with age-related intimal thickening.",),
    "iel+": ("The internal elastic lamina is fragmented.", "There is destruction of the internal elastic lamina.",
             "IEL fragmented.", "IEL disrupted."),
    "iel_healed": ("The internal elastic lamina shows focal loss and scarring on EVG stain.",
                   "EVG: IEL focally lost, scarring."),
    "iel-": ("The internal elastic lamina is intact on EVG stain.",
             "EVG shows reduplication of an intact internal elastic lamina.", "EVG: IEL intact.",
             "IEL intact, reduplicated."),
    "media+": ("The media contains a lymphohistiocytic infiltrate.", "Granulomatous inflammation involves the media.",
               "granulomatous medial inflam.", "media w/ histiocytes."),
    "media_healed": ("The media is thinned with patchy fibrosis; no active inflammation.",
                     "media thin + fibrotic, no active inflam."),
    "media-": ("The media is unremarkable.", "media ok."),
    "media_calc": ("The media shows focal calcification.", "medial calcification."),
    "gca+": ("Temporal artery with active arteritis, consistent with giant cell arteritis.", "Giant cell arteritis.",
             "Findings diagnostic of giant cell (temporal) arteritis.", "Positive for giant cell arteritis.",
             "active GCA.", "c/w giant cell arteritis.", "POSITIVE for GCA.", "TA bx diagnostic of GCA."),
    "gca_healed": ("Healed arteritis with intimal fibrosis and fragmentation of the internal elastic lamina, "
                   "consistent with treated giant cell arteritis.",
                   "Features of healed (treated) giant cell arteritis; no active inflammation.",
                   "healed / treated GCA. no active inflam.", "c/w healed arteritis (on steroids), i.e. GCA."),
    "gca-": ("Negative for arteritis.", "Temporal artery, no evidence of vasculitis.", "No arteritis identified.",
             "Benign temporal artery.", "neg for arteritis.", "no GCA.", "NEGATIVE for vasculitis.",
             "no evidence of GCA."),
    "iso_adv": ("Isolated adventitial inflammation, not diagnostic of arteritis. Negative for giant cell arteritis.",
                "isolated adventitial inflam only - not diagnostic of GCA. neg for arteritis."),
    "fb_concl": ("Occasional foreign-body type giant cells around medial calcification; no arteritis. Negative for "
                 "giant cell arteritis.", "foreign body type GCs assoc w/ calcification, no vasculitis. neg for GCA."),
    "no_artery": ("Segment of vein; no artery identified. Non-diagnostic specimen, re-biopsy if clinically "
                  "indicated.", "Fibroadipose tissue and nerve; no artery is present. Non-diagnostic.",
                  "vein only, no artery seen - nondiagnostic.", "no TA identified in specimen (vein). repeat bx?"),
    "no_artery_micro": ("Sections show a thin-walled vein and fibroadipose tissue. No artery is present.",
                        "sections show vein + fat only."),
    "gca?adv": ("Sparse perivascular lymphocytes in the adventitia; features suspicious for but not diagnostic of "
                "giant cell arteritis. Clinical correlation recommended.",),
    "gca?": ("Equivocal for arteritis; see comment.",
             "?early GCA - suspicious but not diagnostic. correlate clinically.", "equivocal for GCA, cannot exclude."),
    "gca_request": ("Rule out giant cell arteritis.", "?GCA", "r/o GCA."),
}
_ADD_POS = ("Deeper levels show {gc}lymphohistiocytic inflammation of the media with fragmentation of the internal "
            "elastic lamina.")
_ADD_NEG = "EVG stain and deeper levels show an intact internal elastic lamina and no arteritis."
_ADD_HEADS = (("ADDENDUM", "REVISED DIAGNOSIS"), ("Addendum", "revised dx"))
GRAMMAR_A["add+gc"] = tuple(f"{h}: {_ADD_POS.format(gc='giant cells and ')} {r}: giant cell arteritis."
                            for h, r in _ADD_HEADS)
GRAMMAR_A["add+"] = tuple(f"{h}: {_ADD_POS.format(gc='')} {r}: giant cell arteritis." for h, r in _ADD_HEADS)
GRAMMAR_A["add-"] = tuple(f"{h}: {_ADD_NEG} {r}: negative for giant cell arteritis." for h, r in _ADD_HEADS)

# ------------------------------------------------------------------ alternatives (general pathology wording)
ALTERNATIVES: dict[str, tuple[str, ...]] = {
    "adv+": ("The adventitia contains a chronic inflammatory cell infiltrate.",
             "Lymphocytes and histiocytes infiltrate the adventitia.",
             "There is a patchy lymphocytic infiltrate within the adventitia.",
             "Mononuclear inflammatory cells are present in the adventitia.",
             "Adventitial chronic inflammation is seen.", "The adventitia shows lymphoplasmacytic inflammation.",
             "Perivascular lymphocytic cuffing of the adventitial vasa vasorum is noted.",
             "Adventitial inflammation is present, composed of lymphocytes and macrophages.",
             "Inflammatory cells are seen in the adventitial layer.",
             "The adventitia is infiltrated by lymphocytes, histiocytes and occasional plasma cells."),
    "adv-": ("The adventitia is free of inflammation.", "No inflammation is present in the adventitia.",
             "The adventitia shows no inflammatory infiltrate.", "Adventitia within normal limits.",
             "No adventitial lymphocytic infiltrate is seen.", "The adventitia is not inflamed.",
             "Adventitial inflammation is absent.", "There is no adventitial chronic inflammation.",
             "No inflammatory cells are identified in the adventitia.",
             "No adventitial or periadventitial inflammation is present.", "The adventitia contains no lymphocytes."),
    "gc+": ("Multinucleate giant cells are seen.", "Giant cells are noted.", "Scattered giant cells are identified.",
            "A few multinucleated histiocytic giant cells are present.", "Occasional multinucleate giant cells are seen.",
            "Giant cells are found on the levels examined.", "Multinucleated giant cells are demonstrated.",
            "Multinucleated giant cells are scattered within the vessel wall.", "Rare multinucleate giant cells are "
            "present.", "Giant cells are readily found."),
    "gc-": ("Giant cells are absent.", "No multinucleate giant cells are seen.", "Giant cells are not identified.",
            "No giant cells identified on the levels examined.", "Multinucleated giant cells are not found.",
            "No giant cell forms are present.", "Giant cells are not demonstrated.",
            "No Langhans or foreign-body giant cells are seen.", "A careful search reveals no giant cells.",
            "Multinucleated giant cells are absent from all levels examined.", "There are no giant cells."),
    "gc_fb": ("Foreign-body type giant cells surround foci of medial calcification.",
              "There is medial calcification with an associated foreign-body giant cell reaction.",
              "Foci of medial calcification are ringed by foreign-body-type multinucleate giant cells."),
    "int+": ("There is {sev} fibrointimal proliferation.", "The intima is thickened ({sev}).",
             "{Sev} intimal thickening is present.", "The lumen is narrowed by {sev} intimal proliferation.",
             "{Sev} fibrous thickening of the intima is seen.", "The intima shows {sev} myointimal hyperplasia.",
             "Intimal thickening, {sev}, with luminal narrowing.", "There is {sev} intimal fibrosis."),
    "int-": ("The intima is not thickened.", "No intimal thickening is seen.", "The intima is of normal thickness.",
             "No significant fibrointimal proliferation.", "The intima is within normal limits.",
             "Intimal hyperplasia is absent.", "The lumen is patent and the intima is not thickened.",
             "There is no fibrointimal thickening.", "The intima shows no hyperplasia."),
    "int_athero": ("Atherosclerotic change with age-related intimal thickening.",
                   "Age-related fibrointimal thickening (arteriosclerosis).",
                   "Arteriosclerotic intimal thickening, in keeping with age."),
    "iel+": ("The internal elastic lamina is disrupted.", "There is fragmentation of the internal elastic lamina.",
             "The elastic lamina shows focal destruction.", "Breaks in the internal elastic lamina are seen.",
             "The internal elastica is fragmented and focally lost."),
    "iel_healed": ("An elastic stain shows focal loss of the internal elastic lamina with scarring.",
                   "There is patchy loss of the internal elastica, replaced by fibrous tissue."),
    "iel-": ("The internal elastic lamina is intact.", "An elastic stain shows a continuous internal elastic lamina.",
             "The internal elastica is preserved, with reduplication.",
             "The internal elastic lamina shows no fragmentation.", "The elastic lamina is continuous and well preserved.", "On elastic van Gieson staining the elastic lamina is intact."),
    "media+": ("The media is infiltrated by lymphocytes and histiocytes.", "There is granulomatous medial inflammation.",
               "Inflammation involves the full thickness of the media, with histiocytes.",
               "Medial chronic inflammation with epithelioid histiocytes is seen.",
               "The muscular media contains an inflammatory infiltrate."),
    "media_healed": ("The media is thin and scarred, without active inflammation.",
                     "There is medial fibrosis and thinning; active inflammation is not seen."),
    "media-": ("The media is within normal limits.", "The media is of normal appearance.",
               "The muscular media is unremarkable.", "No medial inflammation is seen.",
               "The media shows no inflammation or necrosis."),
    "media_calc": ("There is focal medial calcification.", "Focal calcification of the media is noted."),
    "gca+": ("Giant cell (temporal) arteritis.", "Appearances are those of giant cell arteritis.",
             "Active arteritis, in keeping with giant cell arteritis.", "Features of active temporal arteritis.",
             "Temporal arteritis.", "Findings consistent with cranial (giant cell) arteritis.",
             "Granulomatous arteritis, in keeping with GCA.", "Diagnostic of temporal arteritis.",
             "Features of active arteritis, compatible with giant cell arteritis.", "Positive for temporal arteritis.",
             "Temporal artery showing giant cell arteritis.", "Changes diagnostic of giant cell arteritis.",
             "Histological features of giant cell arteritis (active phase)."),
    "gca_healed": ("Healed (burnt-out) arteritis, consistent with treated giant cell arteritis.",
                   "Arteritis in a healing phase, in keeping with previously treated GCA.",
                   "Changes of treated temporal arteritis; no ongoing active inflammation.",
                   "Inactive (healed) giant cell arteritis."),
    "gca-": ("No evidence of giant cell arteritis.", "Negative for temporal arteritis.", "No features of arteritis.",
             "There is no histological evidence of temporal arteritis.", "No vasculitis identified.",
             "Appearances are not those of giant cell arteritis.", "Not consistent with giant cell arteritis.",
             "Temporal artery without arteritis.", "No active or healed arteritis is seen.",
             "Negative for GCA.", "No histological features of giant cell arteritis.",
             "Temporal artery showing no evidence of arteritis.", "Arteritis is not identified.", "GCA is not present."),
    "iso_adv": ("Adventitial chronic inflammation only; insufficient for a diagnosis of arteritis. No evidence of "
                "giant cell arteritis.",
                "Isolated adventitial lymphocytic inflammation. The features fall short of arteritis; no giant cell "
                "arteritis.", "Mild adventitial inflammation without arteritis. Negative for temporal arteritis."),
    "fb_concl": ("Foreign-body giant cell reaction to medial calcification. No arteritis; negative for giant cell "
                 "arteritis.", "Medial calcification with foreign-body type giant cells, not arteritis. No evidence "
                 "of temporal arteritis."),
    "no_artery": ("No arterial tissue identified (vein and fat only); inadequate for assessment. Repeat biopsy may "
                  "be considered.", "The specimen consists of vein; artery is not present. Unsuitable for diagnosis.",
                  "Non-arterial tissue only. Insufficient for evaluation of arteritis.",
                  "Fibrofatty tissue and a small vein; no artery identified. Non-diagnostic biopsy."),
    "no_artery_micro": ("Sections contain a vein, fat and nerve; no arterial wall is seen.",
                        "Only venous and adipose tissue are present; no artery is seen on levels."),
    "gca?adv": ("A few lymphocytes around adventitial vessels. The features are suggestive of, but not diagnostic "
                "for, giant cell arteritis; correlate clinically.", "Mild perivascular adventitial lymphocytic "
                "infiltrate. Early giant cell arteritis cannot be excluded.", "Scant lymphocytes in the adventitia "
                "only; possible early arteritis, not definitive."),
    "gca?": ("Indeterminate for temporal arteritis; see comment.", "Possible giant cell arteritis; not definitive.",
             "Borderline features; giant cell arteritis cannot be excluded.", "Equivocal for temporal arteritis.",
             "Suspicious for, but not diagnostic of, temporal arteritis.",
             "The features raise the possibility of giant cell arteritis; clinical correlation is advised.",
             "Giant cell arteritis is not excluded on this biopsy."),
    "gca_request": ("?GCA.", "Query temporal arteritis.", "Clinical suspicion of giant cell arteritis.",
                    "To exclude GCA.", "Suspected temporal arteritis."),
}
# giant-cell wording that belongs to arteritis: used only in reports whose final conclusion is GCA
GIANT_CELLS_ARTERITIS: tuple[str, ...] = (
    "Langhans-type giant cells are present within the inflammatory infiltrate.",
    "Multinucleate giant cells lie at the intima-media junction.",
    "Giant cells are seen in relation to the disrupted elastic lamina.",
    "Granulomatous inflammation with multinucleated giant cells is identified.",
)
ADDENDUM_HEADINGS: tuple[str, ...] = ("Addendum", "Supplementary report", "Amended report", "Addendum report")
REVISED_HEADINGS: tuple[str, ...] = ("Amended diagnosis", "Revised conclusion", "Final diagnosis (amended)",
                                     "Amended conclusion")
ADDENDUM_BODY: dict[str, tuple[str, ...]] = {
    "add+gc": ("Further levels show multinucleate giant cells and granulomatous inflammation of the media, with "
               "disruption of the internal elastic lamina.", "On deeper sections there are giant cells and a "
               "lymphohistiocytic medial infiltrate; the internal elastic lamina is fragmented."),
    "add+": ("Further levels show granulomatous inflammation of the media, with disruption of the internal elastic "
             "lamina.", "On deeper sections there is a lymphohistiocytic medial infiltrate; the internal elastic "
             "lamina is fragmented."),
    "add-": ("Further levels and an elastic stain show a continuous internal elastic lamina; arteritis is not seen.",
             "Deeper sections and EVG staining show no arteritis and an intact elastic lamina."),
}

# Synoptic layout: field names per layer and short values per slot ("Giant cells: absent").
FIELD_NAMES: dict[str, tuple[str, ...]] = {
    "intima": ("Intima", "Intimal layer", "Intima (thickness)"),
    "iel": ("Internal elastic lamina", "Elastic lamina (EVG)", "IEL", "Internal elastica"),
    "media": ("Media", "Tunica media", "Medial layer"),
    "adventitia": ("Adventitia", "Adventitial layer", "Tunica adventitia"),
    "giant": ("Giant cells", "Multinucleated giant cells", "Multinucleate giant cells"),
}
TERSE_VALUES: dict[str, tuple[str, ...]] = {
    "adv+": ("inflamed", "chronic inflammation present", "lymphocytic infiltrate present"),
    "adv-": ("no inflammation", "not inflamed", "no inflammatory infiltrate identified"),
    "gc+": ("present", "seen", "identified", "yes"), "gc-": ("absent", "not identified", "none seen", "not seen"),
    "gc_fb": ("calcification with foreign-body giant cells", "foreign-body giant cell reaction to calcification"),
    "int+": ("{sev} hyperplasia", "thickened ({sev})", "{sev} fibrointimal thickening"),
    "int-": ("not thickened", "normal thickness", "no hyperplasia"), "int_athero": ("age-related thickening",),
    "iel+": ("fragmented", "disrupted", "focally destroyed"), "iel-": ("intact", "preserved", "continuous"),
    "iel_healed": ("focal loss with scarring",), "media+": ("granulomatous inflammation", "lymphohistiocytic infiltrate"),
    "media-": ("within normal limits", "normal"), "media_healed": ("thin and fibrotic, not actively inflamed",),
    "media_calc": ("focal calcification",),
}

# ------------------------------------------------------------------ absence, hedge and other general vocabulary
ABSENCE_CUES: tuple[str, ...] = ("no", "not", "none", "without", "absent", "not identified", "not seen",
                                 "not found", "not demonstrated", "no evidence of", "negative for", "free of",
                                 "within normal limits", "unremarkable", "not thickened", "not inflamed", "nil")
HEDGE_CUES: tuple[str, ...] = ("cannot be excluded", "suspicious for", "suggestive of", "possible", "equivocal",
                               "indeterminate", "borderline", "not definitive", "not diagnostic", "query", "?",
                               "possibility", "not excluded",
                               "correlate clinically")
SECTION_KINDS: tuple[str, ...] = ("specimen", "history", "gross", "micro", "diagnosis")
GRAMMAR_A_HEADINGS: dict[str, tuple[str, ...]] = {
    "specimen": ("SPECIMEN",), "history": ("CLINICAL HISTORY", "Hx"), "gross": ("GROSS DESCRIPTION", "Macro", "Gross"),
    "micro": ("MICROSCOPIC (synoptic)", "MICROSCOPIC", "Micro", "Micro - levels x3"),
    "diagnosis": ("DIAGNOSIS", "Dx", "IMPRESSION", "Conclusion"),
}
# heading families: UK, US, Australian, terse
HEADINGS: dict[str, tuple[tuple[str, ...], ...]] = {
    "specimen": (("Specimen",), ("Specimen submitted", "Source of specimen"), ("Specimen type",), ("Spec",)),
    "history": (("Clinical details", "Clinical information"), ("Clinical history", "Pertinent history"),
                ("Clinical notes", "Clinical indication"), ("Clin", "Indication")),
    "gross": (("Macroscopy", "Macroscopic description"), ("Gross description", "Gross examination"),
              ("Macroscopic", "Macroscopic findings"), ("Gross", "Macro")),
    "micro": (("Microscopy", "Histology"), ("Microscopic description", "Microscopic examination"),
              ("Microscopic", "Histopathology"), ("Micro", "Histo")),
    "diagnosis": (("Conclusion", "Summary"), ("Final diagnosis", "Diagnosis"),
                  ("Diagnosis", "Opinion"), ("Impression", "Dx")),
}
SIDE_FORMS: dict[str, tuple[str, ...]] = {
    "left": ("left", "left", "L", "Lt"), "right": ("right", "right", "R", "Rt"),
    "bilateral": ("bilateral", "bilateral", "left and right", "bilat"),
}
SPECIMEN_TEMPLATES: tuple[str, ...] = ("{Side} temporal artery biopsy.", "Temporal artery ({side}), biopsy.",
                                       "Biopsy of {side} superficial temporal artery.", "{Side} TA biopsy.",
                                       "{Side} temporal artery.")
DIAGNOSIS_SITE_LINES: tuple[str, ...] = ("{Side} temporal artery, biopsy:", "Temporal artery ({side}):",
                                         "{Side} temporal artery biopsy -", "{Side} TAB:", "")
BULLETS: tuple[str, ...] = ("- ", "* ", "", "1. ")
HISTORY_TEMPLATES: tuple[str, ...] = ("{age}-year-old {sex}, {sym}", "{age}{s}. {sym}", "{Sex}, aged {age}: {sym}",
                                      "{age} y/o {sex} presenting with {sym}", "{age} yr {s}; {sym}")
SEX_FORMS: dict[str, tuple[str, ...]] = {"F": ("female", "woman", "lady"), "M": ("male", "man", "gentleman")}
SYMPTOMS: dict[str, tuple[str, ...]] = {
    "new headache": ("new-onset headache", "temporal headache", "recent headaches"),
    "jaw claudication": ("jaw pain on chewing", "claudication of the jaw", "masticatory claudication"),
    "scalp tenderness": ("tender scalp", "scalp pain", "tender temporal artery"),
    "visual disturbance": ("visual symptoms", "blurred vision", "transient visual loss"),
    "polymyalgia symptoms": ("polymyalgic symptoms", "shoulder girdle pain and stiffness", "PMR"),
    "fever and weight loss": ("fevers and weight loss", "constitutional symptoms"),
    "raised inflammatory markers": ("elevated ESR and CRP", "high CRP", "raised ESR"),
    "HA": ("headache", "H/A"), "jaw claud": ("jaw claudication", "jaw pain"), "scalp tender": ("scalp tenderness",),
    "vis disturbance": ("visual disturbance", "visual sx"), "PMR sx": ("PMR", "polymyalgia"),
    "raised ESR": ("high ESR", "ESR raised"), "amaurosis": ("amaurosis fugax", "transient monocular blindness"),
}
GROSS_SHORT: tuple[str, ...] = ("A {L} segment of vessel, all embedded.", "Vessel, {L} long; AE.",
                                "Single segment of artery, {L}. Entirely submitted in one cassette.")
GROSS_TEMPLATES: tuple[str, ...] = (
    "A segment of artery {L} in length and {D} in diameter. Transversely sliced and all embedded.",
    "Received in formalin is a {L} length of vessel, {D} in external diameter. Processed entirely in one cassette.",
    "A single tan-white tubular segment measuring {L} x {D}. Cut into transverse segments and embedded entirely.",
    "One piece of vessel, {L} long and {D} across. AE in 1 block.",
    "The specimen consists of a cord-like segment of artery measuring {L}; diameter {D}. All submitted.",
)
ARTERY_DESCRIPTIONS: tuple[str, ...] = ("Sections show a muscular artery.", "Transverse sections of a medium-calibre "
                                        "artery are examined.", "The sections contain a temporal artery.",
                                        "Serial levels of a muscular artery are examined.")
SYNOPTIC_ARTERY: tuple[str, ...] = ("Artery identified: yes", "Arterial tissue present: yes", "Artery seen: yes")
SYNOPTIC_LEVELS: tuple[str, ...] = ("Levels: {n}", "Number of levels: {n}", "Levels cut: {n}", "{n} levels examined")
ABBREVIATIONS: dict[str, tuple[str, ...]] = {
    "temporal artery": ("TA", "temp. artery"), "internal elastic lamina": ("IEL",), "giant cell arteritis": ("GCA",),
    "multinucleated": ("multinucleate",), "biopsy": ("bx",), "with": ("w/",), "inflammation": ("inflamm", "inflam"),
    "elastic van gieson": ("EVG",), "haematoxylin and eosin": ("H&E",), "lymphocytes": ("lymphs",),
    "histiocytes": ("histiocytes",), "examined": ("exam'd",),
}
