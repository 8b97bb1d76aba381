"""SQL access to the local warehouse through DuckDB views over its Parquet files.

Every table folder (one per asset, see :mod:`sapphire_warehouse.parquet_store`) becomes a view
named after the asset key, its parts joined with ``__`` (``candles``, ``market__candles``).
The views live in an in-memory DuckDB database, so no ``.duckdb`` file and no lock exists:
analysts read while Dagster runs write, and a view re-reads the folder's files at every query.

From Python::

    from sapphire_warehouse.sql import connect
    con = connect("var/warehouse")
    con.sql("SELECT symbol, count(*) FROM candles GROUP BY symbol").show()

From the DuckDB command line, after ``write_views_sql("var/warehouse")``::

    duckdb -c ".read var/warehouse/views.sql" -c "SELECT * FROM candles LIMIT 5"
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import duckdb

VIEWS_FILE = "views.sql"


def discover_tables(root: str | os.PathLike[str]) -> dict[str, Path]:
    """Map view name to table folder for every folder under ``root`` holding Parquet files."""
    base = Path(root)
    tables: dict[str, Path] = {}
    if not base.is_dir():
        return tables
    for folder, _dirs, files in os.walk(base):
        if any(name.endswith(".parquet") for name in files):
            relative = Path(folder).relative_to(base)
            if relative.parts:
                tables["__".join(relative.parts)] = Path(folder).resolve()
    return dict(sorted(tables.items()))


def _quote_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _quote_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def view_statements(root: str | os.PathLike[str]) -> list[str]:
    """One ``CREATE OR REPLACE VIEW`` statement per table under ``root``."""
    return [
        f"CREATE OR REPLACE VIEW {_quote_identifier(name)} AS SELECT * FROM read_parquet("
        f"{_quote_literal(str(folder / '*.parquet'))}, union_by_name = true, "
        "hive_partitioning = false);"
        for name, folder in discover_tables(root).items()
    ]


def create_views(con: duckdb.DuckDBPyConnection, root: str | os.PathLike[str]) -> list[str]:
    """(Re)create the views on ``con``, e.g. to pick up tables written since; returns names."""
    for statement in view_statements(root):
        con.execute(statement)
    return list(discover_tables(root))


def connect(root: str | os.PathLike[str]) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with one view per warehouse table under ``root``."""
    con = duckdb.connect(":memory:")
    create_views(con, root)
    return con


def write_views_sql(
    root: str | os.PathLike[str], path: str | os.PathLike[str] | None = None
) -> Path:
    """Write the view statements to ``path`` (default ``<root>/views.sql``) for the DuckDB CLI.

    The file names table folders by absolute path, so it can be read from any directory.
    It is written atomically, so it can be regenerated while someone reads it.
    """
    target = Path(path) if path is not None else Path(root) / VIEWS_FILE
    target.parent.mkdir(parents=True, exist_ok=True)
    header = (
        f"-- Sapphire warehouse views over {Path(root).resolve()}; regenerate after new tables.\n"
    )
    temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex}.partial")
    temporary.write_text(header + "\n".join(view_statements(root)) + "\n")
    os.replace(temporary, target)
    return target
