"""Names and formats shared by the scoring modules."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

JOB_FORMAT = "ehrseq.score/2"  # 2: the input is identified by content (sha256), IMPLAUSIBLE_TIME
META_KEY = b"ehrseq.scoring"
REASON_CODES = ("BAD_SUBJECT_ID", "NULL_CODE", "BAD_TIME", "IMPLAUSIBLE_TIME", "BAD_VALUE", "NONFINITE_VALUE",
                "DUPLICATE_SUBJECT", "INVALID_SUBJECT_ROWS")
QUARANTINE_SCHEMA = pa.schema([
    ("subject_id", pa.int64()),  # null when the id itself is unreadable
    ("reason_code", pa.string()),
    ("source_file", pa.string()),  # path relative to the data root
    ("source_row", pa.int64()),  # 0-based row number within source_file
])
# "_" prefix: Arrow, pandas and Spark dataset readers skip it, so pd.read_parquet(out) reads predictions only.
QUARANTINE_FILE = "_quarantine.parquet"
LOCK_FILE = "_lock"  # one writer per --out (ehrseq.io.guards.OutputLock)
_F32_MAX = float(np.finfo(np.float32).max)
_PRED_BATCH = 256  # label rows per forward pass (as api.predict)
