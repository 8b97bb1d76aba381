"""Fixtures for the warehouse tests: a real BigQuery emulator, provisioned on first use."""

import time
from collections.abc import Iterator

import pytest

from tests.warehouse.bqemulator import Emulator, ProvisioningError, provision, running_emulator


@pytest.fixture(scope="session")
def bigquery_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    """A running bqemulator; its environment is built under var/bqemulator the first time."""
    started = time.monotonic()
    try:
        python = provision()
    except ProvisioningError as exc:
        pytest.skip(f"BigQuery emulator could not be provisioned (no package registry?): {exc}")
    print(f"bqemulator environment ready in {time.monotonic() - started:.1f}s")
    with running_emulator(python, tmp_path_factory.mktemp("bqemulator")) as emulator:
        yield emulator
