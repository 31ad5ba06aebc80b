"""The JSON Schemas (draft 2020-12) that ehrseq ships: one per EHR-extract table, and the prediction shards.

The ``<name>.schema.json`` files in this package are the single source of truth; they are read with
:mod:`importlib.resources`, so they work from a wheel as well as from a source checkout.
``data_schemas/README.md`` in the repository explains them for people.

Every schema is checked against the draft 2020-12 meta-schema (with ``jsonschema``) when it is first loaded,
so a broken schema, one of ours or one a user points ``schema_dir`` at, fails with the file and the key
instead of validating nothing.
"""

from __future__ import annotations

import json
from functools import cache
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

from ehrseq.errors import DataValidationError

SCHEMA_NAMES: tuple[str, ...] = ("patients", "visits", "diagnoses", "labs", "medications", "disease_activity",
                                 "reports", "outcomes", "predictions")
SUFFIX = ".schema.json"


def schema_file(name: str, schema_dir: str | Path | None = None) -> Traversable:
    """Where schema ``name`` lives: in ``schema_dir`` when given, else the copy shipped in this package."""
    if name not in SCHEMA_NAMES:
        raise KeyError(f"unknown schema {name!r}; schemas: {', '.join(SCHEMA_NAMES)}")
    base: Traversable = Path(schema_dir) if schema_dir is not None else files(__name__)
    return base / f"{name}{SUFFIX}"


def check_schema(schema: Any, *, file: str) -> None:
    """Raise :class:`DataValidationError` (naming ``file`` and the key) unless ``schema`` is draft 2020-12."""
    import jsonschema  # imported here: ~0.1 s, paid only when a schema is first loaded

    if not isinstance(schema, dict):
        raise DataValidationError("is not a JSON object, so it is not a JSON Schema", file=file,
                                  hint="A schema file holds one JSON object with 'type', 'properties', ...")
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as e:
        key = "/".join(str(p) for p in e.absolute_path) or "(top level)"
        raise DataValidationError(f"is not a valid draft 2020-12 JSON Schema at key {key}: {e.message}",
                                  file=file, hint="Fix the schema file (see ehrseq/schemas/ for working ones).",
                                  ) from None


# The subset of JSON Schema that ehrseq.io.extract.check_table applies to whole columns (plus annotations).
TABLE_KEYWORDS: frozenset[str] = frozenset({"$schema", "$id", "$comment", "title", "description", "type",
                                            "properties", "required", "additionalProperties"})
COLUMN_KEYWORDS: frozenset[str] = frozenset({"type", "format", "enum", "pattern", "minLength", "minimum",
                                             "maximum", "description", "title", "examples", "$comment"})
COLUMN_TYPES: frozenset[str] = frozenset({"string", "integer", "number", "null"})


def check_table_schema(schema: dict[str, Any], *, file: str) -> None:
    """Refuse an extract-table schema that asks for a check the column-wise loader would silently skip.

    Allowed: :data:`TABLE_KEYWORDS` at the top (``type: object``, ``additionalProperties`` absent or true,
    ``subject_id`` required), :data:`COLUMN_KEYWORDS` per column, types from :data:`COLUMN_TYPES`, and only
    ``format: date``. Raises :class:`DataValidationError` naming ``file`` and the column.
    """
    def refuse(problem: str, column: str | None = None) -> DataValidationError:
        return DataValidationError(problem, file=file, column=column,
                                   hint="The extract loader applies only the column keywords "
                                        + ", ".join(sorted(COLUMN_KEYWORDS)))

    extra = set(schema) - TABLE_KEYWORDS
    if extra:
        raise refuse(f"uses top-level keyword(s) the loader does not apply: {', '.join(sorted(extra))}")
    if schema.get("type") != "object" or not isinstance(schema.get("properties"), dict):
        raise refuse("must describe one row: 'type': 'object' with 'properties'")
    if schema.get("additionalProperties", True) is not True:
        raise refuse("sets additionalProperties; the loader always ignores columns not in the schema")
    if "subject_id" not in schema["properties"] or "subject_id" not in schema.get("required", []):
        raise refuse("must list subject_id in properties and required", column="subject_id")
    for col, spec in schema["properties"].items():
        if not isinstance(spec, dict):
            raise refuse("must be a JSON object with a 'type'", column=col)
        extra = set(spec) - COLUMN_KEYWORDS
        if extra:
            raise refuse(f"uses keyword(s) the loader does not apply: {', '.join(sorted(extra))}", column=col)
        types = spec.get("type")
        types = types if isinstance(types, list) else [types]
        if not types or not set(types) <= COLUMN_TYPES:
            raise refuse(f"needs a 'type' from {', '.join(sorted(COLUMN_TYPES))}", column=col)
        if spec.get("format", "date") != "date":
            raise refuse("has a format other than 'date', which the loader does not check", column=col)


@cache
def load(name: str, schema_dir: str | Path | None = None) -> dict[str, Any]:
    """Schema ``name`` as a dict, read once and checked against the meta-schema (see :func:`schema_file`).

    Raises ``KeyError`` for a name not in :data:`SCHEMA_NAMES` and :class:`DataValidationError` for a missing,
    unreadable or invalid schema file. The dict is cached: do not modify it.
    """
    path = schema_file(name, schema_dir)
    if not path.is_file():
        hint = (f"Put {name}{SUFFIX} there, or leave schema_dir unset for the shipped one." if schema_dir
                else "This ehrseq install lacks its schema files; reinstall ehrseq.")
        raise DataValidationError("schema file does not exist", file=str(path), hint=hint)
    try:
        schema = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        where = f" (line {e.lineno})" if isinstance(e, json.JSONDecodeError) else ""
        raise DataValidationError(f"is not valid JSON{where}", file=str(path), hint="Fix the schema file.") from None
    check_schema(schema, file=str(path))
    return schema


__all__ = ["COLUMN_KEYWORDS", "COLUMN_TYPES", "SCHEMA_NAMES", "SUFFIX", "TABLE_KEYWORDS", "check_schema",
           "check_table_schema", "load", "schema_file"]
