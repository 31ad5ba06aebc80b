"""ACES task files turned into ehrseq labels.

A task file is written in the language of ACES (https://eventstreamaces.readthedocs.io): ``predicates``,
``trigger``, ``windows`` with ``has`` constraints, one ``label`` window and one ``index_timestamp``. ehrseq
adds one block ACES lacks, time to event::

    time_to_event:
      event: death      # a predicate defined in the file (or its predicates file)
      horizon: 365d     # a duration as ACES window offsets write them: 24h, 30d, 2w, 365d

Without it a task is binary (``boolean_value``: the label predicate occurs in the label window). With it each
row carries ``duration`` (days from prediction_time to the first ``event`` strictly after it, or to the
horizon or the subject's last timed event, whichever comes first) and ``event`` (1 if the event came first);
the trigger and the windows' ``has`` constraints still decide which rows exist, and a ``label`` window is
optional (unused). ACES labels are counts; like ACES's own MEDS writer, a count above zero is ``True``.
"""

from __future__ import annotations

import logging
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from aces import config as aces_config
from aces import predicates as aces_predicates
from aces import query as aces_query
from aces.utils import parse_timedelta
from omegaconf import DictConfig

from ehrseq.errors import DataValidationError, TargetError, TaskFileError
from ehrseq.tasks.label_files import TaskLabels
from ehrseq.tasks.spec import TaskSpec

log = logging.getLogger(__name__)

TTE_KEY = "time_to_event"
TTE_KEYS = ("event", "horizon")
ACES_KEYS = ("description", "metadata", "predicates", "patient_demographics", "trigger", "windows")
WINDOW_KEYS = ("start", "end", "start_inclusive", "end_inclusive", "has", "label", "index_timestamp")
PREDICATE_KEYS = ("code", "value_min", "value_max", "value_min_inclusive", "value_max_inclusive", "expr")
EXTRA_COLUMNS = ("text_value",)  # event columns besides code/numeric_value a predicate may test for equality
_TRIGGER_HINT = "Add trigger: <predicate>, the event each label row starts from"
_DURATION_HINT = "Write a duration as ACES window offsets do, e.g. 24h, 30d, 2w or 365d (years: write 365d)"


@dataclass(frozen=True)
class TimeToEvent:
    """The parsed ``time_to_event`` block: the event predicate and the follow-up horizon."""

    event: str
    horizon: timedelta
    horizon_text: str

    @property
    def horizon_days(self) -> float:
        """The horizon in days."""
        return self.horizon.total_seconds() / 86400.0


@dataclass
class TaskFile:
    """A loaded task file. ``config`` is the ACES config; when the time-to-event predicate is not used by the
    windows, ``config`` also carries it (and what it is built from) so its column is computed."""

    path: Path
    config: aces_config.TaskExtractorConfig
    time_to_event: TimeToEvent | None
    task_text: str
    predicates_text: str | None
    predicates_path: Path | None = None
    description: str | None = None

    @property
    def kind(self) -> str:
        """The task kind the file defines: survival with a time_to_event block, else binary."""
        return "survival" if self.time_to_event is not None else "binary"


def _read_yaml(path: Path, what: str) -> tuple[str, dict[str, Any]]:
    if not path.is_file():
        raise TaskFileError(str(path), None, f"{what} file not found",
                            "Pass the path of an existing ACES task file (.yaml)")
    text = path.read_text()
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise TaskFileError(str(path), None, f"is not valid YAML{where}",
                            "Fix the YAML syntax (indentation, quotes, colons)") from None
    if not isinstance(doc, dict):
        raise TaskFileError(str(path), None, f"a {what} file must be a mapping of keys",
                            "Start it with top-level keys such as predicates:, trigger:, windows:")
    return text, doc


