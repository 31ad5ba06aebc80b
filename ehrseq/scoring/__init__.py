"""Batch scoring: artifact -> streaming read -> frozen featurize -> predict -> Parquet shards.

    from ehrseq.scoring import score
    s = score("runs/cdai_rnn", "big_extract/meds", "runs/scores")   # out/part-00000.parquet, ...
    print(s.predictions_written, s.rows_quarantined)

What it guarantees:

- **Bounded memory.** MEDS input is read as raw Arrow record batches (``batch_rows`` rows at a time); at most
  one shard of canonical events (about ``shard_rows`` rows) plus one raw batch is held. The only state that
  grows with the input is the set of subject ids already seen (8 bytes per subject, to catch a subject whose
  rows are not contiguous). An EHR-extract directory is read whole by :func:`ehrseq.io.read_extract` (its
  tables must be joined), then scored in the same shards.
- **Nothing lost.** Each raw row is checked before canonicalisation; failing rows go to
  ``out/_quarantine.parquet`` as (subject_id if readable, reason_code, source_file, source_row), never a cell
  value. ``rows_read == rows_accepted + rows_quarantined``. The job aborts (finished shards kept, no
  ``_SUCCESS.json``) as soon as the quarantined rows exceed ``max_quarantine_fraction`` of all input rows
  (the total is known up front from the Parquet footers).
- **Atomic, resumable, deterministic.** Shard ``i`` holds the subjects, in input order, whose canonical
  events fill ``shard_rows`` (a subject is never split); boundaries depend only on the input, the
  validation policy and ``shard_rows`` (not on ``batch_rows`` or the engine). A shard is written to a
  temporary file and ``os.replace``d; its Parquet footer records the job hash and its counts. A rerun with
  the same arguments re-reads the input (to recount and rebuild the quarantine) but skips featurizing and
  predicting every shard already present, so the output equals an uninterrupted run. ``out/_job.json`` holds
  the argument hash; a directory written by another job is refused.

Output rows: MEDS label rows plus meds-evaluation's prediction columns (see :mod:`ehrseq.scoring.predict` and
``data_schemas/README.md``); the artifact's id and manifest hash are in each shard's Parquet metadata.
"""

from ehrseq.scoring.constants import QUARANTINE_FILE, QUARANTINE_SCHEMA, REASON_CODES
from ehrseq.scoring.job import RayShardScorer, add_score_args, run_score, score, shard_path
from ehrseq.scoring.predict import LabelSource, Scorer, decision_threshold, prediction_schema
from ehrseq.scoring.reading import check_rows
from ehrseq.scoring.summary import QuarantineLimitError, ScoreSummary, ScoringError

__all__ = [
    "QUARANTINE_FILE", "QUARANTINE_SCHEMA", "REASON_CODES", "LabelSource", "QuarantineLimitError", "RayShardScorer", "ScoreSummary",
    "Scorer", "ScoringError", "add_score_args", "check_rows", "decision_threshold", "prediction_schema",
    "run_score", "score", "shard_path",
]
