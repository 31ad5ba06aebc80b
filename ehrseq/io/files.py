"""Opening input files so that a broken one is named, never a traceback from the parser.

- Parquet: a zero-byte, truncated or corrupt file (bad magic bytes, unreadable footer, a damaged data page) is a
  :class:`~ehrseq.errors.DataValidationError` naming the file; in a shard directory, the bad shard is named.
- CSV (EHR-extract tables): zero-byte files, text that is not UTF-8 (latin-1 exports), another delimiter
  (``;``, tab, ``|``) and ragged rows (a row with more or fewer fields than the header) are each named with the
  file and the line, and what to do. A UTF-8 byte-order mark (Excel) is accepted.

Messages hold file names, line numbers and counts, never cell values.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ehrseq.errors import DataValidationError

_PARQUET_ERRORS = (pa.ArrowException, OSError, ValueError, EOFError)
_OTHER_DELIMITERS = {";": "semicolon", "\t": "tab", "|": "pipe"}


def unreadable_parquet(path: str | Path, exc: BaseException | None = None) -> DataValidationError:
    """The error for a Parquet file that cannot be read (zero bytes, truncated, corrupt)."""
    p = Path(path)
    size = p.stat().st_size if p.is_file() else None
    what = ("is empty (0 bytes), not a Parquet file" if size == 0 else
            f"is not a readable Parquet file (truncated or corrupt; {type(exc).__name__ if exc else 'error'})")
    return DataValidationError(what, file=str(p), hint="Re-export it, or move it out of the data directory "
                               "(every .parquet file under the path is read)")


def parquet_file(path: str | Path) -> pq.ParquetFile:
    """``pq.ParquetFile(path)`` (footer read and checked; page checksums verified where the writer stored
    them), or a DataValidationError naming the file."""
    try:
        return pq.ParquetFile(path, page_checksum_verification=True)
    except _PARQUET_ERRORS as e:
        raise unreadable_parquet(path, e) from None


def read_parquet_table(path: str | Path, columns: Sequence[str] | None = None) -> pa.Table:
    """Read a whole Parquet file; a broken file (footer or any data page) is a DataValidationError naming it."""
    pf = parquet_file(path)
    try:
        return pf.read(columns=list(columns) if columns is not None else None)
    except _PARQUET_ERRORS as e:
        raise unreadable_parquet(path, e) from None


def iter_parquet_batches(pf: pq.ParquetFile, path: str | Path, *, batch_size: int,
                         columns: Sequence[str] | None = None) -> Iterator[pa.RecordBatch]:
    """``pf.iter_batches`` where a damaged data page is a DataValidationError naming the file."""
    it = pf.iter_batches(batch_size=batch_size, columns=list(columns) if columns is not None else None)
    while True:
        try:
            batch = next(it)
        except StopIteration:
            return
        except _PARQUET_ERRORS as e:
            raise unreadable_parquet(path, e) from None
        yield batch


def sha256_files(files: Sequence[Path], chunk: int = 1 << 20) -> list[str]:
    """The sha256 of each file's bytes, streamed (the content fingerprint of an input)."""
    out = []
    for f in files:
        h = hashlib.sha256()
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(chunk), b""):
                h.update(block)
        out.append(h.hexdigest())
    return out


def check_csv(path: str | Path) -> list[str]:
    """Check a CSV table's shape before it is parsed; returns the header.

    Raises DataValidationError naming the file (and line) for: a zero-byte or header-less file, text that is not
    UTF-8, a header that looks like another delimiter, and rows whose number of fields differs from the header.
    Blank lines are skipped, as the parser skips them.
    """
    p = Path(path)
    if p.stat().st_size == 0:
        raise DataValidationError("is empty (0 bytes)", file=str(p), n_rows=0,
                                  hint="An extract table needs at least a header row; re-export it or remove it")
    line = 0
    try:
        with open(p, newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            header: list[str] | None = None
            for row in reader:
                line = reader.line_num
                if not row:
                    continue
                if header is None:
                    header = row
                    _check_delimiter(header, p)
                    continue
                if len(row) != len(header):
                    raise DataValidationError(
                        f"line {line} has {len(row)} field(s) but the header has {len(header)} (a ragged row)",
                        file=str(p), hint="Quote fields that contain commas or line breaks, and give every row "
                                          "one field per column (empty for missing)")
    except UnicodeDecodeError as e:
        raise DataValidationError(
            f"is not UTF-8 text (first bad byte at offset {e.start}, near line {line + 1})", file=str(p),
            hint="Re-save it as UTF-8, e.g. iconv -f latin1 -t utf-8 in.csv > out.csv",
        ) from None
    except csv.Error as e:
        raise DataValidationError(f"is not a readable CSV file near line {line + 1} ({type(e).__name__})",
                                  file=str(p), hint="Check the quoting of that line") from None
    if header is None:
        raise DataValidationError("has no header row (only blank lines)", file=str(p), n_rows=0,
                                  hint="An extract table needs a header row naming its columns")
    return header


def _check_delimiter(header: list[str], p: Path) -> None:
    if len(header) != 1:
        return
    for d, name in _OTHER_DELIMITERS.items():
        if d in header[0]:
            raise DataValidationError(
                f"looks {name}-delimited (its header is one field holding '{d}'); ehrseq reads comma-separated "
                "CSV", file=str(p), hint=f"Re-save the table with commas as the delimiter (e.g. in pandas: "
                                        f"pd.read_csv(f, sep='{d}').to_csv(f, index=False))")


def read_csv_table(path: str | Path) -> pd.DataFrame:
    """An extract CSV table as text columns (only empty cells missing; "NA" may be real report text), after
    :func:`check_csv`."""
    check_csv(path)
    return pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""], encoding="utf-8-sig")


__all__ = ["check_csv", "iter_parquet_batches", "parquet_file", "read_csv_table", "read_parquet_table",
           "sha256_files", "unreadable_parquet"]