def _defined_predicates(*docs: dict[str, Any]) -> dict[str, bool]:
    """Predicate name -> static (patient_demographics), over the task file and its predicates file."""
    out: dict[str, bool] = {}
    for doc in docs:
        for name in doc.get("predicates") or {}:
            out[str(name)] = False
        for name in doc.get("patient_demographics") or {}:
            out[str(name)] = True
    return out


def _parse_time_to_event(block: Any, file: str, defined: dict[str, bool]) -> TimeToEvent:
    if not isinstance(block, dict):
        raise TaskFileError(file, TTE_KEY, "must be a mapping with keys event and horizon",
                            "Write time_to_event: {event: <predicate>, horizon: 365d}")
    unknown = [str(k) for k in block if k not in TTE_KEYS]
    if unknown:
        raise TaskFileError(file, f"{TTE_KEY}.{unknown[0]}", "is not a time_to_event key",
                            f"time_to_event takes only {', '.join(TTE_KEYS)}")
    for k in TTE_KEYS:
        if block.get(k) is None:
            example = "death" if k == "event" else "365d"
            raise TaskFileError(file, f"{TTE_KEY}.{k}", "is missing", f"Write {k}: {example}")
    event = block["event"]
    if not isinstance(event, str) or event not in defined:
        names = ", ".join(sorted(n for n, static in defined.items() if not static)) or "none"
        raise TaskFileError(file, f"{TTE_KEY}.event",
                            "names no predicate defined in the task or predicates file",
                            f"Use one of the defined predicates ({names}) or define it under predicates:")
    if defined[event]:
        raise TaskFileError(file, f"{TTE_KEY}.event", "names a static predicate (patient_demographics), "
                            "which has no time", "Name a predicate of timed events")
    text = block["horizon"]
    if not isinstance(text, str):
        raise TaskFileError(file, f"{TTE_KEY}.horizon", "is a number without a unit", _DURATION_HINT)
    if re.fullmatch(r"\s*[\d.]+\s*(y|yr|yrs|years?)\s*", text):
        raise TaskFileError(file, f"{TTE_KEY}.horizon", "is in years, which ACES durations do not take",
                            _DURATION_HINT)
    try:
        horizon = parse_timedelta(text)
    except (TypeError, ValueError):
        raise TaskFileError(file, f"{TTE_KEY}.horizon", "is not a duration", _DURATION_HINT) from None
    if horizon <= timedelta(0):
        raise TaskFileError(file, f"{TTE_KEY}.horizon", "must be a positive duration", _DURATION_HINT)
    return TimeToEvent(event=event, horizon=horizon, horizon_text=text)


def _window_with(doc: dict[str, Any], token: str) -> str | None:
    """The first window whose keys or values mention ``token`` (to name the key an ACES message is about)."""
    for name, w in (doc.get("windows") or {}).items():
        if isinstance(w, dict):
            for k, v in w.items():
                if token == str(k):
                    return f"windows.{name}.{k}"
                if token and token in str(v):
                    return f"windows.{name}.{k}"
    return None


_PATTERNS: list[tuple[str, str, str]] = [
    # (regex on ACES's message, key template with {0}, hint)
    (r"Unrecognized keys in configuration file: '([^']+)'", "{0}",
     f"Top-level keys are {', '.join(ACES_KEYS)} and {TTE_KEY} (predicates files: predicates, "
     "patient_demographics)"),
    (r"Predicate '(\w+)' referenced in '(\w+)'", "predicates.{1}",
     "Define every predicate a derived predicate (expr) names, under predicates:"),
    (r"referenced predicate '(\w+)'", "predicates.{0}",
     "Define it under predicates: (e.g. {name: {code: ...}}) in the task or predicates file"),
    (r"Predicate '(\w+)' is not defined correctly", "predicates.{0}",
     "Define a predicate as a mapping: {code: CODE} or {code: {regex: ...}} or {expr: or(a, b)}"),
    (r"Derived predicate expression must", "predicates", "Write expr: and(a, b) or expr: or(a, b)"),
    (r"for window '(\w+)'", "windows.{0}", "Check this window's label / index_timestamp"),
    (r"Window '(\w+)'", "windows.{0}",
     "A window boundary is null, trigger, start, end or <window>.start/.end, optionally + / - a duration "
     "or -> / <- a predicate"),
    (r"Only one window can be labeled", "windows", "Put label: on one window only"),
    (r"Only the 'start'/'end' of one window", "windows", "Put index_timestamp: on one window only"),
    (r"Trigger event predicate '(\w+)'", "trigger", "The trigger must be a predicate under predicates:"),
    (r"Failed to parse timedelta from window offset for '([^']+)'", "@{0}", _DURATION_HINT),
    (r"unexpected keyword argument '(\w+)'", "@{0}", f"Window keys are {', '.join(WINDOW_KEYS)}"),
]


