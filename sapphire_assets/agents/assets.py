"""Agent forecasts, the scorecard, the combined signal and the target portfolio.

Wiring: ``build_agent_assets(settings)`` returns ``(assets, checks, jobs, schedules)``; the
definitions need the resources ``model_store`` (ModelStoreResource) and ``bus`` (BusResource),
and ``llm`` (``resources.llm.LlmResource``) when an agent's backend is an LLM one.
"""

from collections import Counter
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

import dagster as dg
import polars as pl

from resources.bus import BusResource
from resources.llm import LlmResource
from resources.model_store import ModelStore, ModelStoreResource
from sapphire_assets.agents.models import build_model_asset
from sapphire_assets.agents.settings import AgentSettings
from sapphire_assets.metadata import table
from sapphire_assets.partitions import time_partitions
from sapphire_domain.agents.forecast import ForecastBackend, empty_forecasts
from sapphire_domain.agents.labels import LABEL, forward_returns
from sapphire_domain.agents.models import QuantBackend
from sapphire_domain.agents.skill import skill
from sapphire_domain.agents.specs import AGENTS, AgentSpec
from sapphire_domain.coordinator import SCORECARD_SCHEMA, combine, hedge_weights, score_forecasts
from sapphire_domain.messages import TargetPortfolio, TargetPosition, TradingState
from sapphire_domain.portfolio import target_weights
from sapphire_domain.settings import Settings
from sapphire_domain.timeframes import bars_per_day, timeframe_ms

GROUP = "agents"
DEFAULT_AGENT_SETTINGS = AgentSettings()
# (agent, quantitative backend) -> the backend that serves the agent; the quantitative backend is
# the default and the fallback an LLM backend wraps.
BackendChoice = Callable[[AgentSpec, QuantBackend], ForecastBackend]


def configured_backends(agents: AgentSettings, llm: LlmResource | None) -> BackendChoice:
    """The choice the settings make: ``agents.backends`` per agent, LLM ones through ``llm``."""

    def choose(spec: AgentSpec, quant: QuantBackend) -> ForecastBackend:
        kind = agents.backend_for(spec.name)
        if kind == "quant":
            return quant
        if llm is None:
            raise dg.Failure(f"{spec.name}: backend {kind} needs the llm resource (LlmResource)")
        return llm.forecast_backend(kind, quant, agents.walk_forward.horizon_bars)

    return choose


def lineage_backend(store: ModelStore, agents: Sequence[str], embargo: timedelta) -> QuantBackend:
    models = [store.load(a, v) for a in agents for v in store.lineage(a)]
    return QuantBackend(models, embargo)


def stale_agents(
    store: ModelStore, agents: Sequence[str], at: datetime, max_age: timedelta
) -> dict[str, float]:
    """Agent -> age in hours of its champion's training cutoff at ``at``, for stale champions."""
    stale = {}
    for agent in agents:
        champion = store.champion(agent)
        if champion is None:
            continue
        cutoff = datetime.fromisoformat(
            store.manifest(agent, champion)["training_window"]["cutoff"]
        )
        if at - cutoff > max_age:
            stale[agent] = round((at - cutoff).total_seconds() / 3600, 1)
    return stale


