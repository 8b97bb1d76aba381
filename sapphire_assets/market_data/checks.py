"""Blocking checks on candles: a defect stops everything downstream of it in the same run."""

from collections.abc import Callable, Iterator

import dagster as dg
import polars as pl

from sapphire_assets.metadata import table
from sapphire_domain.candles import (
    duplicate_rows,
    gap_reports,
    inconsistent_range_rows,
    nan_rows,
    non_positive_price_rows,
    out_of_order_rows,
    schema_problems,
)
from sapphire_domain.settings import Settings

SAMPLE_ROWS = 10

# name -> (what must hold, the rows that break it)
ROW_RULES: dict[str, tuple[str, Callable[[pl.DataFrame], pl.DataFrame]]] = {
    "no_nan": ("no price or volume is NaN or missing", nan_rows),
    "positive_prices": (
        "every price is above zero and no volume is negative",
        non_positive_price_rows,
    ),
    "consistent_ranges": (
        "high is not below low, and open and close lie within [low, high]",
        inconsistent_range_rows,
    ),
    "no_duplicates": ("each (symbol, ts) occurs once", duplicate_rows),
    "ordered": ("open times increase within each symbol", out_of_order_rows),
}
SCHEMA_CHECK = "schema"
GAP_CHECK = "gaps"


def build_candle_checks(
    candles: dg.AssetsDefinition, settings: Settings
) -> list[dg.AssetChecksDefinition]:
    partitions = candles.partitions_def
    timeframe = settings.universe.timeframe
    max_gap = settings.quality.max_gap_bars
    blocking = [
        dg.AssetCheckSpec(
            SCHEMA_CHECK,
            asset=candles.key,
            blocking=True,
            partitions_def=partitions,
            description="columns and types match the candle contract",
        ),
        *(
            dg.AssetCheckSpec(
                name, asset=candles.key, blocking=True, partitions_def=partitions, description=rule
            )
            for name, (rule, _) in ROW_RULES.items()
        ),
    ]
    gaps = dg.AssetCheckSpec(
        GAP_CHECK,
        asset=candles.key,
        partitions_def=partitions,
        description=f"missing candles are reported; a gap longer than {max_gap} bars warns",
    )

    @dg.multi_asset_check(
        specs=[*blocking, gaps],
        ins={"frame": dg.AssetIn(key=candles.key)},
        name="candle_checks",
    )
    def candle_checks(frame: pl.DataFrame) -> Iterator[dg.AssetCheckResult]:
        problems = schema_problems(frame)
        yield dg.AssetCheckResult(
            check_name=SCHEMA_CHECK,
            asset_key=candles.key,
            passed=not problems,
            metadata={"problems": dg.MetadataValue.json(problems)},
        )
        if problems:
            # Row rules cannot be evaluated on a frame that lacks their columns.
            for name in ROW_RULES:
                yield dg.AssetCheckResult(
                    check_name=name,
                    asset_key=candles.key,
                    passed=False,
                    description="not evaluated: the schema check failed",
                )
            return
        for name, (rule, offending) in ROW_RULES.items():
            bad = offending(frame)
            yield dg.AssetCheckResult(
                check_name=name,
                asset_key=candles.key,
                passed=bad.is_empty(),
                description=rule if bad.is_empty() else f"{bad.height} row(s) break: {rule}",
                metadata={"offending_rows": bad.height, "sample": table(bad.head(SAMPLE_ROWS))},
            )
        reports = gap_reports(frame, timeframe)
        longest = max((r.longest_bars for r in reports), default=0)
        yield dg.AssetCheckResult(
            check_name=GAP_CHECK,
            asset_key=candles.key,
            passed=longest <= max_gap,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={
                "gap_count": sum(r.count for r in reports),
                "missing_bars": sum(r.missing_bars for r in reports),
                "longest_gap_bars": longest,
                "per_symbol": table(
                    pl.DataFrame(
                        [r.__dict__ for r in reports],
                        schema={
                            "symbol": pl.String,
                            "count": pl.Int64,
                            "missing_bars": pl.Int64,
                            "longest_bars": pl.Int64,
                        },
                    )
                ),
            },
        )

    return [candle_checks]
