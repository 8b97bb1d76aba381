"""The local warehouse: one folder of Parquet files per table, written atomically.

Layout under the warehouse root::

    <root>/<asset key path, '/'-joined>/<partition key>.parquet   one file per partition
    <root>/<asset key path, '/'-joined>/data.parquet              an unpartitioned table

Writing a partition replaces its whole file, so re-materialising is idempotent and never
duplicates rows. A file is written under a temporary name that does not end in ``.parquet``
(so ``*.parquet`` globs never match it), flushed to disk, then renamed over the old one: readers
see the old file or the new one, never a partial one, and no lock is taken anywhere. A partition
with no rows still gets a file holding only the schema, so "materialised but empty" differs from
"never materialised". The partition key is not added as a column: the table's own time column
(its ``partition_expr``) already says which partition a row belongs to.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from urllib.parse import quote

import polars as pl

UNPARTITIONED_FILE = "data.parquet"


def table_dir(root: str | os.PathLike[str], key_path: Sequence[str]) -> Path:
    """The folder holding one table's files."""
    return Path(root).joinpath(*key_path)


def partition_file(table: Path, partition_key: str) -> Path:
    """The file of one partition; keys are percent-encoded so any key is a safe file name."""
    # Daily keys ("2024-01-01") stay as they are; hourly ones ("2024-01-01-00:00") lose the ':'.
    return table / f"{quote(partition_key, safe='-_.')}.parquet"


def write_atomically(path: Path, frame: pl.DataFrame) -> None:
    """Write ``frame`` to ``path`` so that readers only ever see a complete file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.parent / f".tmp-{uuid.uuid4().hex}.partial"
    try:
        frame.write_parquet(temporary)
        with temporary.open("rb") as written:
            os.fsync(written.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    # Makes the rename itself durable; not every platform can open a directory.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_files(paths: Iterable[Path]) -> pl.DataFrame | None:
    """Concatenate the given files that exist; ``None`` when none of them does."""
    frames = []
    for path in paths:
        try:
            frames.append(pl.read_parquet(path))
        except FileNotFoundError:
            continue
    if not frames:
        return None
    # Columns added to a table later read as nulls in its older partitions.
    return pl.concat(frames, how="diagonal_relaxed")


def empty_like_table(table: Path) -> pl.DataFrame | None:
    """An empty frame with the schema of the table's newest-named file, if any exists."""
    files = sorted(table.glob("*.parquet"))
    if not files:
        return None
    return pl.DataFrame(schema=pl.read_parquet_schema(files[-1]))
