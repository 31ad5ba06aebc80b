"""Building blocks of the cohort generator: an event buffer, day arithmetic, and biopsy reports as events."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ehrseq import codes


class EventBuffer:
    """Collects event columns as numpy chunks; one concatenation at the end."""

    def __init__(self) -> None:
        self.sid: list[np.ndarray] = []
        self.time: list[np.ndarray] = []
        self.code: list[np.ndarray] = []
        self.num: list[np.ndarray] = []
        self.text: list[np.ndarray] = []

    def add(self, sid, time, code, num=None, text=None) -> None:  # noqa: ANN001 - numpy-like inputs
        """Append events: ``sid`` (n,), ``time``/``code`` broadcast to (n,), optional values and texts."""
        sid = np.asarray(sid, dtype=np.int64)
        n = sid.shape[0]
        if n == 0:
            return
        self.sid.append(sid)
        self.time.append(np.broadcast_to(np.asarray(time, dtype="datetime64[us]"), (n,)))
        self.code.append(np.broadcast_to(np.asarray(code, dtype=object), (n,)))
        self.num.append(np.full(n, np.nan, np.float32) if num is None else np.asarray(num, np.float32))
        self.text.append(np.full(n, None, object) if text is None else np.asarray(text, dtype=object))

    def extend(self, other: EventBuffer) -> None:
        """Append every chunk of ``other`` (in its order)."""
        for name in ("sid", "time", "code", "num", "text"):
            getattr(self, name).extend(getattr(other, name))

    def frame(self) -> pd.DataFrame:
        """The events in canonical MEDS columns and order."""
        df = pd.DataFrame(
            {
                "subject_id": np.concatenate(self.sid),
                "time": np.concatenate(self.time),
                "code": pd.array(np.concatenate(self.code), dtype="string"),
                "numeric_value": np.concatenate(self.num),
                "text_value": pd.array(np.concatenate(self.text), dtype="string"),
            }
        )
        # MEDS order: by subject, static (NaT) facts first, then by time; stable within a timestamp.
        df["_static"] = df["time"].notna()
        df = df.sort_values(["subject_id", "_static", "time"], kind="stable").drop(columns="_static")
        return df.reset_index(drop=True)


def days(x: np.ndarray) -> np.ndarray:
    """Float days -> timedelta64[us], rounded to the second."""
    return (np.round(x * 86400.0) * 1_000_000).astype("timedelta64[us]")


def biopsies(rng: np.random.Generator, ev: EventBuffer, rows: list) -> pd.DataFrame:
    """Temporal artery biopsy reports for the patients with GCA suspicion: report events (and GCA diagnoses) go
    into ``ev``; returns the label table."""
    cols = ["subject_id", "time", "report_id", *codes.BIOPSY_LABELS]
    if not rows:
        return pd.DataFrame({c: pd.Series(dtype="int64") for c in cols})
    from ehrseq.synth.reports import generate_report

    s = np.concatenate([r[0] for r in rows])
    tt = np.concatenate([r[1] for r in rows]).astype("datetime64[us]")
    site = np.concatenate([r[2] for r in rows])
    texts, labels = [], []
    for site_k in site:
        text, lab = generate_report(rng, site=str(site_k))[:2]
        texts.append(text)
        labels.append(lab)
    ev.add(s, tt, codes.BIOPSY_REPORT, text=np.array(texts, dtype=object))
    gca = np.array([lab["gca"] for lab in labels], bool)
    ev.add(s[gca], tt[gca] + np.timedelta64(3, "D"), "ICD10//M31.6")
    ev.add(s[gca], tt[gca] + np.timedelta64(3, "D"), "RX//PREDNISONE")
    out = pd.DataFrame({"subject_id": s, "time": tt, "report_id": [f"TAB-{i:06d}" for i in range(len(s))]})
    for lab_name in codes.BIOPSY_LABELS:
        out[lab_name] = np.array([int(lab[lab_name]) for lab in labels], dtype=np.int64)
    return out
