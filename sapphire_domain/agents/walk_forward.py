"""Walk-forward training windows with a purge and an embargo.

The rule. A model trained with cutoff ``c`` learns only from rows whose label had *ended* by
``c`` (``label_end <= c``, the purge: a label that straddles the cutoff is dropped, not
truncated). It may forecast a row at ``ts`` only if ``c + embargo <= ts``, and the embargo is at
least the label horizon. So every label a model has seen ended at least one embargo before the
first row it forecasts, and none of its training labels overlaps a label it is scored on.

Backfills. A backfill of last year must use the models that would have existed then. The
retraining job therefore keeps a *lineage* of promoted models (one per retrain period, monthly by
default), each with its cutoff, and ``select_models`` gives every row the latest model in the
lineage whose ``cutoff + embargo`` is at or before the row's time. A row earlier than every
model's availability gets no model and the caller raises: forecasting it would need the future.

Validation. A challenger is scored against the champion on a holdout it never saw: it is trained
with cutoff ``holdout_start - embargo`` and scored on rows in ``[holdout_start, as_of)`` whose
labels ended by ``as_of``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import polars as pl

from sapphire_domain.agents.labels import LABEL_END


@dataclass(frozen=True)
class WalkForwardParams:
    """Attributes:
    horizon_bars: bars in the forward-return label.
    embargo: time between a model's cutoff and the first row it may forecast; at least the
        label's length ``(horizon_bars + 1) * step``, checked by ``check_embargo``.
    train_window: how much history before the cutoff trains a model (a rolling window: old
        regimes drop out).
    holdout: the out-of-sample window on which a challenger must beat the champion.
    retrain_every: the period of the walk-forward lineage used for backfills.
    """

    horizon_bars: int = 4
    embargo: timedelta = timedelta(days=1)
    train_window: timedelta = timedelta(days=180)
    holdout: timedelta = timedelta(days=14)
    retrain_every: timedelta = timedelta(days=30)

    def check_embargo(self, step_ms: int) -> None:
        label_length = timedelta(milliseconds=(self.horizon_bars + 1) * step_ms)
        if self.embargo < label_length:
            raise ValueError(
                f"embargo {self.embargo} is shorter than the label ({label_length}): labels seen "
                "in training would overlap the rows the model forecasts"
            )


@dataclass(frozen=True)
class TrainingWindow:
    """Rows with ``start <= ts`` and ``label_end <= cutoff`` train the model."""

    start: datetime
    cutoff: datetime

    def usable_from(self, embargo: timedelta) -> datetime:
        return self.cutoff + embargo


def training_rows(labelled: pl.DataFrame, window: TrainingWindow) -> pl.DataFrame:
    """The rows of a labelled frame (with ``ts`` and ``label_end``) that this window may use."""
    return labelled.filter((pl.col("ts") >= window.start) & (pl.col(LABEL_END) <= window.cutoff))


def challenger_windows(
    as_of: datetime, params: WalkForwardParams
) -> tuple[TrainingWindow, datetime]:
    """The challenger's training window and the start of its holdout ``[start, as_of)``."""
    holdout_start = as_of - params.holdout
    cutoff = holdout_start - params.embargo
    return TrainingWindow(cutoff - params.train_window, cutoff), holdout_start


def lineage_cutoffs(first: datetime, last: datetime, every: timedelta) -> list[datetime]:
    """Cutoffs ``first, first + every, ...`` up to ``last``: one walk-forward model each."""
    if every <= timedelta(0):
        raise ValueError("retrain period must be positive")
    cutoffs, cutoff = [], first
    while cutoff <= last:
        cutoffs.append(cutoff)
        cutoff += every
    return cutoffs


def select_models(times: pl.DataFrame, available: pl.DataFrame, embargo: timedelta) -> pl.DataFrame:
    """For each row of ``times`` (a ``ts`` column), the ``version`` of the latest model usable at
    ``ts``: ``cutoff + embargo <= ts`` and, where ``available`` has an ``available_from`` column
    that is not null, ``available_from <= ts``; null where none qualifies. ``available`` has
    ``version`` and ``cutoff`` (UTC datetimes)."""
    usable = pl.col("cutoff").cast(pl.Datetime("ms", "UTC")) + embargo
    if "available_from" in available.columns:
        usable = pl.max_horizontal(usable, pl.col("available_from").cast(pl.Datetime("ms", "UTC")))
    models = (
        available.select("version", usable.alias("_usable_from"))
        .sort("_usable_from")
        .unique("_usable_from", keep="last", maintain_order=True)
    )
    order = times.with_row_index("_order").sort("ts")
    picked = order.join_asof(models, left_on="ts", right_on="_usable_from", strategy="backward")
    return picked.sort("_order").drop("_order", "_usable_from")