def _aces_error(exc: Exception, file: str, doc: dict[str, Any]) -> TaskFileError:
    msg = (str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)).strip().rstrip(".")
    if isinstance(exc, KeyError) and msg in ("trigger",):
        return TaskFileError(file, "trigger", "is missing", _TRIGGER_HINT)
    for pattern, key_t, hint in _PATTERNS:
        m = re.search(pattern, msg)
        if m:
            key = key_t.format(*m.groups()) if m.groups() else key_t
            if key.startswith("@"):
                key = _window_with(doc, key[1:]) or "windows"
            return TaskFileError(file, key, f"ACES rejects the task: {msg}", hint)
    return TaskFileError(file, None, f"ACES rejects the task ({type(exc).__name__}): {msg}",
                         "See the ACES configuration docs (predicates, trigger, windows)")


def _load_aces(doc: dict[str, Any], file: str, preds: Path | None) -> aces_config.TaskExtractorConfig:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d) / "task.yaml"
        tmp.write_text(yaml.safe_dump(doc, sort_keys=False))
        try:
            with _quiet_aces():
                return aces_config.TaskExtractorConfig.load(tmp, preds)
        except (KeyError, ValueError, TypeError, AttributeError) as e:
            raise _aces_error(e, file, doc) from None


def _check_predicates(cfg: aces_config.TaskExtractorConfig, file: str) -> None:
    for name, p in cfg.predicates.items():
        if not isinstance(p, aces_config.PlainPredicateConfig):
            continue
        bad = [c for c in p.other_cols if c not in EXTRA_COLUMNS]
        if bad:
            raise TaskFileError(file, f"predicates.{name}.{bad[0]}", "is not a predicate key",
                                f"Predicate keys are {', '.join(PREDICATE_KEYS)} (and text_value to match "
                                "an event's text exactly)")
        try:
            p.MEDS_eval_expr()
            if isinstance(p.code, dict) and "regex" in p.code:
                re.compile(p.code["regex"])
        except (ValueError, re.error) as e:
            hint = "Write code: CODE, code: {regex: '^PREFIX//'} or code: {any: [A, B]}"
            raise TaskFileError(file, f"predicates.{name}.code", f"is not a valid code pattern ({e})",
                                hint) from None


def load_task_file(path: str | Path, predicates: str | Path | None = None) -> TaskFile:
    """Read and check an ACES task file (and optional predicates file that overrides its predicates).

    The ``time_to_event`` block is validated and removed; the rest goes to ACES. Every problem is a
    :class:`~ehrseq.errors.TaskFileError` naming the file, the key and what to write instead.
    """
    path = Path(path)
    pred_path = Path(predicates) if predicates is not None else None
    try:
        return _load(path, pred_path)
    except TaskFileError as e:
        sibling = path.parent / "predicates.yaml"
        undefined = (e.key or "").startswith("predicates.") or e.key == f"{TTE_KEY}.event"
        if pred_path is None and undefined and sibling.is_file() and sibling != path:
            raise TaskFileError(e.file, e.key, e.problem, f"This directory has a predicates file: pass "
                                f"predicates_path / --predicates {sibling}") from None
        raise


