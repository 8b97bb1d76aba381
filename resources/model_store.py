"""The model store: every agent model as a versioned artefact, with a champion lineage.

Layout (the same keys under a local folder, the embedded default, or a ``gs://bucket/prefix``
root in production)::

    <agent>/<version>/manifest.json   what the model is (see ``Manifest`` below)
    <agent>/<version>/<part>.txt      LightGBM model text per booster (p_up, or q10/q50/q90)
    <agent>/registry.json             {"lineage": [...]}: promoted versions, oldest first

The manifest holds the agent, version, kind, horizon, training window, feature list, LightGBM
parameters, validation metrics, ``created_at``, ``status`` (champion, challenger or retired), a
``format_version`` and a sha256 ``checksum`` of the model texts. Loading checks both, so a
truncated or edited file, or one written by an incompatible version, is a clear error.

The lineage is the champion history: ``promote`` appends, ``rollback`` removes the current
champion and reinstates the one before it. Backfills forecast each day with the latest lineage
model that was trained early enough (see ``sapphire_domain.agents.walk_forward``), so a rolled-back
model is never used again, for any day.

Rollback from a shell: ``python -m resources.model_store rollback <agent> [--root var/models]``
(``--root gs://bucket/prefix`` for a bucket).

Every write replaces a whole object at once (a rename locally, a single-request upload in a
bucket), so a reader never sees half an artefact. A registry change (promote, rollback) is a
read-modify-write: it must come from one process at a time, which the blocking promotion check
and the one-command rollback are.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

import dagster as dg
import lightgbm as lgb
from pydantic import Field

from sapphire_domain.agents.models import AgentModel
from sapphire_domain.agents.walk_forward import TrainingWindow
from sapphire_domain.errors import SapphireError

FORMAT_VERSION = 1
T = TypeVar("T")
Status = Literal["champion", "challenger", "retired"]


class ModelStoreError(SapphireError):
    """A model artefact is missing, corrupt, of an unknown format, or a registry change is
    impossible (promoting an unknown version, rolling back without a previous champion)."""


class Blobs(Protocol):
    """Where artefacts live: a local folder, or a bucket in production."""

    def read(self, key: str) -> bytes: ...
    def write(self, key: str, data: bytes) -> None: ...
    def exists(self, key: str) -> bool: ...
    def children(self, prefix: str) -> list[str]: ...


@dataclass(frozen=True)
class LocalBlobs:
    root: Path

    def read(self, key: str) -> bytes:
        try:
            return (self.root / key).read_bytes()
        except FileNotFoundError:
            raise ModelStoreError(f"model store: {self.root / key} does not exist") from None

    def write(self, key: str, data: bytes) -> None:
        # a rename is atomic, so a reader never sees half a file
        path = self.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
        partial.write_bytes(data)
        partial.replace(path)

    def exists(self, key: str) -> bool:
        return (self.root / key).exists()

    def children(self, prefix: str) -> list[str]:
        folder = self.root / prefix
        return sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []


@dataclass(frozen=True)
class GcsBlobs:
    """Objects under ``gs://bucket/prefix``; credentials come from the environment (Application
    Default Credentials, or ``STORAGE_EMULATOR_HOST`` for an emulator).

    timeout: seconds per request; retry_seconds: how long transient errors (5xx, 429, a dropped
    connection) are retried before the operation fails with a ``ModelStoreError``.
    """

    bucket: str
    prefix: str = ""
    timeout: float = 30.0
    retry_seconds: float = 120.0

    @cached_property
    def _bucket(self) -> Any:
        from google.cloud import storage

        return storage.Client().bucket(self.bucket)

    @cached_property
    def _retry(self) -> Any:
        from google.cloud.storage.retry import DEFAULT_RETRY

        return DEFAULT_RETRY.with_timeout(self.retry_seconds)

    def _url(self, key: str) -> str:
        return f"gs://{self.bucket}/{self._key(key)}"

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _call(self, what: str, key: str, call: Callable[[], T]) -> T:
        from google.api_core import exceptions

        try:
            return call()
        except exceptions.NotFound:
            if what == "write" or not self._bucket.exists(timeout=self.timeout):
                raise ModelStoreError(
                    f"model store: bucket gs://{self.bucket} does not exist or is not visible to "
                    "these credentials; create it or fix MODEL_STORE"
                ) from None
            raise ModelStoreError(f"model store: {self._url(key)} does not exist") from None
        except (exceptions.GoogleAPIError, OSError) as error:
            raise ModelStoreError(
                f"model store: could not {what} {self._url(key)}: {error}"
            ) from None

    def read(self, key: str) -> bytes:
        blob = self._bucket.blob(self._key(key))
        return self._call(
            "read", key, lambda: blob.download_as_bytes(timeout=self.timeout, retry=self._retry)
        )

    def write(self, key: str, data: bytes) -> None:
        blob = self._bucket.blob(self._key(key))
        # Rewriting the same bytes is harmless, so an upload may be retried like a read.
        self._call(
            "write", key,
            lambda: blob.upload_from_string(data, timeout=self.timeout, retry=self._retry),
        )  # fmt: skip

    def exists(self, key: str) -> bool:
        blob = self._bucket.blob(self._key(key))
        return self._call(
            "look up", key, lambda: bool(blob.exists(timeout=self.timeout, retry=self._retry))
        )

    def children(self, prefix: str) -> list[str]:
        folder = f"{self._key(prefix)}/"

        def names() -> list[str]:
            listing = self._bucket.client.list_blobs(
                self.bucket, prefix=folder, delimiter="/", timeout=self.timeout, retry=self._retry
            )
            for _ in listing:  # the sub-folders ("prefixes") fill in as the pages are read
                pass
            return sorted(p[len(folder) :].rstrip("/") for p in listing.prefixes)

        return self._call("list", prefix, names)


def open_blobs(root: str) -> Blobs:
    """A ``gs://bucket/prefix`` root is a bucket; anything else a local folder."""
    if root.startswith("gs://"):
        bucket, _, prefix = root.removeprefix("gs://").partition("/")
        if not bucket:
            raise ModelStoreError(f"model store {root!r}: the URL names no bucket")
        return GcsBlobs(bucket, prefix.strip("/"))
    if "://" in root:
        raise ModelStoreError(
            f"model store {root!r}: use a local folder or a gs://bucket/prefix URL"
        )
    return LocalBlobs(Path(root))


