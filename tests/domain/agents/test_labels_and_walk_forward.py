from dataclasses import replace
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from sapphire_domain.agents.labels import MissingFeaturesError, forward_returns
from sapphire_domain.agents.models import (
    ModelParams,
    NoModelError,
    QuantBackend,
    labelled_features,
    predict,
    train_lineage,
    train_model,
)
from sapphire_domain.agents.specs import MOMENTUM, TIMESERIES
from sapphire_domain.agents.walk_forward import (
    TrainingWindow,
    WalkForwardParams,
    lineage_cutoffs,
    training_rows,
)
from tests.domain.agents.conftest import STEP_MS

PARAMS = ModelParams(min_rows=200, min_data_in_leaf=20)
T0 = datetime(2018, 3, 25, tzinfo=UTC)


def test_labels_are_null_when_their_window_spans_a_gap(features):
    holed = features.filter(
        ~((pl.col("symbol") == "BTC/USD") & (pl.col("ts") == datetime(2018, 3, 10, 12, tzinfo=UTC)))
    )
    labels = forward_returns(holed, 4, STEP_MS).filter(pl.col("symbol") == "BTC/USD")
    around = labels.filter(
        pl.col("ts").is_between(
            datetime(2018, 3, 10, 9, 30, tzinfo=UTC), datetime(2018, 3, 10, 11, 30, tzinfo=UTC)
        )
    )
    # 10:00 to 11:30, whose next four closes include the missing 12:00 one, have no label;
    # 09:30's window ends at 11:30 and is whole
    assert around["forward_return"].is_null().to_list() == [False, True, True, True, True]


def test_a_label_is_the_sum_of_the_next_horizon_returns_and_ends_after_them(features):
    labels = forward_returns(features, 4, STEP_MS).filter(pl.col("symbol") == "ETH/USD")
    btc = features.filter(pl.col("symbol") == "ETH/USD").sort("ts")
    assert labels["forward_return"][10] == pytest.approx(btc["ret_1"][11:15].sum())
    assert labels["label_end"][10] == labels["ts"][10] + timedelta(minutes=150)
    assert labels["forward_return"].tail(4).null_count() == 4


def test_missing_feature_columns_are_named_never_zero_filled(features):
    with pytest.raises(MissingFeaturesError, match="rsi"):
        predict(
            train_model(MOMENTUM, labelled_features(features, 4, STEP_MS),
                        TrainingWindow(T0 - timedelta(days=20), T0), 4, PARAMS),
            features.drop("rsi"),
        )  # fmt: skip
    with pytest.raises(MissingFeaturesError, match="ret_1"):
        forward_returns(features.drop("ret_1"), 4, STEP_MS)


def test_training_rows_exclude_labels_that_end_after_the_cutoff(features):
    labelled = labelled_features(features, 4, STEP_MS)
    rows = training_rows(labelled, TrainingWindow(T0 - timedelta(days=5), T0))
    assert rows["label_end"].max() <= T0
    assert rows["ts"].max() == T0 - timedelta(minutes=150)


def walk_forward(features: pl.DataFrame, embargo: timedelta) -> pl.DataFrame:
    labelled = labelled_features(features, 4, STEP_MS)
    cutoffs = lineage_cutoffs(T0 - timedelta(days=9), T0 + timedelta(days=6), timedelta(days=3))
    models = train_lineage(MOMENTUM, labelled, cutoffs, timedelta(days=14), 4, PARAMS)
    rows = features.filter(pl.col("ts") >= T0 - timedelta(days=8))
    return QuantBackend(models, embargo).forecast(MOMENTUM, rows)