def _load(path: Path, pred_path: Path | None) -> TaskFile:
    file = str(path)
    task_text, doc = _read_yaml(path, "task")
    pred_text, pred_doc = _read_yaml(pred_path, "predicates") if pred_path is not None else (None, {})
    if TTE_KEY in pred_doc:
        raise TaskFileError(str(pred_path), TTE_KEY, "belongs in the task file, not the predicates file",
                            "Move the time_to_event block to the task file")
    tte_block = doc.pop(TTE_KEY, None)
    tte = _parse_time_to_event(tte_block, file, _defined_predicates(doc, pred_doc)) \
        if tte_block is not None else None
    if "trigger" not in doc:
        raise TaskFileError(file, "trigger", "is missing", _TRIGGER_HINT)
    cfg = _load_aces(doc, file, pred_path)
    if tte is None and cfg.label_window is None:
        raise TaskFileError(file, "windows", "no window has a label, and there is no time_to_event block",
                            "Add label: <predicate> to the window that decides the outcome, or add "
                            "time_to_event: {event: <predicate>, horizon: 365d}")
    if tte is not None and tte.event not in cfg.predicates:
        ev_doc = {k: doc[k] for k in ("predicates", "patient_demographics") if k in doc}
        ev_cfg = _load_aces({**ev_doc, "trigger": tte.event, "windows": {}}, file, pred_path)
        cfg = aces_config.TaskExtractorConfig(predicates={**ev_cfg.predicates, **cfg.predicates},
                                              trigger=cfg.trigger, windows=cfg.windows)
    _check_predicates(cfg, file)
    meta = doc.get("metadata") if isinstance(doc.get("metadata"), dict) else {}
    description = " ".join(str(doc.get("description") or meta.get("description") or "").split())
    return TaskFile(path=path, config=cfg, time_to_event=tte, task_text=task_text, predicates_text=pred_text,
                    predicates_path=pred_path, description=description or None)


@contextmanager
def _quiet_aces() -> Iterator[None]:
    """ACES logs every step at INFO; keep its warnings, drop the chatter (restored afterwards)."""
    logger = logging.getLogger("aces")
    old = logger.level
    logger.setLevel(max(old, logging.WARNING))
    try:
        yield
    finally:
        logger.setLevel(old)


def _predicates_frame(cfg: aces_config.TaskExtractorConfig, events: pd.DataFrame, file: str) -> pl.DataFrame:
    """ACES's predicates frame for ``events`` (canonical), computed by ACES's own MEDS reader."""
    cols = ["subject_id", "time", "code", "numeric_value"]
    preds = cfg.predicates.values()
    cols += [c for c in EXTRA_COLUMNS if any(c in getattr(p, "other_cols", {}) for p in preds)]
    table = pa.Table.from_pandas(events[cols], preserve_index=False)
    table = table.set_column(2, "code", table.column("code").cast(pa.string()))
    with tempfile.TemporaryDirectory() as d:
        data = Path(d) / "events.parquet"
        pq.write_table(table, data, compression="none")
        data_config = DictConfig({"path": str(data), "standard": "meds"})
        try:
            with _quiet_aces():
                return aces_predicates.get_predicates_df(cfg, data_config)
        except pl.exceptions.PolarsError as e:
            raise TaskFileError(file, "predicates", f"a predicate cannot be evaluated ({type(e).__name__})",
                                "Check the predicates' code patterns and value bounds") from None


