"""The examples each ``ehrseq COMMAND --help`` ends with (tests/test_cli_help.py runs them through the parser)."""

from __future__ import annotations

EXAMPLES: dict[str, str] = {
    "synth": """\
  ehrseq synth --n-patients 5000 --sites 2 --out runs/cohort""",
    "finetune": """\
  ehrseq finetune --target cdai --data runs/cohort/meds --out runs/cdai_rnn
  ehrseq finetune --config cdai_behrt --init runs/behrt_mlm --data runs/cohort/meds --out runs/cdai_behrt
  ehrseq finetune --task mimic/long_los --predicates mimic/predicates --data events.parquet \\
      --column-map value=numeric_value --model behrt --preset tiny --split random --out runs/los_behrt""",
    "pretrain": """\
  ehrseq pretrain --config cdai_behrt --prefixes 8 --data runs/cohort/meds --out runs/behrt_mlm""",
    "evaluate": """\
  ehrseq evaluate --artifact runs/cdai_rnn --data runs/cohort/meds --out runs/report
  ehrseq evaluate --artifact runs/los_rnn --labels runs/long_los --data events.parquet \\
      --column-map value=numeric_value --out runs/los_report""",
    "compare": """\
  ehrseq compare --artifacts runs/site_a runs/site_b --names "A as is" "A adapted to B" \\
      --data runs/cohort/meds --sites B --out runs/compare_b""",
    "explain": """\
  ehrseq explain --artifact runs/cdai_rnn --data runs/cohort/meds
  ehrseq explain --artifact runs/cdai_rnn --data runs/cohort/meds --n-repeats 5 --out runs/importance.csv""",
    "retune": """\
  ehrseq retune --artifact runs/biopsy --reports site_b_25_reports.csv --out runs/biopsy_site_b""",
    "validate": """\
  ehrseq validate --data events.parquet --column-map value=numeric_value
  ehrseq validate --data runs/cohort/meds --labels runs/long_los --json""",
    "labels": """\
  ehrseq labels --task mimic/long_los --predicates mimic/predicates --data events.parquet \\
      --column-map value=numeric_value --out runs/long_los
  ehrseq labels --task configs/tasks/ra/cdai_controlled_next.yaml --data runs/cohort/meds \\
      --out runs/cdai_labels""",
    "demo": """\
  ehrseq demo --out runs/demo""",
    "score": """\
  ehrseq score --artifact runs/cdai_rnn --data runs/cohort/meds --out runs/scores
  ehrseq score --artifact runs/death_deepsurv --data events.parquet --column-map value=numeric_value \\
      --horizons 30 365 --out runs/death_scores""",
}

__all__ = ["EXAMPLES"]