def plant_the_future(features: pl.DataFrame, after: datetime) -> pl.DataFrame:
    """Every feature and return after ``after`` replaced: the future label planted into
    ``ret_1``/``rsi`` and prices made wildly different."""
    future = forward_returns(features, 4, STEP_MS)["forward_return"].fill_null(0.0)
    later = pl.col("ts") > after
    return features.with_columns(
        pl.when(later).then(future * 50).otherwise(pl.col("ret_1")).alias("ret_1"),
        pl.when(later).then(future * 1e4).otherwise(pl.col("rsi")).alias("rsi"),
    )


def test_forecasts_do_not_change_when_the_future_is_rewritten(features):
    """Planted future information (labels copied into features after T0, and so every label
    ending after T0 changed) cannot reach any forecast at or before T0."""
    honest = walk_forward(features, WalkForwardParams().embargo)
    planted = walk_forward(plant_the_future(features, T0), WalkForwardParams().embargo)
    past = pl.col("ts") <= T0
    assert honest.filter(past).height > 500
    assert_frame_equal(honest.filter(past), planted.filter(past))
    # the check has teeth: later rows, whose models may train on the planted rows, do change
    assert not honest.filter(~past).equals(planted.filter(~past))


def test_a_backfill_row_gets_the_latest_model_trained_an_embargo_before_it(features):
    embargo = WalkForwardParams().embargo
    forecasts = walk_forward(features, embargo)
    labelled = labelled_features(features, 4, STEP_MS)
    models = train_lineage(MOMENTUM, labelled, [T0 - timedelta(days=3), T0], timedelta(days=14),
                           4, PARAMS)  # fmt: skip
    by_version = {m.version: m.window.cutoff for m in models}
    for row in forecasts.filter(pl.col("model_version").is_in(list(by_version))).iter_rows(
        named=True
    ):
        assert by_version[row["model_version"]] + embargo <= row["ts"]
    with pytest.raises(NoModelError, match="precede"):
        QuantBackend(models, embargo).forecast(MOMENTUM, features.filter(pl.col("ts") < T0))


def test_the_quantile_agent_outputs_an_ordered_distribution(features):
    labelled = labelled_features(features, 4, STEP_MS)
    model = train_model(
        TIMESERIES, labelled, TrainingWindow(T0 - timedelta(days=20), T0), 4, PARAMS
    )
    rows = predict(model, features.filter(pl.col("ts") > T0 + timedelta(days=1)))
    assert (rows["q10"] <= rows["q50"]).all() and (rows["q50"] <= rows["q90"]).all()
    assert rows["p_up"].is_between(0, 1).all()
    assert (rows["expected_return"] == rows["q50"]).all()
    # p_up above one half exactly where the median is positive
    assert ((rows["p_up"] > 0.5) == (rows["q50"] > 0)).all()


def test_a_promoted_challenger_serves_only_from_the_time_it_was_trained(features):
    """Its promotion looked at outcomes up to its training time, so days before it keep the
    model that served them, and rematerialising them gives the same forecasts."""
    embargo = WalkForwardParams().embargo
    labelled = labelled_features(features, 4, STEP_MS)
    champion, later = train_lineage(MOMENTUM, labelled, [T0 - timedelta(days=3), T0],
                                    timedelta(days=14), 4, PARAMS)  # fmt: skip
    trained_at = T0 + timedelta(days=4)
    challenger = replace(later, available_from=trained_at)
    days = features.filter(pl.col("ts") >= T0 - timedelta(days=2))
    before = QuantBackend([champion], embargo).forecast(MOMENTUM, days)
    after = QuantBackend([champion, challenger], embargo).forecast(MOMENTUM, days)
    early = pl.col("ts") < trained_at
    assert_frame_equal(after.filter(early), before.filter(early))
    assert set(after.filter(~early)["model_version"]) == {challenger.version}
    # without the training time, the same model would have served from cutoff + embargo
    assert challenger.usable_from(embargo) == trained_at > later.usable_from(embargo)
    assert later.version in set(
        QuantBackend([champion, later], embargo)
        .forecast(MOMENTUM, days)
        .filter(early)["model_version"]
    )
