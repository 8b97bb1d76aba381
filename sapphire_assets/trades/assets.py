"""The trade assets: fills from the bus, and each fill joined to the decision behind it.

``trade_fills`` reads the fills stream with ``sapphire_bus.reader.read_after`` and stores each
fill in the daily partition of its ``ts``. ``trade_feedback`` joins every fill to its target
(version, ``created_at``, weight), the combined signal and the four agents' forecasts on the
bar the target was decided on, and the outcome after the fill.

Wiring: ``build_trade_assets(settings)`` returns the two assets; they need the resources ``bus``
(``BusResource``) and ``io_manager`` (the warehouse), and read ``target_portfolio``,
``combined_signal``, ``<agent>_forecasts`` and ``candles``.

Explaining an order in SQL (DuckDB through ``sapphire_warehouse.sql.connect(root)``; replace
the client order id)::

    SELECT f.client_order_id, f.fill_id, f.fill_ts, f.symbol, f.side, f.quantity, f.price,
           f.slippage_bps, f.target_version, t.created_at AS decided_at, t.valid_until,
           t.weight AS target_weight, f.source_partition, f.model_versions,
           c.p_up AS combined_p_up, c.agents,
           m.model_version AS momentum_model, m.p_up AS momentum_p_up,
           s.model_version AS sentiment_model, s.p_up AS sentiment_p_up,
           f.forward_return, f.realised_return
    FROM trade_feedback f
    JOIN target_portfolio t ON t.version = f.target_version AND t.symbol = f.symbol
    JOIN combined_signal c ON c.ts = t.ts AND c.symbol = f.symbol
    LEFT JOIN momentum_forecasts m ON m.ts = t.ts AND m.symbol = f.symbol
    LEFT JOIN sentiment_forecasts s ON s.ts = t.ts AND s.symbol = f.symbol
    WHERE f.client_order_id = 'the-order-id'
    ORDER BY f.fill_ts

``trade_feedback`` already carries every agent's columns (``<agent>_model_version``,
``<agent>_p_up``, ``<agent>_expected_return``), so ``SELECT * FROM trade_feedback WHERE
client_order_id = ...`` answers alone; the joins above show that each column traces back to
the stored upstream rows.
"""

from collections import Counter
from typing import Any

import dagster as dg
import polars as pl
import redis
from pydantic import Field

from resources.bus import BusResource
from sapphire_assets.agents.settings import AgentSettings
from sapphire_assets.metadata import table
from sapphire_assets.partitions import lookback_days, time_partitions
from sapphire_assets.trades.feedback import (
    FILL_SCHEMA,
    conform_fills,
    fills_frame,
    merge_fills,
    trade_feedback_frame,
    unexplained,
)
from sapphire_bus.reader import START, DeadLetter, read_after
from sapphire_domain.agents.specs import AGENTS
from sapphire_domain.messages import FILLS_STREAM, Fill
from sapphire_domain.settings import Settings
from sapphire_domain.timeframes import timeframe_ms

GROUP = "trades"
# Dead letters listed in metadata (all are counted); enough to diagnose, short enough to read.
_DEAD_LETTERS_SHOWN = 20


class TradeFillsConfig(dg.Config):
    """after: read only the entries after this stream id (the live-loop sensor passes the
    ``last_stream_id`` of the previous run); empty reads the stream from its start. The rows
    already stored are kept either way, so a hint only saves reading, never loses a fill."""

    after: str = Field(default="", description="resume after this fills-stream id")
    page_size: int = Field(default=1000, gt=0, description="entries per XRANGE call")


