"""Real Dagster runs of the agents: retrain, forecast, score, combine and publish a target."""

from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from resources.bus import BusResource
from resources.model_store import ModelStoreResource
from sapphire_assets.agents.assets import build_agent_assets
from sapphire_assets.agents.settings import AgentSettings
from sapphire_domain.agents.models import ModelParams, labelled_features, train_model
from sapphire_domain.agents.specs import MOMENTUM
from sapphire_domain.agents.walk_forward import TrainingWindow, WalkForwardParams
from sapphire_domain.coordinator import HedgeParams
from sapphire_domain.messages import TARGETS_STREAM, TargetPortfolio, decode

SMALL = AgentSettings(
    walk_forward=WalkForwardParams(
        horizon_bars=4,
        embargo=timedelta(days=1),
        train_window=timedelta(days=6),
        holdout=timedelta(days=2),
        retrain_every=timedelta(days=3),
    ),
    model=ModelParams(min_rows=200, min_data_in_leaf=20),
    hedge=HedgeParams(window_days=3),
)
AGENT_ASSETS = ["momentum", "microstructure", "sentiment", "timeseries"]
MODELS = [f"{a}_model" for a in AGENT_ASSETS]
FORECASTS = [f"{a}_forecasts" for a in AGENT_ASSETS]


@pytest.fixture
def agents_platform(platform_factory, redis_server):
    platform = platform_factory()
    assets, checks, jobs, _ = build_agent_assets(platform.settings, SMALL)
    platform.override(
        assets,
        checks,
        jobs=jobs,
        model_store=ModelStoreResource(root=str(platform.state / "models")),
        bus=BusResource(url=redis_server.url),
    )
    platform.materialize(
        ["candles", "trades", "funding_rates"], partition_range=("2018-02-15", "2018-03-14")
    )
    platform.materialize("features", partition_range=("2018-03-01", "2018-03-14"))
    platform.redis_url = redis_server.url
    return platform


def retrain(platform, walk_forward_from=None, raise_on_error=True):
    job = platform.defs.resolve_job_def("retrain_agents")
    config = {"walk_forward_from": walk_forward_from} if walk_forward_from else {}
    return job.execute_in_process(
        instance=platform.instance,
        run_config={"ops": {m: {"config": config} for m in MODELS}},
        raise_on_error=raise_on_error,
    )


def store_of(platform):
    return ModelStoreResource(root=str(platform.state / "models")).store()


def test_the_whole_chain_forecasts_with_walk_forward_models_and_publishes_a_target(agents_platform):
    platform = agents_platform
    result = retrain(platform, walk_forward_from="2018-03-08")
    checks = {e.asset_key.to_user_string(): e for e in result.get_asset_check_evaluations()}
    assert set(checks) == set(MODELS) and all(c.passed for c in checks.values())
    store = store_of(platform)
    lineage = store.lineage("momentum")
    assert len(lineage) == 2  # the bootstrap model (cutoff 03-08) and the promoted challenger

    chain = [*FORECASTS, "agent_scorecard", "combined_signal", "target_portfolio"]
    platform.materialize(chain, partition_range=("2018-03-10", "2018-03-14"))

    forecasts = platform.table("momentum_forecasts")
    by_day = forecasts.group_by(pl.col("ts").dt.date().alias("day")).agg(
        pl.col("model_version").unique()
    )
    versions = {r["day"].isoformat(): r["model_version"] for r in by_day.iter_rows(named=True)}
    # each day uses the latest model usable then: the bootstrap model from its cutoff + embargo;
    # the challenger, promoted over it on the holdout up to its training time (the end of the
    # features), only from then on, so it serves none of these days
    challenger = store.load("momentum", lineage[1])
    assert challenger.available_from is not None
    assert challenger.available_from > challenger.window.cutoff + timedelta(days=1)
    assert challenger.available_from > forecasts["ts"].max() - timedelta(hours=3)
    assert all(versions[day] == [lineage[0]] for day in versions), versions
    assert forecasts["rationale"].null_count() == forecasts.height
    assert not forecasts["fallback"].any()
    ts_forecasts = platform.table("timeseries_forecasts")
    assert (ts_forecasts["q10"] <= ts_forecasts["q90"]).all()

    scorecard = platform.table("agent_scorecard")
    assert set(scorecard["agent"]) == set(AGENT_ASSETS)
    combined = platform.table("combined_signal")
    assert combined["p_up"].is_between(0, 1).all() and combined.height > 0

    entries = platform.defs.resources["bus"].client().xrange(TARGETS_STREAM)
    assert len(entries) == 1
    target = decode(entries[0][1])
    assert isinstance(target, TargetPortfolio)
    assert target.created_at == datetime(2018, 3, 15, tzinfo=UTC)
    # decided at the close of the last bar, before the challenger's training time
    assert target.model_versions["momentum"] == lineage[0]
    assert target.partitions["combined_signal"] == "2018-03-14"
    assert sum(abs(w) for w in target.weights().values()) <= SMALL.portfolio.max_gross + 1e-12
    stored = platform.table("target_portfolio")
    assert stored.filter(pl.col("version") == target.version).height == len(target.positions)