def _survival(rows: pl.DataFrame, pred_df: pl.DataFrame, tte: TimeToEvent) -> pl.DataFrame:
    """duration (days) and event for each (subject_id, prediction_time) row; see the module docstring."""
    timed = pred_df.filter(pl.col("timestamp").is_not_null())
    events = (timed.filter(pl.col(tte.event) > 0)
              .select("subject_id", pl.col("timestamp").alias("event_time")).sort("event_time"))
    record_end = timed.group_by("subject_id").agg(pl.col("timestamp").max().alias("record_end"))
    j = rows.sort("prediction_time").join_asof(events, left_on="prediction_time", right_on="event_time",
                                               by="subject_id", strategy="forward", allow_exact_matches=False,
                                               check_sortedness=False)  # sorted globally, so within subjects
    j = j.join(record_end, on="subject_id", how="left")
    horizon_us = tte.horizon // timedelta(microseconds=1)
    horizon_end = pl.col("prediction_time") + pl.duration(microseconds=horizon_us)
    hit = pl.col("event_time").is_not_null() & (pl.col("event_time") <= horizon_end)
    censor = pl.min_horizontal(horizon_end, pl.col("record_end"))
    end = pl.when(hit).then(pl.col("event_time")).otherwise(censor)
    return j.with_columns(
        duration=(end - pl.col("prediction_time")).dt.total_microseconds().cast(pl.Float64) / 86_400e6,
        event=hit.cast(pl.Int64),
    ).select("subject_id", "prediction_time", "duration", "event")


def _describe_window(name: str, w: aces_config.WindowConfig) -> str:
    start = w.start if w.start is not None else "start of record"
    end = w.end if w.end is not None else "end of record"
    return f"window '{name}' ({start} to {end})"


def _definition(task: TaskFile) -> str:
    cfg = task.config
    if task.description:
        return task.description
    if cfg.index_timestamp_window:
        w = cfg.windows[cfg.index_timestamp_window]
        when = f"at the {w.index_timestamp} of {_describe_window(cfg.index_timestamp_window, w)}"
    else:
        when = "at the trigger"
    constrained = [n for n, w in cfg.windows.items() if w.has]
    rows = f"one row per '{cfg.trigger.predicate}' event" + (
        f" whose windows {', '.join(constrained)} meet their constraints" if constrained else "")
    if task.time_to_event is not None:
        t = task.time_to_event
        what = (f"days to the first '{t.event}' after prediction time, censored at {t.horizon_text} or the "
                "end of the record")
    else:
        w = cfg.windows[cfg.label_window]
        what = f"whether '{w.label}' occurs in {_describe_window(cfg.label_window, w)}"
    return f"Predicted {when}, {rows}: {what}."