def _read_stream(
    client: redis.Redis, after: str, page_size: int
) -> tuple[list[tuple[str, Fill]], list[DeadLetter], str]:
    """Every fill after ``after`` to the stream's end, the dead letters met, the last id read."""
    fills: list[tuple[str, Fill]] = []
    dead: list[DeadLetter] = []
    cursor = after
    while True:
        batch = read_after(client, cursor, stream=FILLS_STREAM, count=page_size)
        for entry_id, message in batch.messages:
            if isinstance(message, Fill):
                fills.append((entry_id, message))
            else:  # a valid message, but not one that belongs on the fills stream
                dead.append(DeadLetter(entry_id, f"a {message.kind} on the fills stream", {}))
        dead += batch.dead_letters
        if batch.cursor == cursor:
            return fills, dead, cursor
        cursor = batch.cursor


def _stored_partitions(context: dg.AssetExecutionContext) -> pl.DataFrame:
    """What the warehouse already holds for the run's partitions (empty the first time).

    Read through the run's own ``io_manager`` (Parquet locally, BigQuery in production) with
    the config it runs under, so this is the same table the output is written to.
    """
    step = context.op_execution_context.get_step_execution_context()
    resource = step.resolved_run_config.resources.get("io_manager")
    input_context = dg.build_input_context(
        asset_key=context.asset_key,
        asset_partitions_def=context.assets_def.partitions_def,
        asset_partition_key_range=context.partition_key_range,
        definition_metadata=context.assets_def.metadata_by_key[context.asset_key],
        resource_config=resource.config if resource is not None else None,
        instance=context.instance,
    )
    try:
        stored = context.resources.io_manager.load_input(input_context)
    except FileNotFoundError:  # the table was never written
        return pl.DataFrame(schema=FILL_SCHEMA)
    return stored if stored.height else pl.DataFrame(schema=FILL_SCHEMA)


def _per_symbol(frame: pl.DataFrame, value: pl.Expr) -> dict[str, Any]:
    summary = frame.group_by("symbol").agg(value.alias("v")).sort("symbol")
    return dict(zip(summary["symbol"].to_list(), summary["v"].to_list(), strict=True))


