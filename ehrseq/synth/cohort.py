"""A synthetic rheumatoid-arthritis cohort at two sites, with the truth it was drawn from.

The generator is vectorised across patients and steps visit by visit. Each patient has a latent disease
activity ``d(t)`` that follows an Ornstein-Uhlenbeck process whose mean falls with treatment:

    d(t + dt) = mu + (d(t) - mu) * exp(-dt / TAU) + SIGMA * sqrt(1 - exp(-2 dt / TAU)) * z

    CDAI = clip(12 + 8 d + N(0, 3^2), 0, 76)        (<= 10 is controlled)

Treatment escalates when CDAI > 10 (csDMARD add-on, biologic start or switch), so drugs carry real signal.
Flares occur at a hazard ``LAMBDA0 * exp(0.9 d)`` between visits. Because the generator knows ``d`` and
``mu`` it can record, for every label it emits, the probability it really used: the oracle that bounds
what any model can reach. ``truth_cdai`` holds, per visit, the probability that the next visit's CDAI is
controlled (``true_prob_controlled``) and, at visits with a recorded CDAI, that the next *recorded* CDAI is
(``true_prob_controlled_next_cdai``, what the ``cdai`` target's labels ask; NaN where a visit in between had
no CDAI and a treatment decision made on the unrecorded state, so no closed form exists).

The two sites differ as real sites do. The default (mild) shift: visit frequency (A ~ every 3 months, B ~ every
5), biologic use, case mix (B older, more comorbid), lab ordering and reporting (B reports CRP in mg/dL under
the same code and measures ESR by a method that reads ~1.4x higher) and coding habits (B codes RA as M06.9 and
records fewer secondary diagnoses). ``shift=`` (:class:`ehrseq.synth.shift.SiteShift`, or ``"realistic"``)
adds, one switch each: local lab codes and ICD-9 diagnoses at B, visit cadence and lab ordering that follow
disease state, nurse visits without a CDAI, a tighter treat-to-target policy with an unrecorded co-intervention
(concept shift), and a stronger case mix. See :mod:`ehrseq.synth.shift`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
from scipy.special import expit, ndtr

from ehrseq import codes
from ehrseq.synth import shift as S
from ehrseq.synth.buffer import EventBuffer, biopsies, days

TAU = 120.0  # days: how fast disease activity relaxes to its treated mean
SIGMA = 0.8  # stationary spread of disease activity around its mean
CDAI_NOISE = 3.0
LAMBDA0 = 1.0 / 1500.0  # flare hazard per day at d = 0
FLARE_BETA = 0.9
MAX_VISITS = 24
END_DATE = np.datetime64("2025-01-01")

COMORBIDITIES = {  # code: (prevalence at site A, at site B)
    "ICD10//E11.9": (0.10, 0.16),  # type 2 diabetes
    "ICD10//I10": (0.30, 0.42),  # hypertension
    "ICD10//M81.0": (0.12, 0.18),  # osteoporosis
    "ICD10//J84.10": (0.04, 0.06),  # interstitial lung disease
    "ICD10//F32.9": (0.12, 0.10),  # depression
}
ACUTE = ("ICD10//J06.9", "ICD10//M25.50", "ICD10//D64.9", "ICD10//R53.83")


@dataclass(frozen=True)
class SiteProfile:
    """How one synthetic site differs: its share of patients, visit rhythm and measurement habits."""

    name: str
    share: float  # share of patients
    visit_shape: float  # gamma shape of the visit interval
    visit_scale: float  # gamma scale (days)
    p_biologic: float  # chance an escalation starts a biologic rather than a csDMARD
    age_mean: float
    lab_rate: float  # chance ESR/CRP are measured at a visit
    cdai_missing: float
    secondary_coding: float  # multiplier on recording comorbidity / acute codes
    ra_code_unspecified: float  # share of RA coded as M06.9
    crp_scale: float  # CRP as recorded: 1.0 = mg/L; 0.1 = the same CRP reported in mg/dL
    esr_scale: float  # ESR method/lab bias (e.g. automated vs Westergren)


SITES = (
    SiteProfile("A", 0.55, 4.0, 22.0, 0.55, 54.0, 0.9, 0.02, 1.0, 0.1, 1.0, 1.0),
    SiteProfile("B", 0.45, 2.5, 60.0, 0.30, 60.0, 0.7, 0.08, 0.6, 0.7, 0.1, 1.4),
)


@dataclass
class SynthCohort:
    """Events in canonical MEDS columns plus the truth tables the generator used."""

    events: pd.DataFrame
    patients: pd.DataFrame  # subject_id, site, sex, birth_date, seropositive, severity
    # subject_id, prediction_time, true_prob_controlled, true_next_cdai, true_prob_controlled_next_cdai
    truth_cdai: pd.DataFrame
    truth_flare: pd.DataFrame  # subject_id, prediction_time, true_log_hazard
    biopsy_labels: pd.DataFrame  # subject_id, time, report_id, label columns
    params: dict = field(default_factory=dict)


@dataclass
class _Part:
    ev: EventBuffer
    patients: pd.DataFrame
    truth_cdai: list
    truth_next: list
    truth_flare: list
    biopsy_labels: pd.DataFrame


def _profiles(shift: S.SiteShift, n_sites: int) -> tuple[tuple[SiteProfile, ...], dict[str, tuple[float, float]]]:
    """Site profiles and comorbidity prevalences under ``shift`` (only B's change)."""
    a, b = SITES
    b = replace(b, age_mean=S.lerp(a.age_mean, b.age_mean, shift.case_mix))
    if not shift.units:
        b = replace(b, crp_scale=1.0, esr_scale=1.0)
    comorb = {c: (p[0], min(max(S.lerp(p[0], p[1], shift.case_mix), 0.0), 1.0)) for c, p in COMORBIDITIES.items()}
    return (a, b)[:n_sites], comorb


def generate_cohort(n_patients: int = 2000, *, n_sites: int = 2, seed: int = 0, biopsy_rate: float = 0.05,
                    shift: S.SiteShift | str | None = None) -> SynthCohort:
    """Draw a cohort of ``n_patients``; the same seed (and shift) gives the same cohort, bit for bit.

    ``shift``: how site B differs from A (:mod:`ehrseq.synth.shift`): None or ``"mild"`` (the default, the
    cohort's original sites), ``"realistic"``, or a :class:`~ehrseq.synth.shift.SiteShift`.
    """
    if n_patients < 1:
        raise ValueError("n_patients must be at least 1")
    if not 1 <= n_sites <= len(SITES):
        raise ValueError(f"n_sites must be between 1 and {len(SITES)}")
    sh = S.resolve_shift(shift)
    rng = np.random.default_rng(seed)
    n = n_patients
    sid = np.arange(1, n + 1, dtype=np.int64) + 10_000
    sites, comorb = _profiles(sh, n_sites)
    shares = np.array([s.share for s in sites]) / sum(s.share for s in sites)
    site_idx = rng.choice(len(sites), size=n, p=shares)
    if sh.separate_sites:  # one random stream per site: a change at B leaves A bit for bit the same
        parts = [_simulate(np.random.default_rng([seed, j]), sid[site_idx == j], site_idx[site_idx == j], sites,
                           comorb, sh, biopsy_rate) for j in range(len(sites))]
    else:
        parts = [_simulate(rng, sid, site_idx, sites, comorb, sh, biopsy_rate)]
    ev = parts[0].ev
    for p in parts[1:]:
        ev.extend(p.ev)
    events = ev.frame()
    recodes = sh.recodes
    if recodes and n_sites > 1:
        at_b = events["subject_id"].isin(sid[site_idx == 1]).to_numpy()
        inv, uniq = pd.factorize(events.loc[at_b, "code"].to_numpy(dtype=object))
        mapped = np.array([recodes.get(c, c) for c in uniq], dtype=object)
        events.loc[at_b, "code"] = pd.array(mapped[inv], dtype="string")
    truth_c = _truth_cdai(parts)
    truth_f = pd.DataFrame(
        {
            "subject_id": np.concatenate([x[0] for p in parts for x in p.truth_flare]),
            "prediction_time": np.concatenate([x[1] for p in parts for x in p.truth_flare]).astype("datetime64[us]"),
            "true_log_hazard": np.concatenate([x[2] for p in parts for x in p.truth_flare]),
        }
    ).sort_values(["subject_id", "prediction_time"], kind="stable", ignore_index=True)
    patients = pd.concat([p.patients for p in parts], ignore_index=True)
    bx = pd.concat([p.biopsy_labels for p in parts if len(p.biopsy_labels)] or [parts[0].biopsy_labels],
                   ignore_index=True)
    if len(parts) > 1:
        patients = patients.sort_values("subject_id", kind="stable", ignore_index=True)
        bx["report_id"] = [f"TAB-{i:06d}" for i in range(len(bx))]
    return SynthCohort(
        events=events,
        patients=patients,
        truth_cdai=truth_c,
        truth_flare=truth_f,
        biopsy_labels=bx,
        params={"seed": seed, "n_patients": n_patients, "n_sites": n_sites, "biopsy_rate": biopsy_rate,
                "shift": sh.to_dict()},
    )


def _truth_cdai(parts: list[_Part]) -> pd.DataFrame:
    rows = [x for p in parts for x in p.truth_cdai]
    truth = pd.DataFrame(
        {
            "subject_id": np.concatenate([x[0] for x in rows]),
            "prediction_time": np.concatenate([x[1] for x in rows]).astype("datetime64[us]"),
            "true_prob_controlled": np.concatenate([x[2] for x in rows]),
            "true_next_cdai": np.concatenate([x[3] for x in rows]),
        }
    ).sort_values(["subject_id", "prediction_time"], kind="stable", ignore_index=True)
    nxt = [x for p in parts for x in p.truth_next]
    nx = pd.DataFrame({
        "subject_id": np.concatenate([x[0] for x in nxt]) if nxt else np.zeros(0, np.int64),
        "prediction_time": (np.concatenate([x[1] for x in nxt]) if nxt else np.zeros(0, "datetime64[us]"))
        .astype("datetime64[us]"),
        "true_prob_controlled_next_cdai": np.concatenate([x[2] for x in nxt]) if nxt else np.zeros(0),
    })
    return truth.merge(nx, on=["subject_id", "prediction_time"], how="left", validate="one_to_one")


def _simulate(rng: np.random.Generator, sid: np.ndarray, site_idx: np.ndarray, sites: tuple[SiteProfile, ...],
              comorbidities: dict[str, tuple[float, float]], sh: S.SiteShift, biopsy_rate: float) -> _Part:
    """Simulate the patients ``sid`` (site index per patient) with ``rng``: events, patients and truth."""
    n = len(sid)
    prof = {k: np.array([getattr(sites[i], k) for i in site_idx]) for k in SiteProfile.__dataclass_fields__ if k != "name"}
    site_name = np.array([s.name for s in sites])[site_idx]
    at_b = site_idx == 1
    tight = at_b & (sh.policy == "tight")
    cad_state = at_b & (sh.cadence == "state")
    lab_state = at_b & (sh.lab_ordering == "state")
    doc_q = np.where(at_b, sh.cdai_documentation, 0.0)
    p_esc = np.where(tight, S.TIGHT_ESCALATION, S.ESCALATION)

    female = rng.random(n) < 0.75
    age0 = np.clip(rng.normal(prof["age_mean"], 13.0), 20, 90)
    start = np.datetime64("2012-01-01") + days(rng.uniform(0, 8 * 365, n))
    birth = start - days(age0 * 365.25)
    rf_pos = rng.random(n) < 0.7
    ccp_pos = np.where(rf_pos, rng.random(n) < 0.8, rng.random(n) < 0.3)
    seropos = rf_pos | ccp_pos
    severity = rng.normal(0.6, 0.7, n) + 0.4 * seropos + 0.01 * (age0 - 55)
    if sh.case_mix > 1 and at_b.any():
        severity = severity + np.where(at_b, S.SEVERITY_PER_CASE_MIX * (sh.case_mix - 1), 0.0)
    bio_response = np.clip(rng.normal(1.0, 0.5, (n, len(codes.BIOLOGICS))), 0.0, 2.0)

    ev = EventBuffer()
    # Static facts and birth.
    ev.add(sid, np.datetime64("NaT"), np.where(female, codes.SEX_PREFIX + "F", codes.SEX_PREFIX + "M"))
    ev.add(sid, np.datetime64("NaT"), np.char.add(codes.SITE_PREFIX, site_name.astype(str)).astype(object))
    ev.add(sid, birth, codes.BIRTH)
    # Baseline serology at the first visit.
    ev.add(sid, start, codes.RF, np.where(rf_pos, rng.lognormal(4.5, 0.6, n), rng.lognormal(2.0, 0.5, n)))
    ev.add(sid, start, codes.ANTI_CCP, np.where(ccp_pos, rng.lognormal(4.8, 0.7, n), rng.lognormal(1.5, 0.5, n)))
    comorb = {c: rng.random(n) < np.where(site_idx == 0, p[0], p[1]) for c, p in comorbidities.items()}
    ra_code = np.where(
        rng.random(n) < prof["ra_code_unspecified"], "ICD10//M06.9", np.where(seropos, "ICD10//M05.79", "ICD10//M06.09")
    ).astype(object)

    # State.
    d = severity + rng.normal(0, 0.5, n)
    t = start.copy()
    active = np.ones(n, bool)
    on_mtx = np.zeros(n, bool)
    n_cs = np.zeros(n, np.int64)  # add-on csDMARDs (HCQ, SSZ, LEF)
    bio = np.full(n, -1, np.int64)
    steroid = np.zeros(n, bool)
    mtx_up = np.zeros(n, np.int64)  # B's methotrexate dose steps (same code at every dose: not in the data)
    nurse_next = np.zeros(n, bool)  # the next visit is booked as a nurse visit (no CDAI, treatment held)
    last_cdai = np.full(n, np.nan)  # the latest recorded CDAI (what scheduling and ordering go by)
    # The latest visit with a recorded CDAI ("anchor") and the truth for the next recorded CDAI from it.
    anc_d, anc_t, anc_mu = np.zeros(n), start.copy(), np.zeros(n)
    anc_ok, pend_has, pend_ok, pend_p = (np.zeros(n, bool), np.zeros(n, bool), np.zeros(n, bool), np.zeros(n))
    n_visits = np.zeros(n, np.int64)
    t_last = start.copy()  # time of each patient's latest actual visit
    truth_cdai, truth_next, truth_flare = [], [], []
    biopsy_at = np.where(
        (age0 > 55) & (rng.random(n) < biopsy_rate * 2), rng.integers(1, 6, n), -1
    )  # visit index at which GCA is suspected
    biopsy_rows = []

    for k in range(MAX_VISITS):
        idx = np.flatnonzero(active)
        if idx.size == 0:
            break
        m = idx.size
        tk = t[idx]
        n_visits[idx] += 1
        t_last[idx] = tk
        s = sid[idx]
        nurse = nurse_next[idx]
        ev.add(s, tk, codes.VISIT)
        # Observed disease activity and labs.
        cdai = np.clip(12 + 8 * d[idx] + rng.normal(0, CDAI_NOISE, m), 0, 76)
        seen = (rng.random(m) >= prof["cdai_missing"][idx]) & ~nurse
        ev.add(s[seen], tk[seen], codes.CDAI, np.round(cdai[seen], 1))
        done = seen & pend_has[idx]  # the anchor's next recorded CDAI is this one
        truth_next.append((s[done], anc_t[idx][done], np.where(pend_ok[idx][done], pend_p[idx][done], np.nan)))
        last_cdai[idx[seen]] = cdai[seen]
        above = ~(last_cdai[idx] <= 10)  # above target by the latest recorded CDAI (none yet: treated as above)
        p_lab = prof["lab_rate"][idx]
        if lab_state.any():
            p_lab = np.where(lab_state[idx], np.where(above, S.LAB_RATE_BY_STATE[1], S.LAB_RATE_BY_STATE[0]), p_lab)
        labs = rng.random(m) < p_lab
        age_k = age0[idx] + (tk - start[idx]).astype("timedelta64[D]").astype(float) / 365.25
        esr = np.exp(np.log(12) + 0.35 * d[idx] + 0.01 * (age_k - 50) + 0.2 * female[idx] + rng.normal(0, 0.3, m))
        crp = np.exp(np.log(4) + 0.6 * d[idx] + rng.normal(0, 0.5, m))
        # Recorded as each site's lab reports them (same code, different unit/method: a silent shift).
        ev.add(s[labs], tk[labs], codes.ESR, np.round(esr[labs] * prof["esr_scale"][idx][labs], 0))
        ev.add(s[labs], tk[labs], codes.CRP, np.round(crp[labs] * prof["crp_scale"][idx][labs], 2))
        # Diagnoses: RA at every visit, comorbidities and acute problems recorded with site habits.
        ev.add(s, tk, ra_code[idx])
        rec = prof["secondary_coding"][idx]
        for c, has in comorb.items():
            w = has[idx] & (rng.random(m) < (0.9 if k == 0 else 0.35) * rec)
            ev.add(s[w], tk[w], c)
        on_bio = bio[idx] >= 0
        p_acute = {
            "ICD10//J06.9": 0.04 + 0.10 * on_bio + 0.06 * steroid[idx],
            "ICD10//M25.50": 0.55 * expit(2 * (d[idx] - 1.0)),
            "ICD10//D64.9": 0.02 + 0.15 * (d[idx] > 1.2),
            "ICD10//R53.83": 0.25 * expit(d[idx]),
        }
        for c, p in p_acute.items():
            w = rng.random(m) < p * rec
            ev.add(s[w], tk[w], c)

        # Treatment decisions at this visit (clinicians see CDAI, or guess from joints when missing; nothing
        # changes at a nurse visit).
        seen_cdai = np.where(seen, cdai, 12 + 8 * d[idx])
        high = seen_cdai > 10
        if k == 0:
            on_mtx[idx] = rng.random(m) < 0.9
            n_cs[idx] = (~on_mtx[idx]).astype(np.int64)
        else:
            esc = high & (rng.random(m) < p_esc[idx]) & ~nurse
            if tight.any():  # B optimises the methotrexate dose first: an escalation the codes do not show
                dose = esc & tight[idx] & on_mtx[idx] & (mtx_up[idx] < S.MTX_DOSE_STEPS)
                mtx_up[idx[dose]] += 1
                esc = esc & ~dose
            to_bio = esc & (bio[idx] < 0) & (rng.random(m) < prof["p_biologic"][idx])
            add_cs = esc & (bio[idx] < 0) & ~to_bio & (n_cs[idx] < 3)
            switch = esc & (bio[idx] >= 0) & (rng.random(m) < 0.5)
            ev.add(s[switch], tk[switch], codes.BIOLOGIC_FAILURE)
            newbio = rng.integers(0, len(codes.BIOLOGICS), m)
            bio[idx[to_bio | switch]] = np.where(
                newbio[to_bio | switch] == bio[idx[to_bio | switch]],
                (newbio[to_bio | switch] + 1) % len(codes.BIOLOGICS),
                newbio[to_bio | switch],
            )
            n_cs[idx[add_cs]] += 1
        steroid[idx] = np.where(nurse, steroid[idx], (seen_cdai > 22) & (rng.random(m) < 0.6))
        # Prescriptions active after this visit.
        ev.add(s[on_mtx[idx]], tk[on_mtx[idx]], "RX//METHOTREXATE")
        for j, drug in enumerate(codes.CSDMARDS[1:]):
            w = n_cs[idx] > j
            ev.add(s[w], tk[w], drug)
        for j, drug in enumerate(codes.BIOLOGICS):
            w = bio[idx] == j
            ev.add(s[w], tk[w], drug)
        st = steroid[idx]
        ev.add(s[st], tk[st], "RX//PREDNISONE")

        # GCA suspicion: PMR code and a temporal artery biopsy a week later.
        bx = biopsy_at[idx] == k
        if bx.any():
            biopsy_rows.append((s[bx], tk[bx] + np.timedelta64(7, "D"), site_name[idx][bx]))
            ev.add(s[bx], tk[bx], "ICD10//M35.3")

        # Next visit: interval, latent evolution under treatment, truth, flares, drop-out.
        scale = prof["visit_scale"][idx]
        if cad_state.any():
            scale = scale * np.where(cad_state[idx], np.where(above, S.CADENCE_FACTORS[1], S.CADENCE_FACTORS[0]), 1.0)
        dt = rng.gamma(prof["visit_shape"][idx], scale)
        bio_eff = np.where(bio[idx] >= 0, bio_response[idx, np.maximum(bio[idx], 0)], 0.0)
        mu = severity[idx] - 0.9 * on_mtx[idx] - 0.35 * n_cs[idx] - 1.2 * bio_eff - 0.5 * st
        d_now = d[idx]
        if tight.any():
            mu = mu - S.MTX_DOSE_EFFECT * mtx_up[idx]
        if tight.any():  # B's unrecorded depot steroid when above target: activity drops now, then relaxes back
            d_now = d_now - S.INJECTION_EFFECT * (tight[idx] & high & seen)
        decay = np.exp(-dt / TAU)
        mean_next = mu + (d_now - mu) * decay
        var_next = SIGMA**2 * (1 - decay**2)
        p_ctrl = ndtr((10 - 12 - 8 * mean_next) / np.sqrt(64 * var_next + CDAI_NOISE**2))
        truth_cdai.append((s, tk, p_ctrl, 12 + 8 * mean_next))
        # From the anchor (latest recorded CDAI): exact while every visit since was a nurse visit (mu held).
        anc_ok[idx] = np.where(seen, True, anc_ok[idx] & nurse & (mu == anc_mu[idx]))
        anc_d[idx[seen]], anc_t[idx[seen]], anc_mu[idx[seen]] = d_now[seen], tk[seen], mu[seen]
        span = dt + (tk - anc_t[idx]).astype("timedelta64[us]").astype(np.float64) / 86_400e6
        da = np.exp(-span / TAU)
        mean_a = mu + (anc_d[idx] - mu) * da
        pend_p[idx] = ndtr((10 - 12 - 8 * mean_a) / np.sqrt(64 * SIGMA**2 * (1 - da**2) + CDAI_NOISE**2))
        pend_ok[idx] = anc_ok[idx]
        pend_has[idx] |= seen
        if doc_q.any():  # B books the next visit as a nurse visit, more often for patients at target
            q = doc_q[idx] * np.where(above, S.DOCUMENTATION_BY_STATE[1], S.DOCUMENTATION_BY_STATE[0])
            nurse_next[idx] = seen & (rng.random(m) < q)
        log_h = np.log(LAMBDA0) + FLARE_BETA * d[idx]
        truth_flare.append((s, tk, log_h))
        t_flare = rng.exponential(1.0 / np.exp(log_h))
        fl = (t_flare < dt) & (tk + days(t_flare) < END_DATE)  # nothing is recorded after the data end
        ev.add(s[fl], tk[fl] + days(t_flare[fl]), codes.FLARE)
        d[idx] = mean_next + np.sqrt(var_next) * rng.standard_normal(m)
        t[idx] = tk + days(dt)
        active[idx] = (t[idx] < END_DATE) & (rng.random(m) > 0.04) & (k + 1 < MAX_VISITS)

    # Deaths after follow-up for a few, more with age and comorbidity.
    p_death = 0.01 + 0.002 * np.clip(age0 - 60, 0, None) + 0.03 * comorb["ICD10//J84.10"]
    t_death = t_last + days(rng.uniform(5, 200, n))
    died = (rng.random(n) < p_death) & (t_death < END_DATE)
    ev.add(sid[died], t_death[died], codes.DEATH)

    biopsy_labels = biopsies(rng, ev, biopsy_rows)
    patients = pd.DataFrame(
        {
            "subject_id": sid,
            "site": site_name.astype(str),
            "sex": np.where(female, "F", "M"),
            "birth_date": birth.astype("datetime64[us]"),
            "seropositive": seropos,
            "severity": severity,
            "n_visits": n_visits,
        }
    )
    return _Part(ev, patients, truth_cdai, truth_next, truth_flare, biopsy_labels)
