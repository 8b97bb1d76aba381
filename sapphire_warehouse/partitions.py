"""Assigning a frame's rows to time-window partitions, shared by every warehouse backend.

A run may materialise many partitions at once (a single-run backfill); its frame then holds the
rows of all of them. Both the local Parquet store and BigQuery split or check that frame here,
so that a row outside the run's partitions is rejected the same way everywhere, before anything
is written.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import polars as pl


@dataclass(frozen=True)
class PartitionWindow:
    """One time partition: its key and its half-open window ``[start, end)``.

    Attributes:
        key: the partition key, e.g. ``"2024-01-01"``.
        start: inclusive start, timezone-aware.
        end: exclusive end, timezone-aware.
    """

    key: str
    start: datetime
    end: datetime


class RowsOutsidePartitionsError(ValueError):
    """Rows of an output fall in no partition of the run; nothing was written."""


def _as_utc(value: datetime) -> datetime:
    # Naive datetimes are taken as UTC, the platform's only clock.
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def utc_time_expr(frame: pl.DataFrame, column: str) -> pl.Expr:
    """``column`` as a UTC ``Datetime("us")`` expression, whatever temporal type it holds.

    Dates become midnight UTC and naive datetimes are taken as UTC.
    """
    dtype = frame.schema[column]
    expr = pl.col(column)
    if dtype == pl.Date:
        return expr.cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
    if isinstance(dtype, pl.Datetime):
        expr = expr.dt.cast_time_unit("us")
        if dtype.time_zone is None:
            return expr.dt.replace_time_zone("UTC")
        return expr.dt.convert_time_zone("UTC")
    raise TypeError(f"partition column {column!r} has type {dtype}; expected a date or datetime")


def split_by_partition(
    frame: pl.DataFrame,
    column: str,
    windows: Sequence[PartitionWindow],
    table: str,
) -> dict[str, pl.DataFrame]:
    """Split ``frame`` into one frame per window by the time in ``column``.

    Every window gets an entry, an empty frame with the schema when no row falls in it, so that
    "materialised but empty" can be recorded. Windows must not overlap.

    Raises:
        KeyError: ``column`` is not in the frame.
        RowsOutsidePartitionsError: some rows (or null times) fall in no window; the message
            names the table, the column and the time range of the offending rows.
    """
    if column not in frame.columns:
        raise KeyError(
            f"{table}: partition column {column!r} (the asset's partition_expr) is not in the "
            f"output; columns are {frame.columns}"
        )
    ordered = sorted(windows, key=lambda w: w.start)
    starts = pl.Series("start", [_as_utc(w.start) for w in ordered], dtype=pl.Datetime("us", "UTC"))
    ends = pl.Series("end", [_as_utc(w.end) for w in ordered], dtype=pl.Datetime("us", "UTC"))
    times = frame.select(utc_time_expr(frame, column).alias("t")).to_series()

    # The window a row may belong to is the last one starting at or before it; it belongs there
    # only if it is also before that window's end (windows may have gaps between them).
    probe = times.fill_null(starts[0])
    candidate = starts.search_sorted(probe, side="right").cast(pl.Int64) - 1
    end_of_candidate = ends.gather(candidate.clip(lower_bound=0))
    inside = times.is_not_null() & (candidate >= 0) & (times < end_of_candidate)
    index = candidate.set(~inside, None)

    outside = index.is_null()
    if outside.any():
        bad = times.filter(outside)
        nulls = bad.null_count()
        span = f"{bad.min()!s} .. {bad.max()!s}" if nulls < bad.len() else "(all null)"
        raise RowsOutsidePartitionsError(
            f"{table}: {bad.len()} row(s) have {column!r} outside the run's partitions "
            f"[{ordered[0].key} .. {ordered[-1].key}] ({_as_utc(ordered[0].start)} to "
            f"{_as_utc(ordered[-1].end)}); offending {column} range: {span}"
            + (f", {nulls} null" if nulls else "")
            + ". Nothing was written."
        )

    tagged = frame.with_columns(index.alias("__partition_index"))
    parts = {
        int(k[0]): part.drop("__partition_index")
        for k, part in tagged.partition_by("__partition_index", as_dict=True).items()
    }
    return {w.key: parts.get(i, frame.clear()) for i, w in enumerate(ordered)}


def check_within_partitions(
    frame: pl.DataFrame, column: str, windows: Sequence[PartitionWindow], table: str
) -> dict[str, int]:
    """Validate that every row lies in one of ``windows``; return the row count per key."""
    return {
        key: part.height for key, part in split_by_partition(frame, column, windows, table).items()
    }