def build_trade_assets(
    settings: Settings, agents: AgentSettings | None = None
) -> list[dg.AssetsDefinition]:
    """``trade_fills`` and ``trade_feedback``; ``agents`` gives the label horizon of the
    outcome and how long a target stays valid (so how far back a fill's decision can be)."""
    agents = agents or AgentSettings()
    timeframe = settings.universe.timeframe
    step_ms = timeframe_ms(timeframe)
    horizon = agents.walk_forward.horizon_bars
    partitions = time_partitions(settings.universe)
    # A fill comes after its target's created_at and before valid_until; one more day covers
    # fills that arrive late across midnight.
    decision_days = lookback_days(agents.target_valid_bars + 1, timeframe) + 1
    decisions = dg.TimeWindowPartitionMapping(
        start_offset=-decision_days, allow_nonexistent_upstream_partitions=True
    )
    # The outcome needs the candles of the horizon after the fill, which may end days later.
    outcome = dg.TimeWindowPartitionMapping(
        end_offset=lookback_days(horizon + 1, timeframe), allow_nonexistent_upstream_partitions=True
    )
    names = sorted(AGENTS)

    @dg.asset(
        partitions_def=partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
        group_name=GROUP,
        kinds={"polars", "redis"},
        metadata={"partition_expr": "ts", "stream": FILLS_STREAM},
        # The IO manager too: the run merges into what it already stored (see _stored_partitions).
        required_resource_keys={"bus", "io_manager"},
    )
    def trade_fills(
        context: dg.AssetExecutionContext, config: TradeFillsConfig
    ) -> dg.Output[pl.DataFrame]:
        """Every fill of the execution service, in the daily partition of its ``ts``, one row
        per ``fill_id``: the stream read after the cursor, merged into what is stored."""
        bus: BusResource = context.resources.bus
        after = config.after or START
        client = bus.client()
        try:
            read, dead, last_id = _read_stream(client, after, config.page_size)
        except redis.RedisError as error:
            raise dg.Failure(
                description=f"could not read {FILLS_STREAM} after {after}: {error}; nothing "
                "was written, and re-running reads from the same cursor"
            ) from None
        finally:
            client.close()
        window = context.partition_time_window
        every = fills_frame(read)
        inside = every.filter(pl.col("ts").is_between(window.start, window.end, closed="left"))
        stored = _stored_partitions(context)
        fills, duplicates = merge_fills(stored, inside)
        for letter in dead[:_DEAD_LETTERS_SHOWN]:
            context.log.warning(f"dead letter {letter.entry_id} on {FILLS_STREAM}: {letter.reason}")
        return dg.Output(
            fills,
            metadata={
                "dagster/row_count": fills.height,
                "fills_per_symbol": dg.MetadataValue.json(_per_symbol(fills, pl.len())),
                "fees": float(fills["fee"].sum()),
                "fees_per_symbol": dg.MetadataValue.json(_per_symbol(fills, pl.col("fee").sum())),
                "start_cursor": after,
                "last_stream_id": last_id,
                "entries_read": len(read) + len(dead),
                "new_fills": fills.height - stored.height,
                # read again (already stored) or published twice: kept once, by fill_id
                "duplicates_dropped": duplicates,
                "fills_outside_partitions": every.height - inside.height,
                "dead_letters": len(dead),
                "dead_letter_entries": dg.MetadataValue.json(
                    [{"id": d.entry_id, "reason": d.reason} for d in dead[:_DEAD_LETTERS_SHOWN]]
                ),
            },
        )

    @dg.asset(
        partitions_def=partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
        group_name=GROUP,
        kinds={"polars"},
        metadata={"partition_expr": "fill_ts", "horizon_bars": horizon},
        ins={
            "trade_fills": dg.AssetIn(),
            "target_portfolio": dg.AssetIn(partition_mapping=decisions),
            "combined_signal": dg.AssetIn(partition_mapping=decisions),
            "candles": dg.AssetIn(partition_mapping=outcome),
            **{n: dg.AssetIn(f"{n}_forecasts", partition_mapping=decisions) for n in names},
        },
    )
    def trade_feedback(
        trade_fills: pl.DataFrame,
        target_portfolio: pl.DataFrame,
        combined_signal: pl.DataFrame,
        candles: pl.DataFrame,
        **forecasts: pl.DataFrame,
    ) -> dg.Output[pl.DataFrame]:
        """Each fill with the decision behind it and what came after: ``ts`` is the bar the
        target was decided on (the forecasts' ``ts``), ``fill_ts`` when it filled. Columns:
        target version, created_at, valid_until and weight; the source partition; the combined
        signal and its model versions; each agent's model version, p_up and expected return;
        slippage against the reference price in bps; forward and realised return over the
        label horizon (null while not known, or across a gap)."""
        fills = conform_fills(trade_fills)
        frame = trade_feedback_frame(
            fills, target_portfolio, combined_signal, forecasts, candles, horizon, step_ms
        )
        missing = unexplained(frame)
        per_version = Counter(frame["target_version"].to_list())
        return dg.Output(
            frame,
            metadata={
                "dagster/row_count": frame.height,
                "unexplained_fills": len(missing),
                "unexplained_fill_ids": dg.MetadataValue.json(list(missing[:_DEAD_LETTERS_SHOWN])),
                "fills_per_target_version": dg.MetadataValue.json(
                    {str(k): v for k, v in sorted(per_version.items())}
                ),
                "outcomes_known": int(frame["forward_return"].is_not_null().sum()),
                "mean_slippage_bps": float(
                    frame.select(pl.col("slippage_bps").mean().fill_null(0.0)).item()
                ),
                "summary": table(
                    frame.group_by("symbol")
                    .agg(
                        pl.len().alias("fills"),
                        pl.col("slippage_bps").mean().round(2).alias("mean_slippage_bps"),
                        pl.col("realised_return").mean().alias("mean_realised_return"),
                    )
                    .sort("symbol")
                ),
            },
        )

    return [trade_fills, trade_feedback]
