"""How site B of the synthetic cohort differs from site A: one switch per kind of difference.

:class:`SiteShift` lists the switches; its defaults are the cohort's long-standing *mild* shift (the
benchmarks' figures rest on it), :data:`REALISTIC` turns every difference on. Every switch acts on site B only;
site A is the same under all of them (bit for bit when ``separate_sites`` is on, see below).

Recoding (B's events are rewritten after the simulation; nothing else changes, no random draw):

- ``local_lab_codes``: B's labs (ESR, CRP, RF, anti-CCP) under B's own opaque local codes
  (:data:`LOCAL_LAB_CODES`), as a second hospital's lab system exports them.
- ``icd9``: B's diagnoses in ICD-9-CM (``ICD9//714.0``) instead of ICD-10-CM (:data:`ICD10_TO_ICD9`); the three
  ICD-10 RA codes collapse into one ICD-9 code, as in a real crosswalk.

Units and assays (``units``, on in the mild shift): B reports CRP in mg/dL under the same code (A: mg/L) and
measures ESR by a method that reads about 1.4x higher.

Population and process (change the simulation at B):

- ``case_mix``: scales how B's patients differ from A's (age, comorbidity prevalence; above 1 B is also more
  severe). 0: the same population as A; 1: the mild shift.
- ``cadence="state"``: B sees patients above target (last recorded CDAI > 10) sooner and patients at target
  later (:data:`CADENCE_FACTORS`); A keeps a fixed cadence.
- ``lab_ordering="state"``: B orders ESR/CRP mostly for patients above target (:data:`LAB_RATE_BY_STATE`).
- ``cdai_documentation``: share of B's follow-up visits booked as nurse visits without a CDAI (1.5x as many
  after a visit at target, 0.5x after one above it). Treatment is held at a nurse visit (no score, no change).
- ``policy="tight"`` (concept shift): B's nurse-led treat-to-target clinic escalates more often when above target
  (:data:`TIGHT_ESCALATION`), raises the methotrexate dose before adding a drug (one code at every dose, so the
  data do not show it) and gives a depot steroid injection that the extract does not record: disease activity
  drops by :data:`INJECTION_EFFECT` at the visit, then relaxes back at the disease's own pace. The relation
  between the recorded history and the next CDAI then differs between the sites (patients just above target do
  better at B than at A), which no code map can fix. The injection is strong by design: it is what makes the
  drop of a model trained at A reach the published order (0.10 AUROC or more, benchmarks/results/transfer.md);
  at 1.5 the drop was about 0.05.
- ``separate_sites``: simulate each site with its own random stream, so that a switch at B leaves A's events bit
  for bit the same. Off in the mild shift (the cohort's original single stream).

The generator still records the true probabilities at both sites (``truth_cdai``): for the next visit, and, at
visits with a recorded CDAI, for the next recorded CDAI (exact when the visits in between are nurse visits).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from ehrseq import codes

SHIFTED_SITE = "B"

ICD10_TO_ICD9 = {  # B's ICD-9-CM code for each ICD-10-CM code the generator writes
    "ICD10//M05.79": "ICD9//714.0",  # seropositive RA
    "ICD10//M06.09": "ICD9//714.0",  # seronegative RA
    "ICD10//M06.9": "ICD9//714.0",  # RA, unspecified
    "ICD10//E11.9": "ICD9//250.00",
    "ICD10//I10": "ICD9//401.9",
    "ICD10//M81.0": "ICD9//733.00",
    "ICD10//J84.10": "ICD9//515",
    "ICD10//F32.9": "ICD9//311",
    "ICD10//J06.9": "ICD9//465.9",
    "ICD10//M25.50": "ICD9//719.40",
    "ICD10//D64.9": "ICD9//285.9",
    "ICD10//R53.83": "ICD9//780.79",
    "ICD10//M35.3": "ICD9//725",
    "ICD10//M31.6": "ICD9//446.5",
}
ICD9_TO_ICD10 = {  # the backward map a site would use (one-to-many codes go to the unspecified one)
    **{v: k for k, v in ICD10_TO_ICD9.items() if v != "ICD9//714.0"},
    "ICD9//714.0": "ICD10//M06.9",
}
LOCAL_LAB_CODES = {  # B's local lab codes (opaque ids, as a lab system exports them)
    codes.ESR: "LAB//B-1042",
    codes.CRP: "LAB//B-2210",
    codes.RF: "LAB//B-3301",
    codes.ANTI_CCP: "LAB//B-3302",
}

CADENCE_FACTORS = (1.4, 0.5)  # visit-interval scale at B: (at target, above target)
LAB_RATE_BY_STATE = (0.35, 0.95)  # chance B orders ESR/CRP: (at target, above target)
TIGHT_ESCALATION = 0.95  # chance B escalates when above target (A: ESCALATION)
ESCALATION = 0.7
MTX_DOSE_STEPS = 2  # B's methotrexate dose optimisation: up to this many steps, each lowering the treated mean
MTX_DOSE_EFFECT = 0.45
INJECTION_EFFECT = 2.5  # drop of latent activity at B's injection (8 CDAI points per unit); see the docstring
DOCUMENTATION_BY_STATE = (1.5, 0.5)  # multiplier on cdai_documentation: (after a visit at target, above it)
SEVERITY_PER_CASE_MIX = 0.25  # extra mean severity at B per unit of case_mix above 1


@dataclass(frozen=True)
class SiteShift:
    """How site B differs from site A (see the module docstring). The defaults are the mild shift."""

    units: bool = True
    local_lab_codes: bool = False
    icd9: bool = False
    case_mix: float = 1.0
    cadence: str = "fixed"
    lab_ordering: str = "random"
    cdai_documentation: float = 0.0
    policy: str = "same"
    separate_sites: bool = False

    def __post_init__(self) -> None:
        for name, allowed in (("cadence", ("fixed", "state")), ("lab_ordering", ("random", "state")),
                              ("policy", ("same", "tight"))):
            if getattr(self, name) not in allowed:
                raise ValueError(f"SiteShift.{name} must be one of {list(allowed)}, got {getattr(self, name)!r}")
        if not 0 <= self.cdai_documentation <= 0.66:
            raise ValueError("SiteShift.cdai_documentation must be in [0, 0.66] (x1.5 after a visit at target "
                             "must stay a probability)")
        if self.case_mix < 0:
            raise ValueError("SiteShift.case_mix must be >= 0")

    @property
    def recodes(self) -> dict[str, str]:
        """A-convention code -> the code B writes, for the recoding switches that are on."""
        out: dict[str, str] = {}
        if self.local_lab_codes:
            out.update(LOCAL_LAB_CODES)
        if self.icd9:
            out.update(ICD10_TO_ICD9)
        return out

    def to_dict(self) -> dict[str, Any]:
        """The switches as a JSON-serialisable dict."""
        return asdict(self)


MILD = SiteShift()
REALISTIC = SiteShift(units=True, local_lab_codes=True, icd9=True, case_mix=2.0, cadence="state",
                      lab_ordering="state", cdai_documentation=0.3, policy="tight", separate_sites=True)
PRESETS = {"mild": MILD, "realistic": REALISTIC}


def resolve_shift(shift: SiteShift | str | None, **overrides: Any) -> SiteShift:
    """A SiteShift from a preset name (``"mild"``, ``"realistic"``), an instance or None (mild), with field
    overrides (``resolve_shift("realistic", policy="same")``)."""
    if shift is None:
        base = MILD
    elif isinstance(shift, SiteShift):
        base = shift
    elif shift in PRESETS:
        base = PRESETS[shift]
    else:
        raise ValueError(f"unknown site shift {shift!r}; use one of {sorted(PRESETS)} or a SiteShift")
    known = {f.name for f in fields(SiteShift)}
    bad = sorted(set(overrides) - known)
    if bad:
        raise ValueError(f"unknown SiteShift field(s) {bad}; known: {sorted(known)}")
    return replace(base, **overrides) if overrides else base


def parse_options(pairs: dict[str, str]) -> dict[str, Any]:
    """``{"policy": "same", "icd9": "false", "case_mix": "1.5"}`` (text, as a command line gives it) -> typed
    SiteShift overrides. Raises ValueError naming the field for an unknown field or a value of the wrong type."""
    types = {f.name: f.type for f in fields(SiteShift)}
    out: dict[str, Any] = {}
    for key, text in pairs.items():
        kind = types.get(key)
        if kind is None:
            raise ValueError(f"unknown SiteShift field '{key}'; known: {sorted(types)}")
        if kind in (bool, "bool"):
            low = text.strip().lower()
            if low not in ("true", "false", "yes", "no", "1", "0"):
                raise ValueError(f"SiteShift field '{key}' takes true or false")
            out[key] = low in ("true", "yes", "1")
        elif kind in (float, "float"):
            try:
                out[key] = float(text)
            except ValueError:
                raise ValueError(f"SiteShift field '{key}' takes a number") from None
        else:
            out[key] = text.strip()
    return out


def code_map_to_a(shift: SiteShift) -> dict[str, str]:
    """The map a researcher would write to read B's codes with a model trained at A (``--code-map``): B's local
    lab codes and ICD-9 codes -> A's codes. Units are not converted (a code map renames codes only)."""
    out: dict[str, str] = {}
    if shift.local_lab_codes:
        out.update({v: k for k, v in LOCAL_LAB_CODES.items()})
    if shift.icd9:
        out.update(ICD9_TO_ICD10)
    return out


def lerp(a: float, b: float, f: float) -> float:
    """``a`` moved ``f`` of the way to ``b``; exactly ``b`` at f = 1 and ``a`` at f = 0."""
    if f == 1.0:
        return b
    if f == 0.0:
        return a
    return a + f * (b - a)
