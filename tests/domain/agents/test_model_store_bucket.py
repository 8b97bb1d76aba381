"""The model store on a bucket: google-cloud-storage against the real fake-gcs-server."""

import pytest
from google.cloud import storage

from resources.model_store import GcsBlobs, ModelStore, ModelStoreError, ModelStoreResource
from sapphire_bus.server import free_port


def test_artefacts_live_under_the_prefix_and_load_back(gcs_bucket, models):
    store = ModelStoreResource(root=f"gs://{gcs_bucket}/sapphire/models").store()
    model = models[0]
    store.save(model)
    names = {b.name for b in storage.Client().list_blobs(gcs_bucket)}
    assert names == {
        f"sapphire/models/momentum/{model.version}/manifest.json",
        f"sapphire/models/momentum/{model.version}/p_up.txt",
    }
    loaded = store.load("momentum", model.version)
    assert loaded.window == model.window and loaded.texts() == model.texts()
    assert store.versions("momentum") == [model.version] and store.versions("sentiment") == []


def test_a_corrupt_object_is_a_clear_error(gcs_bucket, models):
    store = ModelStore(GcsBlobs(gcs_bucket))
    store.save(models[0])
    blob = storage.Client().bucket(gcs_bucket).blob(f"momentum/{models[0].version}/p_up.txt")
    blob.upload_from_string(blob.download_as_bytes()[:-200])
    with pytest.raises(ModelStoreError, match="corrupt"):
        store.load("momentum", models[0].version)


def test_a_missing_bucket_or_object_is_named(gcs_bucket, models):
    missing = ModelStore(GcsBlobs("no-such-bucket"))
    with pytest.raises(ModelStoreError, match="bucket gs://no-such-bucket does not exist"):
        missing.save(models[0])
    with pytest.raises(ModelStoreError, match="bucket gs://no-such-bucket does not exist"):
        missing.load("momentum", "v1")
    with pytest.raises(ModelStoreError, match=rf"gs://{gcs_bucket}/momentum/v1/manifest.json"):
        ModelStore(GcsBlobs(gcs_bucket)).load("momentum", "v1")


def test_an_unreachable_bucket_fails_after_the_retry_budget(monkeypatch):
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{free_port()}")
    store = ModelStore(GcsBlobs("models", timeout=1.0, retry_seconds=2.0))
    with pytest.raises(ModelStoreError, match="could not look up gs://models/momentum/registry"):
        store.champion("momentum")


@pytest.mark.parametrize("root", ["s3://bucket/models", "gs:///models"])
def test_an_unsupported_root_is_a_clear_error(root):
    with pytest.raises(ModelStoreError, match=r"gs://bucket/prefix|names no bucket"):
        ModelStoreResource(root=root).store()