def extract_labels(task_path: str | Path, events: pd.DataFrame, *, predicates_path: str | Path | None = None,
                   name: str | None = None) -> TaskLabels:
    """Run the ACES task file ``task_path`` on canonical ``events`` and return its labels.

    Binary tasks give ``boolean_value``; a task with a ``time_to_event`` block gives ``duration`` (days) and
    ``event``, rows with a duration <= 0 dropped. ``prediction_time`` is the ``index_timestamp`` window's
    boundary (the trigger time when none is set). Rows are sorted by subject_id, prediction_time; the counts
    (triggers, rows after the window constraints, rows dropped and why) are logged.
    """
    task = load_task_file(task_path, predicates_path)
    file = str(task.path)
    cfg = task.config
    missing = [c for c in ("subject_id", "time", "code", "numeric_value") if c not in events.columns]
    if missing:
        raise DataValidationError("the events frame lacks a column ACES needs", file=file, column=missing[0],
                                  hint="Pass canonical events (ehrseq.io.read_meds / read_extract)")
    pred_df = _predicates_frame(cfg, events, file)
    trig = cfg.trigger.predicate
    n_trig = pred_df.filter(pl.col("timestamp").is_not_null() & (pl.col(trig) > 0)).height
    with _quiet_aces():
        result = aces_query.query(cfg, pred_df)
    if result.height == 0:
        raise TargetError(f"{file}: no rows: {n_trig} '{trig}' trigger events, none met the window "
                          "constraints (check the predicates' codes against this data)")
    pt_col = "index_timestamp" if "index_timestamp" in result.columns else "trigger"
    if pt_col == "trigger":
        log.info("%s: no window sets index_timestamp; prediction_time is the trigger time", file)
    if task.time_to_event is not None and cfg.label_window is not None:
        log.info("%s: time_to_event sets the label; window '%s''s label is unused", file, cfg.label_window)
    rows = result.select("subject_id", pl.col(pt_col).cast(pl.Datetime("us")).alias("prediction_time"),
                         *(["label"] if "label" in result.columns else []))
    dropped: dict[str, int] = {}
    n_null = rows.filter(pl.col("prediction_time").is_null()).height
    if n_null:
        dropped["no prediction_time"] = n_null
        rows = rows.filter(pl.col("prediction_time").is_not_null())
    if task.time_to_event is not None:
        out = _survival(rows.select("subject_id", "prediction_time"), pred_df, task.time_to_event)
        n_bad = out.filter(pl.col("duration") <= 0).height
        if n_bad:
            dropped["duration <= 0 (no follow-up after prediction_time)"] = n_bad
            out = out.filter(pl.col("duration") > 0)
    else:
        out = rows.filter(pl.col("label").is_not_null()).select(
            "subject_id", "prediction_time", boolean_value=pl.col("label") > 0)
        if out.height < rows.height:
            dropped["no label"] = rows.height - out.height
    frame = out.sort("subject_id", "prediction_time").to_pandas()
    frame["subject_id"] = frame["subject_id"].astype("int64")
    frame["prediction_time"] = frame["prediction_time"].astype("datetime64[us]")
    if frame.empty:
        raise TargetError(f"{file}: no rows left after dropping {dropped}")
    dup = int(frame.duplicated(["subject_id", "prediction_time"]).sum())
    if dup:
        raise TargetError(f"{file}: {dup} rows share a (subject_id, prediction_time) with another row; set "
                          "index_timestamp on a window whose boundary differs per trigger (e.g. input.end at "
                          "trigger + 24h)")
    log.info("%s: %d '%s' trigger events, %d rows met the window constraints, %d rows kept%s", file, n_trig,
             trig, result.height, len(frame), "".join(f"; dropped {n}: {why}" for why, n in dropped.items()))
    tte = task.time_to_event
    spec = TaskSpec(
        name=name or task.path.stem, kind=task.kind, definition=_definition(task), source=f"task:{file}",
        horizon_days=tte.horizon_days if tte else None, event=tte.event if tte else None,
        task_file={"task": task.task_text, "predicates": task.predicates_text},
    )
    columns = ["subject_id", "prediction_time", *spec.value_columns]
    return TaskLabels(frame[columns].reset_index(drop=True), spec)


def labels_from_recorded(spec: TaskSpec, events: pd.DataFrame) -> TaskLabels:
    """Rebuild a task's labels on other ``events`` from the task file text a :class:`TaskSpec` recorded
    (``spec.task_file``); the returned labels keep ``spec`` (its name, source and definition)."""
    if not spec.task_file or not spec.task_file.get("task"):
        raise TargetError(f"task '{spec.name}' recorded no task file text; pass the task file or labels")
    with tempfile.TemporaryDirectory() as d:
        task, preds = Path(d) / "task.yaml", None
        task.write_text(spec.task_file["task"])
        if spec.task_file.get("predicates"):
            preds = Path(d) / "predicates.yaml"
            preds.write_text(spec.task_file["predicates"])
        try:
            labels = extract_labels(task, events, predicates_path=preds, name=spec.name)
        except TaskFileError as e:  # name the task's own source, not the temporary copy
            raise TaskFileError(f"{spec.source} (as recorded)", e.key, e.problem, e.hint) from None
        except TargetError as e:
            raise TargetError(str(e).replace(str(task), f"{spec.source} (as recorded)")) from None
    return TaskLabels(labels.frame, replace(labels.spec, source=spec.source, definition=spec.definition))
