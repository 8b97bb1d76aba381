from datetime import UTC, date, datetime, timedelta

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sapphire_domain.coordinator import HedgeParams, combine, hedge_weights, score_forecasts
from sapphire_domain.portfolio import PortfolioInputError, PortfolioParams, target_weights


def scorecard(losses: dict[str, list[float]], n: int = 100) -> pl.DataFrame:
    rows = [
        {"day": date(2018, 1, 1) + timedelta(days=i), "agent": a, "n": n, "brier_sum": loss * n}
        for a, daily in losses.items()
        for i, loss in enumerate(daily)
    ]
    return pl.DataFrame(rows)


@settings(max_examples=40, deadline=None)
@given(skilled=st.floats(0.15, 0.24), unskilled=st.floats(0.26, 0.35), days=st.integers(1, 20))
def test_hedge_gives_the_agent_with_lower_loss_more_weight(skilled, unskilled, days):
    card = scorecard({"good": [skilled] * days, "bad": [unskilled] * days, "coin": [0.25] * days})
    day = date(2018, 1, 1) + timedelta(days=days)
    weights = hedge_weights(card, ["good", "bad", "coin"], day, HedgeParams())
    assert weights["good"] > weights["coin"] > weights["bad"]
    assert sum(weights.values()) == pytest.approx(1.0)


def test_hedge_weights_move_further_toward_skill_as_evidence_accumulates():
    day = date(2018, 1, 31)
    short = hedge_weights(scorecard({"a": [0.2] * 2, "b": [0.3] * 2}), ["a", "b"], day)
    long = hedge_weights(scorecard({"a": [0.2] * 25, "b": [0.3] * 25}), ["a", "b"], day)
    assert 0.5 < short["a"] < long["a"]
    assert long["b"] >= HedgeParams().mix / 2  # fixed share keeps a floor


def test_hedge_ignores_scores_of_the_day_itself_and_excludes_stale_agents():
    card = scorecard({"a": [0.25, 0.25, 0.0], "b": [0.25, 0.25, 0.5]})
    assert hedge_weights(card, ["a", "b"], date(2018, 1, 3))["a"] == pytest.approx(0.5)
    weights = hedge_weights(card, ["a", "b"], date(2018, 1, 4), stale=["a"])
    assert weights == {"a": 0.0, "b": 1.0}


def test_scores_are_filed_under_the_day_their_label_ended():
    ts = datetime(2018, 1, 1, 23, tzinfo=UTC)
    forecasts = pl.DataFrame({"ts": [ts, ts], "symbol": ["A", "B"], "agent": ["x", "x"],
                              "p_up": [0.9, 0.2], "expected_return": [0.01, -0.01]})  # fmt: skip
    labels = pl.DataFrame({"ts": [ts, ts], "symbol": ["A", "B"], "forward_return": [0.02, -0.01],
                           "label_end": [ts + timedelta(hours=2)] * 2})  # fmt: skip
    card = score_forecasts(forecasts, labels)
    assert card["day"].to_list() == [date(2018, 1, 2)]
    assert card["hit_rate"][0] == 1.0 and card["brier"][0] == pytest.approx((0.01 + 0.04) / 2)


def test_combine_weights_each_agent_and_names_the_models():
    ts = datetime(2018, 1, 1, tzinfo=UTC)
    forecasts = pl.DataFrame({"ts": [ts] * 2, "symbol": ["A"] * 2, "agent": ["x", "y"],
                              "model_version": ["x1", "y1"], "p_up": [0.8, 0.4],
                              "expected_return": [0.02, -0.01]})  # fmt: skip
    out = combine(forecasts, {"x": 0.75, "y": 0.25})
    assert out["p_up"][0] == pytest.approx(0.7)
    assert out["model_versions"][0] == "x=x1,y=y1"
    assert combine(forecasts, {"x": 0.0, "y": 0.0}).is_empty()


BARS_PER_YEAR = 48 * 365


def test_volatility_targeting_gives_the_calmer_symbol_the_larger_position():
    weights = target_weights({"A": 0.7, "B": 0.7}, {"A": 0.002, "B": 0.008}, {}, BARS_PER_YEAR,
                             PortfolioParams(max_weight=10, max_gross=10))  # fmt: skip
    assert weights["A"] == pytest.approx(4 * weights["B"])


@settings(max_examples=60, deadline=None)
@given(
    p=st.dictionaries(st.sampled_from("ABCDEF"), st.floats(0, 1), min_size=1),
    vol=st.floats(1e-5, 0.05),
    previous=st.dictionaries(st.sampled_from("ABCDEF"), st.floats(-0.25, 0.25)),
)
def test_caps_always_hold(p, vol, previous):
    params = PortfolioParams(target_vol_annual=2.0)
    weights = target_weights(p, dict.fromkeys(p, vol), previous, BARS_PER_YEAR, params)
    assert all(abs(w) <= params.max_weight + 1e-12 for w in weights.values())
    assert sum(abs(w) for w in weights.values()) <= params.max_gross + 1e-9


def test_small_changes_inside_the_band_keep_the_previous_target():
    first = target_weights({"A": 0.6}, {"A": 0.004}, {}, BARS_PER_YEAR)
    nudged = target_weights({"A": 0.61}, {"A": 0.004}, first, BARS_PER_YEAR)
    assert nudged == first
    flipped = target_weights({"A": 0.3}, {"A": 0.004}, first, BARS_PER_YEAR)
    assert flipped["A"] < 0


def test_no_volatility_estimate_means_no_position_and_bad_probabilities_are_named():
    assert target_weights({"A": 0.9}, {"A": None}, {}, BARS_PER_YEAR) == {"A": 0.0}
    with pytest.raises(PortfolioInputError, match="A"):
        target_weights({"A": float("nan")}, {"A": 0.01}, {}, BARS_PER_YEAR)
