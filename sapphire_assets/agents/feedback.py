"""Trade feedback for retraining, read from the warehouse rather than through the asset graph.

``trade_feedback`` is downstream of the forecasts, which are downstream of the models: an input
edge from it to ``<agent>_model`` would close a cycle, which Dagster refuses. The model assets
instead read the rows already stored, through the run's ``io_manager`` (Parquet locally,
BigQuery in production), as of the training cutoff. Feedback therefore reaches the next
retrain after it is materialised, which is when it is meant to.
"""

from datetime import datetime
from typing import Any

import dagster as dg
import polars as pl

from sapphire_domain.agents.models import SAMPLE_WEIGHT, feedback_sample_weights

FEEDBACK_ASSET = dg.AssetKey("trade_feedback")
# The trade_feedback asset's time column (see sapphire_assets.trades.assets); BigQuery slices on it.
FEEDBACK_PARTITION_EXPR = "fill_ts"
FEEDBACK_COLUMNS = ["ts", "symbol", "realised_return", "exit_ts"]


def read_stored_feedback(
    context: dg.AssetExecutionContext,
    partitions_def: dg.TimeWindowPartitionsDefinition,
    start: datetime,
    end: datetime,
) -> pl.DataFrame | None:
    """The trade_feedback rows stored for fills in ``[start, end)``, None when none were.

    ``partitions_def`` is the trade_feedback asset's (the universe's daily partitions).
    """
    keys = partitions_def.get_partition_keys_in_time_window(dg.TimeWindow(start, end))
    if not keys:
        return None
    step = context.op_execution_context.get_step_execution_context()
    io_manager = step.resolved_run_config.resources.get("io_manager")
    input_context = dg.build_input_context(
        asset_key=FEEDBACK_ASSET,
        asset_partitions_def=partitions_def,
        asset_partition_key_range=dg.PartitionKeyRange(keys[0], keys[-1]),
        definition_metadata={"partition_expr": FEEDBACK_PARTITION_EXPR},
        resource_config=io_manager.config if io_manager is not None else None,
        instance=context.instance,
    )
    try:
        stored: pl.DataFrame = context.resources.io_manager.load_input(input_context)
    except FileNotFoundError:  # the local warehouse has never held the table
        return None
    return stored if stored.height else None


def usable_feedback(feedback: pl.DataFrame | None, cutoff: datetime) -> pl.DataFrame | None:
    """Rows whose outcome was realised by ``cutoff``: a later outcome is the future to a model
    with that cutoff. Rows still waiting for their outcome carry no lesson yet."""
    if feedback is None:
        return None
    missing = [c for c in FEEDBACK_COLUMNS if c not in feedback.columns]
    if missing:
        raise dg.Failure(f"stored trade_feedback lacks columns {missing}; rematerialise it")
    rows = feedback.filter(
        pl.col("realised_return").is_not_null() & (pl.col("exit_ts") <= cutoff)
    ).select(FEEDBACK_COLUMNS)
    return rows if rows.height else None


def weighted_rows(
    labelled: pl.DataFrame, feedback: pl.DataFrame | None, boost: float
) -> tuple[pl.DataFrame, dict[str, Any]]:
    """``labelled`` with sample weights from ``feedback``, and a summary for the manifest."""
    weighted = feedback_sample_weights(labelled, feedback, boost)
    if feedback is None:
        return weighted, {
            "used": False,
            "rows": 0,
            "reason": "no trade feedback with a known outcome",
        }
    traded = weighted.join(feedback.select("ts", "symbol").unique(), on=["ts", "symbol"])
    weights = traded[SAMPLE_WEIGHT]
    return weighted, {
        "used": True,
        "rows": feedback.height,
        "decisions_weighted": traded.height,
        "boost": boost,
        "weight_mean": round(float(weights.mean() or 1.0), 6),  # type: ignore[arg-type]
        "weight_max": round(float(weights.max() or 1.0), 6),  # type: ignore[arg-type]
    }