def build_forecast_asset(
    spec: AgentSpec, settings: Settings, agents: AgentSettings, choose: BackendChoice | None
) -> dg.AssetsDefinition:
    """``choose``: None takes the backend from ``agents.backends`` (and the llm resource)."""
    uses_llm = choose is None and agents.backend_for(spec.name) != "quant"

    @dg.asset(
        name=f"{spec.name}_forecasts",
        partitions_def=time_partitions(settings.universe),
        backfill_policy=dg.BackfillPolicy.single_run(),
        group_name=GROUP,
        kinds={"polars", "lightgbm", *(["vllm"] if uses_llm else [])},
        metadata={"partition_expr": "ts", "agent": spec.name, "role": spec.role},
        ins={"features": dg.AssetIn("features")},
        deps=[dg.AssetKey(f"{spec.name}_model")],
        # llm only where configured, so quantitative-only definitions need no LLM resource.
        required_resource_keys={"model_store", *(["llm"] if uses_llm else [])},
        description=f"{spec.name} agent: {spec.role}",
    )
    def forecasts(
        context: dg.AssetExecutionContext, features: pl.DataFrame
    ) -> dg.Output[pl.DataFrame]:
        model_store: ModelStoreResource = context.resources.model_store
        store = model_store.store()
        quant = lineage_backend(store, [spec.name], agents.walk_forward.embargo)
        pick = choose or configured_backends(agents, context.resources.llm if uses_llm else None)
        backend = pick(spec, quant)
        rows = empty_forecasts() if features.is_empty() else backend.forecast(spec, features)
        window = context.partition_time_window
        stale = stale_agents(store, [spec.name], window.end,
                             timedelta(hours=model_store.max_champion_age_hours))  # fmt: skip
        fallbacks = rows.filter(pl.col("fallback"))
        return dg.Output(
            rows,
            metadata={
                "dagster/row_count": rows.height,
                "backend": backend.name,
                "configured_backend": agents.backend_for(spec.name) if choose is None else "",
                "model_versions": sorted(rows["model_version"].unique().to_list()),
                "fallback_rows": fallbacks.height,
                # "fallback after LLM <reason>: ..." -> reason, as the fallback counter labels it
                "fallback_reasons": dg.MetadataValue.json(
                    dict(
                        Counter(
                            str(r).removeprefix("fallback after LLM ").split(":", 1)[0]
                            for r in fallbacks["rationale"].to_list()
                        )
                    )
                ),
                "champion": store.champion(spec.name) or "",
                "stale_champion": spec.name in stale,
                "champion_age_hours": stale.get(spec.name, 0.0),
            },
        )

    return forecasts


def _days(context: dg.AssetExecutionContext) -> list[datetime]:
    window = context.partition_time_window
    days, day = [], window.start
    while day < window.end:
        days.append(day)
        day += timedelta(days=1)
    return days


def baseline_skill(labels: pl.DataFrame, features: pl.DataFrame) -> list[dict[str, object]]:
    """Naive baselines on the same rows: always flat, and the sign of the last return."""
    rows = labels.join(features.select("ts", "symbol", "ret_1"), on=["ts", "symbol"]).drop_nulls(
        [LABEL, "ret_1"]
    )
    flat = rows.with_columns(pl.lit(0.5).alias("p_up"), pl.lit(0.0).alias("expected_return"))
    last = rows.with_columns(
        (0.5 + 0.05 * pl.col("ret_1").sign()).alias("p_up"),
        pl.col("ret_1").alias("expected_return"),
    )
    return [
        {"agent": "baseline_flat", **skill(flat)},
        {"agent": "baseline_last_sign", **skill(last)},
    ]


