"""A site comparison for ``ehrseq validate``: what differs between the sites of a dataset before training on it.

:func:`compare_sites` runs when the subjects carry a static site code (``SITE//A``, ...) naming two or more
sites. Per site: subjects, events per subject and visit cadence (days between a subject's consecutive event
days); codes present at one site only (counted; named only when common, see below), the events they hold, and
the share of the site's events they are; numeric value distributions (median, quartiles) per site for the common
numeric codes present at every site, with the ratio of the largest to the smallest site median (a factor of 2 or
more usually means another unit or assay). Warnings say what a model trained at one site would misread.

Privacy follows :mod:`ehrseq.datacheck`: a code is named only when it occurs in at least ``min_code_events``
events of at least ``min_code_subjects`` subjects (at that site, for codes of one site); value quantiles are
reported only for codes with at least :data:`MIN_VALUE_EVENTS` values from :data:`MIN_VALUE_SUBJECTS` subjects
at every site. Everything else is counted.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from ehrseq import codes as C
from ehrseq.io.conventions import detect, site_of

MIN_VALUE_EVENTS = 20
MIN_VALUE_SUBJECTS = 5
TOP = 10
UNIT_RATIO = 2.0  # largest / smallest site median at or above which a code is flagged


def _quartiles(x: np.ndarray) -> dict[str, float]:
    q1, med, q3 = np.quantile(x, [0.25, 0.5, 0.75])
    return {"median": float(med), "q1": float(q1), "q3": float(q3)}


def _cadence(ev: pd.DataFrame) -> dict[str, Any]:
    """Days between a subject's consecutive distinct event days (timed events other than birth)."""
    t = ev.loc[ev["time"].notna() & (ev["code"] != C.BIRTH), ["subject_id", "time"]]
    day = t.assign(time=t["time"].dt.floor("D")).drop_duplicates().sort_values(["subject_id", "time"])
    gaps = day.groupby("subject_id")["time"].diff().dropna().dt.total_seconds().to_numpy() / 86400.0
    if not len(gaps):
        return {"gaps": 0}
    return {"gaps": int(len(gaps)), **_quartiles(gaps)}


def _one_site_codes(ev: pd.DataFrame, site: pd.Series, names: list[str], site_prefix: str, min_events: int,
                    min_subjects: int) -> tuple[dict[str, Any], int]:
    code = ev["code"].astype(str)
    keep = ~code.str.startswith(site_prefix).to_numpy()  # the site codes themselves differ by definition
    s = ev["subject_id"].map(site).to_numpy()
    per = pd.DataFrame({"code": code.to_numpy(), "site": s, "sid": ev["subject_id"].to_numpy()})[keep]
    n_sites_of = per.drop_duplicates(["code", "site"]).groupby("code")["site"].nunique()
    only = set(n_sites_of.index[n_sites_of == 1])
    out: dict[str, Any] = {}
    for name in names:
        at = per.loc[per["site"] == name]
        mine = at.loc[at["code"].isin(only)]
        stats = mine.groupby("code").agg(events=("sid", "size"), subjects=("sid", "nunique"))
        ok = stats.loc[(stats["events"] >= min_events) & (stats["subjects"] >= min_subjects)]
        ok = ok.sort_values(["events"], ascending=False, kind="stable")
        shown = [{"code": str(c), "events": int(r.events), "subjects": int(r.subjects)}
                 for c, r in ok.head(TOP).iterrows()]
        out[name] = {"codes": int(len(stats)), "events": int(stats["events"].sum()),
                     "share_of_events": float(len(mine) / max(len(at), 1)), "examples": shown,
                     "examples_not_shown": int(len(stats) - len(shown))}
    return out, int((n_sites_of >= 2).sum())


def _numeric(ev: pd.DataFrame, site: pd.Series, names: list[str]) -> list[dict[str, Any]]:
    num = ev.loc[ev["numeric_value"].notna() & ev["time"].notna(), ["subject_id", "code", "numeric_value"]]
    num = num.assign(site=num["subject_id"].map(site).to_numpy(), code=num["code"].astype(str))
    g = num.groupby(["code", "site"]).agg(n=("numeric_value", "size"), subjects=("subject_id", "nunique"))
    ok = g.loc[(g["n"] >= MIN_VALUE_EVENTS) & (g["subjects"] >= MIN_VALUE_SUBJECTS)].reset_index()
    every = ok.groupby("code")["site"].nunique()
    common = every.index[every == len(names)]
    total = ok.loc[ok["code"].isin(common)].groupby("code")["n"].sum().sort_values(ascending=False, kind="stable")
    rows = []
    for code in total.index[:TOP]:
        vals = num.loc[num["code"] == code]
        per = {name: {"n": int(len(v)), **_quartiles(v.to_numpy(np.float64))}
               for name, v in vals.groupby("site")["numeric_value"] if name in names}
        meds = np.array([abs(p["median"]) for p in per.values()])
        ratio = float(meds.max() / meds.min()) if meds.min() > 0 else None
        rows.append({"code": str(code), "by_site": per, "median_ratio": ratio})
    return rows


