"""Helpers that turn frames into the tables the Dagster UI shows."""

from __future__ import annotations

from typing import Any

import dagster as dg
import polars as pl

_TYPE_NAMES = {pl.String: "string", pl.Int64: "int", pl.UInt32: "int", pl.Float64: "float"}


def table(frame: pl.DataFrame) -> dg.TableMetadataValue:
    """A small frame as a UI table; datetimes are shown as ISO text."""
    columns = [
        dg.TableColumn(name, _TYPE_NAMES.get(type(dtype), "string"))
        for name, dtype in frame.schema.items()
    ]
    rows = [
        dg.TableRecord({k: _plain(v) for k, v in row.items()})
        for row in frame.iter_rows(named=True)
    ]
    return dg.MetadataValue.table(records=rows, schema=dg.TableSchema(columns=columns))


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)
