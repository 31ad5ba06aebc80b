"""Heavy libraries load only for the runs that need them: transformers (seconds) for BEHRT and the text models,
pycox (over a second: scipy.stats, sklearn, numba) for training the discrete-time heads."""

from __future__ import annotations

import subprocess
import sys


def _loaded_after(code: str) -> set[str]:
    probe = f"import sys\n{code}\nprint(' '.join(m for m in ('transformers', 'ehrseq.models.behrt', 'pycox') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_the_api_the_scoring_job_and_the_registry_do_not_import_transformers() -> None:
    loaded = _loaded_after("import ehrseq.api, ehrseq.scoring.job, ehrseq.registry\n"
                           "from ehrseq.registry import SEQUENCE_MODELS\n"
                           "assert list(SEQUENCE_MODELS) == ['rnn', 'behrt'] and 'behrt' in SEQUENCE_MODELS\n"
                           "SEQUENCE_MODELS['rnn'].presets")
    assert loaded == set()


def test_the_behrt_entry_loads_behrt_when_asked_for() -> None:
    assert _loaded_after("from ehrseq.registry import SEQUENCE_MODELS\nSEQUENCE_MODELS['behrt'].presets") == {
        "transformers", "ehrseq.models.behrt"}


def test_pycox_loads_only_when_a_discrete_time_head_trains() -> None:
    assert _loaded_after("import ehrseq.models.discrete_time") == set()  # enough to load and score an artifact
    assert _loaded_after("from ehrseq.models.discrete_time import _pycox\n_pycox().LabTransDiscreteTime") == {
        "pycox"}
