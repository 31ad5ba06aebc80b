"""The data boundary: MEDS and EHR-extract readers/writers, validated once into canonical events."""

from ehrseq.io.extract import TABLES, load_schema, read_extract, read_extract_tables, write_extract
from ehrseq.io.meds import (
    DATA_SCHEMA,
    LABEL_SCHEMA,
    MEDS_VERSION,
    SPLITS,
    SPLITS_SCHEMA,
    EventsResult,
    iter_meds_batches,
    read_codes,
    read_dataset_metadata,
    read_labels,
    read_meds,
    read_subject_splits,
    write_labels,
    write_meds,
    write_subject_splits,
)
from ehrseq.io.validate import (
    CANONICAL_COLUMNS,
    ValidationPolicy,
    ValidationReport,
    empty_events,
    sort_events,
    validate_events,
)

__all__ = [
    "CANONICAL_COLUMNS", "DATA_SCHEMA", "LABEL_SCHEMA", "MEDS_VERSION", "SPLITS", "SPLITS_SCHEMA", "TABLES",
    "EventsResult", "ValidationPolicy", "ValidationReport",
    "empty_events", "iter_meds_batches", "load_schema", "read_codes", "read_dataset_metadata", "read_extract",
    "read_extract_tables", "read_labels", "read_meds", "read_subject_splits", "sort_events", "validate_events",
    "write_extract", "write_labels", "write_meds", "write_subject_splits",
]
