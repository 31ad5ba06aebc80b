"""pycox 0.3.0, imported so that the parts ehrseq uses work on this stack; import pycox only through here.

ehrseq uses pycox's discrete-time label transform (``LabTransDiscreteTime``), its losses (``pycox.models.loss``)
and ``pad_col``. What stands in their way, and what this module does about it:

- **Importing pycox writes into its install directory.** ``pycox/__init__`` imports ``pycox.datasets``, whose
  loader module runs ``mkdir`` on ``<site-packages>/pycox/datasets/data`` at import time unless the environment
  variable ``PYCOX_DATA_DIR`` is set. On a read-only install (a container image, a system Python, a shared
  environment) ``import pycox`` fails with PermissionError before any model code runs; elsewhere it writes into
  the environment. :func:`import_pycox` sets ``PYCOX_DATA_DIR`` to the (existing) system temporary directory for
  the import only, so that ``mkdir(exist_ok=True)`` does nothing, then restores the environment. A
  ``PYCOX_DATA_DIR`` the user set is left as it is. (Side effect: pycox's own dataset loaders, which ehrseq
  never calls and which download at run time, would look in the temporary directory in this process.)

What current SciPy and torch break in pycox, and why no shim is needed for it here (checked on SciPy 1.17,
torch 2.13, numpy 2.4, pandas 3.1):

- ``scipy.integrate.simps`` (removed in SciPy 1.14) is called only by ``pycox.evaluation``'s integrated Brier
  scores; ehrseq's metrics are :mod:`ehrseq.evaluate.survival`. SciPy is not patched: a global alias would
  change SciPy for every other library in the process.
- ``torch.load``'s ``weights_only=True`` default (torch >= 2.6) breaks pycox's ``Model.load_net``; ehrseq never
  uses pycox's save or load (weights are safetensors, cut points JSON).
- Not a break, a cost: ``pycox.models.data.pair_rank_mat`` (DeepHit's ranking pairs) is a numba function that
  compiles for about a second on first use in each process; :func:`ehrseq.models.discrete_time.rank_matrix`
  computes the same matrix in torch.

The label transform, the losses (``NLLLogistiHazardLoss``, ``NLLPMFLoss``, ``DeepHitSingleLoss``) and the
interpolation classes run unchanged on this stack (``tests/test_discrete_time.py`` pins ehrseq's use of each).
"""

from __future__ import annotations

import importlib
import os
import sys
import tempfile
from types import ModuleType

from ehrseq.errors import EhrseqError

DATA_DIR_ENV = "PYCOX_DATA_DIR"
_NEEDED = ("pycox.models.loss", "pycox.models.utils", "pycox.preprocessing.label_transforms")


def import_pycox() -> ModuleType:
    """Import pycox (once per process) without writing into its install directory; returns the package.

    Raises EhrseqError when pycox is not installed (it is a core dependency of ehrseq, for the discrete-time
    survival models).
    """
    if "pycox" in sys.modules and all(m in sys.modules for m in _NEEDED):
        return sys.modules["pycox"]
    own = os.environ.get(DATA_DIR_ENV)
    if own is None:
        os.environ[DATA_DIR_ENV] = tempfile.gettempdir()
    try:
        for name in _NEEDED:
            importlib.import_module(name)
    except ModuleNotFoundError as e:
        raise EhrseqError("the discrete-time survival models (logistic_hazard, pmf, deephit) need pycox: "
                          "pip install 'pycox>=0.3.0'") from e
    finally:
        if own is None:
            os.environ.pop(DATA_DIR_ENV, None)
    return sys.modules["pycox"]


import_pycox()

from pycox.models import loss  # noqa: E402  (after import_pycox, by design)
from pycox.models.utils import pad_col  # noqa: E402
from pycox.preprocessing.label_transforms import LabTransDiscreteTime  # noqa: E402

__all__ = ["DATA_DIR_ENV", "LabTransDiscreteTime", "import_pycox", "loss", "pad_col"]
