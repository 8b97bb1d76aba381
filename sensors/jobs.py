"""The jobs the live loop's sensors and schedules launch, and what the sensors share about runs.

Every job runs its steps in the run's own process (the in-process executor): a live run is a
dozen small steps, and a process per step would cost more than the steps themselves.
"""

import json
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

import dagster as dg
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
    SENSOR_NAME_TAG,
)

from sapphire_domain.agents.specs import AGENTS

MARKET_HISTORY = "market_history"
LIVE_LOOP = "live_loop"
FILLS_TO_WAREHOUSE = "fills_to_warehouse"
RETRAIN_AGENTS = "retrain_agents"
PERFORMANCE_REPORT = "performance_report"

HISTORY_ASSETS = ("candles", "trades", "funding_rates", "features")
LIVE_ASSETS = (
    *HISTORY_ASSETS,
    *(f"{agent}_forecasts" for agent in AGENTS),
    "agent_scorecard",
    "combined_signal",
    "target_portfolio",
)
FILL_ASSETS = ("trade_fills", "trade_feedback")
PERFORMANCE_ASSETS = ("strategy_performance", "live_vs_backtest")
# Why a sensor asked for a run (bootstrap, feedback, decay), on the run.
REASON_TAG = "sapphire/reason"

# A run that has not finished yet: the sensors wait for it rather than pile up more.
UNFINISHED = (
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
)


def _job(name: str, assets: Sequence[str], description: str) -> UnresolvedAssetJobDefinition:
    return dg.define_asset_job(
        name,
        selection=dg.AssetSelection.assets(*assets),
        executor_def=dg.in_process_executor,
        description=description,
    )


def build_jobs() -> list[UnresolvedAssetJobDefinition]:
    """The live loop's jobs (``retrain_agents`` comes with the agents' assets)."""
    return [
        _job(MARKET_HISTORY, HISTORY_ASSETS,
             "Candles, trades, funding and features of completed days (the catch-up)."),
        _job(LIVE_LOOP, LIVE_ASSETS,
             "The open day from candles to the published target portfolio."),
        _job(FILLS_TO_WAREHOUSE, FILL_ASSETS,
             "New fills from the bus into trade_fills, joined to their decisions."),
        _job(PERFORMANCE_REPORT, PERFORMANCE_ASSETS,
             "Strategy performance and live against backtest of a day."),
    ]  # fmt: skip


def range_tags(first: str, last: str) -> dict[str, str]:
    """Tags that make one run cover the partitions ``first`` .. ``last`` (single-run backfill)."""
    return {ASSET_PARTITION_RANGE_START_TAG: first, ASSET_PARTITION_RANGE_END_TAG: last}


def unfinished_run(
    instance: dg.DagsterInstance, sensor: str | None = None, job_name: str | None = None
) -> str | None:
    """The id of a run launched by ``sensor`` (any sensor when None) of ``job_name`` (any job
    when None) that is still queued or running, or None."""
    runs = instance.get_run_records(
        dg.RunsFilter(
            job_name=job_name,
            statuses=UNFINISHED,
            tags={SENSOR_NAME_TAG: sensor} if sensor else None,
        ),
        limit=1,
    )
    return runs[0].dagster_run.run_id if runs else None


def load_cursor(context: dg.SensorEvaluationContext) -> dict[str, Any]:
    """The sensor's JSON cursor; an unreadable one is reported and the sensor starts afresh."""
    if not context.cursor:
        return {}
    try:
        cursor = json.loads(context.cursor)
    except ValueError:
        context.log.warning(f"cursor {context.cursor!r} is not JSON; starting afresh")
        return {}
    return cursor if isinstance(cursor, dict) else {}


def day_key(moment_ms: int) -> str:
    return datetime.fromtimestamp(moment_ms / 1000, tz=UTC).date().isoformat()


def day_start_ms(key: str) -> int:
    return int(
        datetime.combine(date.fromisoformat(key), datetime.min.time(), UTC).timestamp() * 1000
    )


def days_between(first: str, stop: str) -> list[str]:
    """Day keys from ``first`` up to, not including, ``stop``."""
    days, day, end = [], date.fromisoformat(first), date.fromisoformat(stop)
    while day < end:
        days.append(day.isoformat())
        day += timedelta(days=1)
    return days