def test_a_day_before_any_model_existed_fails_rather_than_peek(agents_platform):
    retrain(agents_platform)
    result = agents_platform.materialize(
        "momentum_forecasts", partition="2018-03-05", raise_on_error=False
    )
    failure = result.failure_data_for_node("momentum_forecasts")
    assert failure is not None and "precede every model" in str(failure.error)


def _plant_champion(platform, labels_sign: float, window: TrainingWindow) -> str:
    """A momentum champion trained on (possibly inverted) labels over ``window``."""
    features = platform.table("features").sort("symbol", "ts")
    labelled = labelled_features(features, 4, 1_800_000).with_columns(
        pl.col("forward_return") * labels_sign
    )
    model = train_model(MOMENTUM, labelled, window, 4, SMALL.model)
    store = store_of(platform)
    store.save(model)
    store.promote("momentum", model.version)
    return model.version


def test_the_check_promotes_a_better_challenger(agents_platform):
    day = datetime(2018, 3, 1, tzinfo=UTC)
    worse = _plant_champion(agents_platform, -1.0, TrainingWindow(day, day + timedelta(days=8)))
    result = retrain(agents_platform)
    check = next(
        e for e in result.get_asset_check_evaluations() if e.asset_key.path == ["momentum_model"]
    )
    assert check.passed
    store = store_of(agents_platform)
    assert store.champion("momentum") != worse
    assert store.manifest("momentum", worse)["status"] == "retired"


def test_the_check_blocks_a_worse_challenger_and_keeps_the_champion(agents_platform):
    # a champion that trained on the holdout itself is unbeatable there
    day = datetime(2018, 3, 1, tzinfo=UTC)
    cheat = _plant_champion(agents_platform, 1.0, TrainingWindow(day, day + timedelta(days=15)))
    result = retrain(agents_platform, raise_on_error=False)
    check = next(
        e for e in result.get_asset_check_evaluations() if e.asset_key.path == ["momentum_model"]
    )
    assert not check.passed and "does not beat" in check.description
    store = store_of(agents_platform)
    assert store.champion("momentum") == cheat
    rejected = [v for v in store.versions("momentum") if v != cheat]
    assert [store.manifest("momentum", v)["status"] for v in rejected] == ["retired"]


def test_a_stale_champion_is_flagged_and_excluded_from_the_combination(agents_platform):
    retrain(agents_platform)
    platform = agents_platform
    platform.override(
        model_store=ModelStoreResource(
            root=str(platform.state / "models"), max_champion_age_hours=48
        )
    )
    result = platform.materialize(
        [*FORECASTS, "agent_scorecard", "combined_signal"], partition="2018-03-14"
    )
    forecast_meta = result.asset_materializations_for_node("momentum_forecasts")[0].metadata
    assert forecast_meta["stale_champion"].value is True
    weights = result.asset_materializations_for_node("combined_signal")[0].metadata["weights"].value
    assert all(w == 0.0 for w in weights.values())  # every champion is stale: all excluded
