"""The across-seeds summary of benchmarks/real_tasks.py and the description of its run configs."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from benchmarks.real_tasks_report import config_summary, seeds_section

ROOT = Path(__file__).resolve().parents[1]


def _result(aurocs: dict[str, float], flat: set[str], n_pos: int) -> dict:
    part = {s: pd.DataFrame({"boolean_value": [True] * n_pos + [False] * 3}) for s in ("train", "tuning", "held_out")}
    scores = {m: {"auroc": {"value": v}, "prediction_spread": {"y_prob": {"std": 0.001 if m in flat else 0.2}},
                  "warnings": [{"kind": "near_constant_predictions"}] if m in flat else []} for m, v in aurocs.items()}
    return {"kind": "binary", "scores": scores, "part": part}


def test_seeds_section_marks_near_constant_fits_and_averages_over_seeds():
    by_seed = {0: {"t": _result({"LR (counts)": 0.6, "m": 0.2, "train prevalence (no skill)": 0.5}, {"m"}, 1)},
               1: {"t": _result({"LR (counts)": 0.8, "m": 0.6, "train prevalence (no skill)": 0.5}, set(), 2)}}
    text = "\n".join(seeds_section(by_seed))
    assert "| m | 0.200 **nc** | 0.600 | 0.400 |" in text
    assert "| LR (counts) | 0.600 | 0.800 | 0.700 |" in text
    assert "| m | 0.400 | 1 of 2 | 0.001 |" in text  # the binary summary: mean AUROC, near-constant fits
    assert "no skill" not in text.split("left out.")[1]  # references, constant by construction: left out
    assert "seed 0: train 1, tuning 1, held_out 1; seed 1: train 2" in text


def test_config_summary_names_what_the_run_configs_change():
    rnn = config_summary(ROOT / "configs" / "mimic_rnn.yaml")
    assert "featurizer.step_every day" in rnn and "model_overrides.pos_weight balanced" in rnn
    assert "train.monitor auroc" in rnn and "train.epochs 30" in rnn
    behrt = config_summary(ROOT / "configs" / "mimic_behrt.yaml")
    assert behrt.startswith("model behrt, preset small") and "featurizer.step_every" not in behrt