def _sha256(texts: dict[str, str]) -> str:
    digest = hashlib.sha256()
    for part in sorted(texts):
        digest.update(part.encode() + b"\0" + texts[part].encode() + b"\0")
    return digest.hexdigest()


class ModelStore:
    def __init__(self, blobs: Blobs) -> None:
        self.blobs = blobs

    # --- artefacts ---------------------------------------------------------------------------
    def save(
        self, model: AgentModel, status: Status = "challenger", created_at: datetime | None = None
    ) -> dict[str, Any]:
        """Write the model's texts, then its manifest (last, so a manifest implies its parts)."""
        if status == "champion":
            raise ModelStoreError("save a model as a challenger and promote it")
        texts = model.texts()
        manifest = {
            "format_version": FORMAT_VERSION,
            "agent": model.agent,
            "version": model.version,
            "kind": model.kind,
            "horizon": model.horizon,
            "features": list(model.features),
            "training_window": {
                "start": model.window.start.isoformat(),
                "cutoff": model.window.cutoff.isoformat(),
            },
            "parameters": model.params,
            "return_scale": model.return_scale,
            "validation_metrics": model.metrics,
            # absent (older manifests) or null: usable from cutoff + embargo
            "available_from": model.available_from.isoformat() if model.available_from else None,
            "created_at": (created_at or datetime.now(UTC)).isoformat(),
            "status": status,
            "parts": sorted(texts),
            "checksum": _sha256(texts),
        }
        for part, text in texts.items():
            self.blobs.write(f"{model.agent}/{model.version}/{part}.txt", text.encode())
        self._write_manifest(manifest)
        return manifest

    def _write_manifest(self, manifest: dict[str, Any]) -> None:
        key = f"{manifest['agent']}/{manifest['version']}/manifest.json"
        self.blobs.write(key, json.dumps(manifest, indent=2, sort_keys=True).encode())

    def manifest(self, agent: str, version: str) -> dict[str, Any]:
        key = f"{agent}/{version}/manifest.json"
        try:
            manifest = json.loads(self.blobs.read(key))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ModelStoreError(f"model store: {key} is not valid JSON ({error})") from None
        if not isinstance(manifest, dict) or manifest.get("format_version") != FORMAT_VERSION:
            found = manifest.get("format_version") if isinstance(manifest, dict) else None
            raise ModelStoreError(
                f"model store: {key} has format version {found!r}, this code reads "
                f"{FORMAT_VERSION}; retrain the model or load it with a matching release"
            )
        return manifest

    def load(self, agent: str, version: str) -> AgentModel:
        manifest = self.manifest(agent, version)
        texts = {
            part: self.blobs.read(f"{agent}/{version}/{part}.txt").decode(errors="replace")
            for part in manifest["parts"]
        }
        if _sha256(texts) != manifest["checksum"]:
            raise ModelStoreError(
                f"model store: {agent}/{version} is corrupt (checksum mismatch of its model "
                "files); restore it from a backup or retrain"
            )
        try:
            boosters = {part: lgb.Booster(model_str=text) for part, text in texts.items()}
        except lgb.basic.LightGBMError as error:
            raise ModelStoreError(
                f"model store: {agent}/{version} is unreadable: {error}"
            ) from None
        window = manifest["training_window"]
        return AgentModel(
            agent=agent,
            version=version,
            kind=manifest["kind"],
            features=tuple(manifest["features"]),
            horizon=manifest["horizon"],
            window=TrainingWindow(
                datetime.fromisoformat(window["start"]), datetime.fromisoformat(window["cutoff"])
            ),
            boosters=boosters,
            return_scale=manifest["return_scale"],
            params=manifest["parameters"],
            metrics=manifest["validation_metrics"],
            available_from=(
                datetime.fromisoformat(manifest["available_from"])
                if manifest.get("available_from")
                else None
            ),
        )

    def versions(self, agent: str) -> list[str]:
        return self.blobs.children(agent)

    def set_metrics(self, agent: str, version: str, metrics: dict[str, float]) -> None:
        manifest = self.manifest(agent, version)
        self._write_manifest({**manifest, "validation_metrics": metrics})

    # --- registry ----------------------------------------------------------------------------
    def lineage(self, agent: str) -> list[str]:
        """Promoted versions, oldest first; the last is the champion."""
        key = f"{agent}/registry.json"
        if not self.blobs.exists(key):
            return []
        return list(json.loads(self.blobs.read(key))["lineage"])

    def champion(self, agent: str) -> str | None:
        lineage = self.lineage(agent)
        return lineage[-1] if lineage else None

    def _set_status(self, agent: str, version: str, status: Status) -> None:
        self._write_manifest({**self.manifest(agent, version), "status": status})

    def promote(self, agent: str, version: str) -> None:
        """Make ``version`` the champion; the current one is retired (and stays in the lineage
        for backfills of the days it served)."""
        self.manifest(agent, version)  # it must exist and be readable
        lineage = self.lineage(agent)
        if lineage and lineage[-1] == version:
            return
        if version in lineage:
            raise ModelStoreError(f"{agent}/{version} was champion before; use rollback")
        if lineage:
            self._set_status(agent, lineage[-1], "retired")
        self._set_status(agent, version, "champion")
        self.blobs.write(
            f"{agent}/registry.json", json.dumps({"lineage": [*lineage, version]}).encode()
        )

    def reject(self, agent: str, version: str) -> None:
        """A challenger that lost: retired, never in the lineage."""
        if version not in self.lineage(agent):
            self._set_status(agent, version, "retired")

    def rollback(self, agent: str) -> str:
        """Retire the champion and reinstate the previous one; returns the new champion."""
        lineage = self.lineage(agent)
        if len(lineage) < 2:
            raise ModelStoreError(
                f"{agent}: no previous champion to roll back to (lineage: {lineage})"
            )
        self._set_status(agent, lineage[-1], "retired")
        self._set_status(agent, lineage[-2], "champion")
        self.blobs.write(f"{agent}/registry.json", json.dumps({"lineage": lineage[:-1]}).encode())
        return lineage[-2]