def build_agent_assets(
    settings: Settings,
    agents: AgentSettings = DEFAULT_AGENT_SETTINGS,
    choose_backend: BackendChoice | None = None,
    with_trade_feedback: bool = True,
) -> tuple[
    list[dg.AssetsDefinition],
    list[dg.AssetChecksDefinition],
    list[Any],
    list[dg.ScheduleDefinition],
]:
    """``choose_backend``: None serves each agent with the backend ``agents.backends`` names.
    ``with_trade_feedback``: challengers retrain on the stored trade_feedback rows (read from
    the warehouse, so no cycle through the forecasts); without rows they train as before."""
    timeframe = settings.universe.timeframe
    step_ms = timeframe_ms(timeframe)
    agents.walk_forward.check_embargo(step_ms)
    partitions = time_partitions(settings.universe)
    names = list(AGENTS)
    feedback_partitions = partitions if with_trade_feedback else None
    models = [build_model_asset(s, agents, timeframe, feedback_partitions) for s in AGENTS.values()]
    forecasts = [build_forecast_asset(s, settings, agents, choose_backend) for s in AGENTS.values()]
    previous_day = dg.TimeWindowPartitionMapping(
        start_offset=-1, allow_nonexistent_upstream_partitions=True
    )
    lookback = dg.TimeWindowPartitionMapping(
        start_offset=-agents.hedge.window_days, end_offset=-1,
        allow_nonexistent_upstream_partitions=True,
    )  # fmt: skip

    @dg.asset(
        partitions_def=partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
        group_name=GROUP,
        kinds={"polars"},
        metadata={"partition_expr": "day"},
        ins={
            "features": dg.AssetIn("features", partition_mapping=previous_day),
            **{n: dg.AssetIn(f"{n}_forecasts", partition_mapping=previous_day) for n in names},
        },
    )
    def agent_scorecard(
        context: dg.AssetExecutionContext, features: pl.DataFrame, **agent_forecasts: pl.DataFrame
    ) -> dg.Output[pl.DataFrame]:
        """Each agent's skill per day: IC, hit rate, log-loss, Brier and calibration gap of the
        forecasts whose labels ended that day (known at its end; no look-ahead)."""
        labels = forward_returns(features, agents.walk_forward.horizon_bars, step_ms)
        every = pl.concat(
            [f for f in agent_forecasts.values() if not f.is_empty()] or [empty_forecasts()]
        )
        days = [d.date() for d in _days(context)]
        card = score_forecasts(every, labels).filter(pl.col("day").is_in(days))
        scored = every.join(labels, on=["ts", "symbol"]).filter(
            pl.col("label_end").dt.date().is_in(days)
        )
        evaluation = [
            {"agent": a, **skill(scored.filter(pl.col("agent") == a))} for a in names
        ] + baseline_skill(scored.select("ts", "symbol", LABEL).unique(), features)
        return dg.Output(
            card,
            metadata={
                "dagster/row_count": card.height,
                "out_of_sample_evaluation": table(pl.DataFrame(evaluation)),
            },
        )

    @dg.asset(
        partitions_def=partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
        group_name=GROUP,
        kinds={"polars"},
        metadata={"partition_expr": "ts"},
        ins={
            "agent_scorecard": dg.AssetIn(partition_mapping=lookback),
            **{n: dg.AssetIn(f"{n}_forecasts") for n in names},
        },
    )
    def combined_signal(
        context: dg.AssetExecutionContext,
        model_store: ModelStoreResource,
        agent_scorecard: pl.DataFrame,
        **agent_forecasts: pl.DataFrame,
    ) -> dg.Output[pl.DataFrame]:
        """The agents combined with Hedge weights learned from their scorecards (see
        ``sapphire_domain.coordinator``); stale champions weigh ``stale_factor``."""
        store = model_store.store()
        scorecard = (
            agent_scorecard if agent_scorecard.height else pl.DataFrame(schema=SCORECARD_SCHEMA)
        )
        every = pl.concat(
            [f for f in agent_forecasts.values() if not f.is_empty()] or [empty_forecasts()]
        )
        max_age = timedelta(hours=model_store.max_champion_age_hours)
        parts, weight_rows = [], []
        for day in _days(context):
            stale = stale_agents(store, names, day + timedelta(days=1), max_age)
            weights = hedge_weights(scorecard, names, day.date(), agents.hedge, stale=stale)
            rows = every.filter(pl.col("ts").dt.date() == day.date())
            parts.append(combine(rows, weights))
            weight_rows += [
                {
                    "day": day.date().isoformat(),
                    "agent": a,
                    "weight": round(w, 4),
                    "stale": a in stale,
                }
                for a, w in weights.items()
            ]
        combined = pl.concat(parts) if parts else combine(every, {})
        window = (
            scorecard.group_by("agent")
            .agg(
                pl.col("ic").mean().alias("mean_daily_ic"),
                (pl.col("hit_rate") * pl.col("n")).sum() / pl.col("n").sum(),
                pl.col("calibration_gap").mean(),
                pl.col("n").sum(),
            )
            .sort("agent")
        )
        last_weights = {str(r["agent"]): r["weight"] for r in weight_rows[-len(names) :]}
        return dg.Output(
            combined,
            metadata={
                "dagster/row_count": combined.height,
                "weights": dg.MetadataValue.json(last_weights),
                "weights_by_day": table(pl.DataFrame(weight_rows).tail(40)),
                "scorecard_window": table(window),
                "method": "Hedge on per-row Brier loss, trailing window "
                f"{agents.hedge.window_days} days, eta="
                f"{agents.hedge.eta if agents.hedge.eta is not None else 'sqrt(8 ln N / T)'}, "
                f"mix={agents.hedge.mix}",
            },
        )

    @dg.asset(
        partitions_def=partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
        group_name=GROUP,
        kinds={"polars", "redis"},
        metadata={"partition_expr": "ts"},
        ins={"combined_signal": dg.AssetIn(), "features": dg.AssetIn(), "candles": dg.AssetIn()},
    )
    def target_portfolio(
        context: dg.AssetExecutionContext,
        bus: BusResource,
        combined_signal: pl.DataFrame,
        features: pl.DataFrame,
        candles: pl.DataFrame,
    ) -> dg.Output[pl.DataFrame]:
        """Target weights at the last bar of each day (vol-targeted, capped, with a no-trade
        band); the latest is published to the bus as a TargetPortfolio, unless the execution
        service is HALTED. The rows also keep every target published earlier for these days."""
        latest = bus.latest_target()
        previous = latest.weights() if latest else {}
        step = timedelta(milliseconds=step_ms)
        per_year = bars_per_day(timeframe) * 365
        rows, target = [], None
        inputs = combined_signal.join(
            features.select("ts", "symbol", "realized_vol"), on=["ts", "symbol"], how="left"
        ).join(candles.select("ts", "symbol", "close"), on=["ts", "symbol"], how="left")
        for day in _days(context):
            today = inputs.filter(pl.col("ts").dt.date() == day.date())
            if today.is_empty():
                continue
            at: datetime = today["ts"].max()  # type: ignore[assignment]
            now = today.filter(pl.col("ts") == at)
            weights = target_weights(
                dict(zip(now["symbol"], now["p_up"], strict=True)),
                dict(zip(now["symbol"], now["realized_vol"], strict=True)),
                previous, per_year, agents.portfolio,
            )  # fmt: skip
            created = at + step  # decided at the candle's close
            key = day.date().isoformat()
            target = TargetPortfolio(
                version=int(created.timestamp()),
                created_at=created,
                valid_until=created + step * agents.target_valid_bars,
                positions=tuple(
                    TargetPosition(symbol=s, weight=w) for s, w in sorted(weights.items())
                ),
                model_versions=dict(
                    v.split("=", 1) for v in ",".join(now["model_versions"]).split(",") if v
                ),
                partitions={"combined_signal": key, "features": key, "candles": key},
                reference_prices={
                    s: float(c) for s, c in zip(now["symbol"], now["close"], strict=True) if c
                },
            )
            rows += [
                {
                    "ts": at,
                    "symbol": s,
                    "weight": w,
                    "version": target.version,
                    "created_at": created,
                    "valid_until": target.valid_until,
                }
                for s, w in sorted(weights.items())
            ]
            previous = weights
        # While the execution service is HALTED nothing new is published: a target sent now
        # would be denied, or traded stale the moment trading resumes.
        risk = bus.latest_risk_event()
        halted = risk is not None and risk.state is TradingState.HALTED
        published = ""
        if halted and risk is not None:
            published = f"not published: trading is HALTED ({risk.reason})"
        elif target is not None and (latest is None or target.version > latest.version):
            published = bus.publish_target(target)
        # The targets the live loop published for these days, each kept: a fill names the
        # version it traded, and re-materialising the open day must not drop earlier ones.
        window = context.partition_time_window
        computed = {row["version"] for row in rows}
        for sent in bus.published_targets(since=window.start + step):
            at = sent.created_at - step
            if sent.version in computed or not window.start <= at < window.end:
                continue
            rows += [
                {
                    "ts": at,
                    "symbol": position.symbol,
                    "weight": position.weight,
                    "version": sent.version,
                    "created_at": sent.created_at,
                    "valid_until": sent.valid_until,
                }
                for position in sent.positions
            ]
        frame = pl.DataFrame(rows, schema={
            "ts": pl.Datetime("ms", "UTC"), "symbol": pl.String, "weight": pl.Float64,
            "version": pl.Int64, "created_at": pl.Datetime("ms", "UTC"),
            "valid_until": pl.Datetime("ms", "UTC"),
        }).sort("ts", "symbol")  # fmt: skip
        return dg.Output(
            frame,
            metadata={
                "dagster/row_count": frame.height,
                "version": target.version if target else 0,
                "published_entry": published or "not published (not newer than the bus's)",
                "trading_state": risk.state.value if risk else TradingState.ACTIVE.value,
                "model_versions": dg.MetadataValue.json(target.model_versions if target else {}),
                "gross": sum(abs(p.weight) for p in target.positions) if target else 0.0,
                "weights": table(frame.tail(len(AGENTS) * 4)),
            },
        )

    retrain = dg.define_asset_job(
        "retrain_agents",
        selection=[m.key for m in models],
        description="Retrain every agent's challenger; the blocking check promotes the better.",
    )
    # The full retrain on the wall clock; the live loop's retrain sensor adds retrains driven
    # by trade feedback and skill decay.
    schedule = dg.ScheduleDefinition(
        name="retrain_agents_schedule", job=retrain, cron_schedule=agents.retrain_cron,
        default_status=dg.DefaultScheduleStatus.RUNNING,
    )  # fmt: skip
    assets = [*models, *forecasts, agent_scorecard, combined_signal, target_portfolio]
    return assets, [], [retrain], [schedule]