def compare_sites(events: pd.DataFrame, *, min_code_events: int = 5, min_code_subjects: int = 2,
                  warnings: list[str] | None = None) -> dict[str, Any] | None:
    """The site comparison of ``events`` (canonical frame), or None when fewer than two sites are named.

    Appends to ``warnings`` what a model trained at one site would misread at another (codes of one site only,
    numeric codes whose medians differ by :data:`UNIT_RATIO` or more).
    """
    conv = detect(events)
    site = site_of(events, conv)
    names = sorted(str(s) for s in pd.unique(site) if str(s))
    if len(names) < 2:
        return None
    ev = events.loc[events["subject_id"].isin(site.index)]
    per_site: dict[str, Any] = {}
    for name in names:
        e = ev.loc[ev["subject_id"].map(site).to_numpy() == name]
        n_per = e.groupby("subject_id").size().to_numpy()
        per_site[name] = {"subjects": int(len(n_per)), "events": int(len(e)),
                          "events_per_subject": _quartiles(n_per), "days_between_visits": _cadence(e),
                          "distinct_codes": int(e["code"].nunique())}
    only, shared = _one_site_codes(ev, site, names, conv.site_prefix or C.SITE_PREFIX, min_code_events,
                                   min_code_subjects)
    numeric = _numeric(ev, site, names)
    out = {"sites": names, "subjects_without_site": int(events["subject_id"].nunique() - len(site)),
           "per_site": per_site, "codes_shared": shared, "codes_one_site": only, "numeric": numeric,
           "value_rule": {"min_events": MIN_VALUE_EVENTS, "min_subjects": MIN_VALUE_SUBJECTS}}
    if warnings is not None:
        for name, d in only.items():
            if d["share_of_events"] >= 0.01:
                warnings.append(f"site {name}: {_codes(d['codes'])} ({d['share_of_events']:.0%} of its events) "
                                "occur at no other site: local codes or another vocabulary? A model trained elsewhere does "
                                "not read them (a code map renames them: --code-map)")
        for r in numeric:
            if r["median_ratio"] is not None and r["median_ratio"] >= UNIT_RATIO:
                warnings.append(f"{r['code']}: site medians differ {r['median_ratio']:.1f}-fold: another unit or "
                                "assay at one site?")
    return out


def _codes(n: int) -> str:
    return f"{n:,} code{'' if n == 1 else 's'}"


def _q(d: Mapping[str, Any]) -> str:
    return f"{d['median']:.3g} ({d['q1']:.3g}-{d['q3']:.3g})"


def format_sites(s: Mapping[str, Any]) -> list[str]:
    """Plain-text lines for :func:`compare_sites`'s dict (``ehrseq validate``)."""
    names = s["sites"]
    w = max(len(n) for n in names) + 2
    lines = [f"sites: {', '.join(names)} (median (quartiles); visits = distinct event days)"]
    for n in names:
        p = s["per_site"][n]
        cad = p["days_between_visits"]
        cad_text = _q(cad) if cad.get("gaps") else "no repeat visits"
        lines.append(f"  {n:<{w}}{p['subjects']:,} subjects, {p['events']:,} events; events/subject "
                     f"{_q(p['events_per_subject'])}; days between visits {cad_text}; {p['distinct_codes']:,} codes")
    lines.append(f"  codes at every site: {s['codes_shared']:,}" if len(names) == 2 else
                 f"  codes at two or more sites: {s['codes_shared']:,}")
    for n in names:
        d = s["codes_one_site"][n]
        if not d["codes"]:
            lines.append(f"  only at {n}: none")
            continue
        ex = ", ".join(f"{r['code']} ({r['events']:,})" for r in d["examples"]) or "none named"
        more = f"; {d['examples_not_shown']} more not named" if d["examples_not_shown"] else ""
        lines.append(f"  only at {n}: {_codes(d['codes'])}, {d['events']:,} events ({d['share_of_events']:.1%} of its "
                     f"events): {ex}{more}")
    if s["numeric"]:
        lines.append("  numeric values by site, median (quartiles):")
        for r in s["numeric"]:
            parts = "; ".join(f"{n} {_q(r['by_site'][n])}" for n in names if n in r["by_site"])
            flag = (f"  <- medians differ {r['median_ratio']:.1f}-fold" if r["median_ratio"] is not None
                    and r["median_ratio"] >= UNIT_RATIO else "")
            lines.append(f"    {r['code']}: {parts}{flag}")
    return lines


__all__ = ["compare_sites", "format_sites"]
