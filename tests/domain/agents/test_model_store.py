"""The model store (a resource, tested here beside the models it stores)."""

import json
from dataclasses import replace
from datetime import timedelta

import pytest
from polars.testing import assert_frame_equal

from resources.model_store import LocalBlobs, ModelStore, ModelStoreError, main, open_blobs
from sapphire_domain.agents.models import labelled_features, predict, train_model
from sapphire_domain.agents.specs import TIMESERIES
from sapphire_domain.agents.walk_forward import TrainingWindow
from tests.domain.agents.conftest import PARAMS, STEP_MS, T0


def test_a_saved_model_loads_back_and_forecasts_the_same(tmp_path, features, models):
    store = ModelStore(LocalBlobs(tmp_path))
    labelled = labelled_features(features, 4, STEP_MS)
    quantile = train_model(
        TIMESERIES, labelled, TrainingWindow(T0 - timedelta(days=10), T0), 4, PARAMS
    )
    for model in (models[0], quantile):
        manifest = store.save(model)
        assert manifest["status"] == "challenger" and manifest["features"] == list(model.features)
        loaded = store.load(model.agent, model.version)
        assert loaded.window == model.window and loaded.available_from is None
        assert_frame_equal(predict(loaded, features.tail(50)), predict(model, features.tail(50)))


def test_a_corrupt_model_file_is_a_clear_error(tmp_path, models):
    store = ModelStore(LocalBlobs(tmp_path))
    store.save(models[0])
    text = tmp_path / "momentum" / models[0].version / "p_up.txt"
    text.write_text(text.read_text()[:-200])
    with pytest.raises(ModelStoreError, match="corrupt"):
        store.load("momentum", models[0].version)


def test_a_wrong_format_version_is_a_clear_error(tmp_path, models):
    store = ModelStore(LocalBlobs(tmp_path))
    store.save(models[0])
    path = tmp_path / "momentum" / models[0].version / "manifest.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "format_version": 99}))
    with pytest.raises(ModelStoreError, match="format version 99"):
        store.load("momentum", models[0].version)
    path.write_text("{not json")
    with pytest.raises(ModelStoreError, match="not valid JSON"):
        store.load("momentum", models[0].version)


@pytest.fixture(params=["folder", "bucket"])
def root(request, tmp_path) -> str:
    """The same behaviour from a local folder and from a bucket (the real fake-gcs-server)."""
    if request.param == "folder":
        return str(tmp_path)
    return f"gs://{request.getfixturevalue('gcs_bucket')}/sapphire/models"


def test_promote_and_one_command_rollback(root, models, capsys):
    store = ModelStore(open_blobs(root))
    for model in models:
        store.save(model)
    a, b, c = (m.version for m in models)
    store.promote("momentum", a)
    store.promote("momentum", b)
    assert store.champion("momentum") == b
    assert store.manifest("momentum", a)["status"] == "retired"
    assert store.manifest("momentum", c)["status"] == "challenger"
    assert main(["rollback", "momentum", "--root", root]) == 0
    assert store.champion("momentum") == a and store.lineage("momentum") == [a]
    assert store.manifest("momentum", b)["status"] == "retired"
    assert store.manifest("momentum", a)["status"] == "champion"
    assert main(["rollback", "momentum", "--root", root]) == 1
    assert "no previous champion" in capsys.readouterr().err


def test_a_challenger_keeps_the_time_it_became_available(tmp_path, models):
    store = ModelStore(LocalBlobs(tmp_path))
    trained_at = T0 + timedelta(days=5)
    store.save(replace(models[1], available_from=trained_at))
    assert store.load("momentum", models[1].version).available_from == trained_at