class ModelStoreResource(dg.ConfigurableResource):
    """Where agent models are kept.

    root: a local folder (the embedded default, ``<state>/models``) or, in production, a
        ``gs://bucket/prefix`` URL, as ``dg.EnvVar("MODEL_STORE")``.
    max_champion_age_hours: a champion whose training cutoff is older than this, at the time of
        the forecasts, is stale: flagged in metadata and weighted by the coordinator's
        ``stale_factor`` (as FreqAI's ``expiration_hours``).
    """

    root: str = Field(description="Folder or gs://bucket/prefix URL of the model artefacts.")
    max_champion_age_hours: float = 24.0 * 45

    def store(self) -> ModelStore:
        return ModelStore(open_blobs(self.root))


def main(argv: list[str] | None = None) -> int:
    """``python -m resources.model_store rollback|promote|show <agent> [version]``."""
    parser = argparse.ArgumentParser(prog="python -m resources.model_store")
    parser.add_argument("command", choices=["rollback", "promote", "show"])
    parser.add_argument("agent")
    parser.add_argument("version", nargs="?")
    # MODEL_STORE is what the production code location reads too (resources.environments).
    parser.add_argument("--root", default=os.environ.get("MODEL_STORE", "var/models"))
    args = parser.parse_args(argv)
    try:
        store = ModelStore(open_blobs(args.root))
        if args.command == "rollback":
            print(f"{args.agent}: champion is now {store.rollback(args.agent)}")
        elif args.command == "promote":
            if not args.version:
                parser.error("promote needs a version")
            store.promote(args.agent, args.version)
            print(f"{args.agent}: champion is now {args.version}")
        else:
            for version in store.versions(args.agent):
                m = store.manifest(args.agent, version)
                print(version, m["status"], m["training_window"]["cutoff"])
    except ModelStoreError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
