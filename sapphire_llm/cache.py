"""Answers kept by a hash of what produced them, so rematerialising a partition gives the same rows.

The key covers the prompt, the model, the sampling settings and the answer schema: change any of
them and the old answer no longer applies. Only valid answers are stored; a failure is retried
next time rather than frozen into the cache. The store is one SQLite file, safe to share between
processes (a backfill's runs) on one machine.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def answer_key(
    prompt: str, model: str, sampling: Mapping[str, Any], schema: Mapping[str, Any]
) -> str:
    """A stable digest of everything that determines an answer."""
    material = json.dumps(
        {"prompt": prompt, "model": model, "sampling": sampling, "schema": schema},
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(material.encode()).hexdigest()


class AnswerCache:
    """A key-to-answer-text store in the SQLite file ``path`` (created with its folder)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        with self._connect() as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, text TEXT NOT NULL)"
            )

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        # A generous busy timeout: concurrent partitions write small rows and wait their turn.
        db = sqlite3.connect(self.path, timeout=30.0)
        try:
            with db:  # commits, or rolls back on error
                yield db
        finally:
            db.close()

    def get_many(self, keys: Iterable[str]) -> dict[str, str]:
        wanted = list(dict.fromkeys(keys))
        found: dict[str, str] = {}
        with self._connect() as db:
            # SQLite caps bound parameters per statement; 500 stays well under every build's cap.
            for start in range(0, len(wanted), 500):
                chunk = wanted[start : start + 500]
                marks = ",".join("?" * len(chunk))
                query = f"SELECT key, text FROM answers WHERE key IN ({marks})"
                found.update(db.execute(query, chunk).fetchall())
        return found

    def put_many(self, answers: Mapping[str, str]) -> None:
        if not answers:
            return
        with self._connect() as db:
            db.executemany("INSERT OR REPLACE INTO answers VALUES (?, ?)", answers.items())

    def __len__(self) -> int:
        with self._connect() as db:
            (count,) = db.execute("SELECT COUNT(*) FROM answers").fetchone()
        return int(count)
