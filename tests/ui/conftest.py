"""The real Dagster UI over real runs, looked at through Debian's headless Chromium.

Once per module: a temporary DAGSTER_HOME with the project's ``dagster.yaml``, a run that
materialises the market data and features for the universe's first two days into it, the
``dagster-webserver`` on the project's ``workspace.yaml`` over the same state folder, and a
Chromium driven by Selenium through Debian's chromedriver. The webserver starts before the run so
that their start-ups overlap; both processes are stopped by finalisers whatever happens.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import dagster as dg
import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.chrome.webdriver import WebDriver

from sapphire_assets.definitions import build_definitions
from sapphire_bus.server import free_port
from sapphire_cli.main import dagster_home
from sapphire_domain.settings import DEFAULT_CONFIG_PATH, PROJECT_ROOT, load_settings
from tests.processes import log_tail, stop_process_group

MATERIALISED = ("candles", "trades", "funding_rates", "features")
# Code server start-up imports the whole code location: tens of seconds on a busy 2-core machine.
START_TIMEOUT_S = 150.0
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--no-first-run", "--window-size=1600,1200",
)  # fmt: skip
LOCATION_STATUS = """
{ workspaceOrError { __typename ... on Workspace { locationEntries {
    name locationOrLoadError { __typename ... on PythonError { message } } } } } }
"""


@dataclass(frozen=True)
class Materialised:
    run_id: str
    partitions: tuple[str, str]


@dataclass(frozen=True)
class DagsterUi:
    base_url: str
    run: Materialised


@pytest.fixture(scope="module")
def ui_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """DAGSTER_HOME (``home/``) and the state folder (``state/``), the instance's storage created."""
    root = tmp_path_factory.mktemp("dagster-ui")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DAGSTER_HOME", str(root / "home"))
        dagster_home()  # creates the storage before the webserver opens it
    return root


@pytest.fixture(scope="module")
def screenshots() -> Path:
    """Where the screenshots go: $SAPPHIRE_TEST_ARTIFACTS/ui, by default var/test-artifacts/ui."""
    root = Path(os.environ.get("SAPPHIRE_TEST_ARTIFACTS", PROJECT_ROOT / "var" / "test-artifacts"))
    folder = root / "ui"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    """Headless Chromium; skips only where Debian's chromium and chromedriver are not installed."""
    chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or chromedriver is None:
        pytest.skip(
            "Chromium is not installed and could not be: `make browser` "
            "(scripts/install-system-deps.sh --browser) installs Debian's chromium and "
            "chromium-driver"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    # An explicit driver path: Selenium Manager never looks for, or downloads, a driver.
    driver = webdriver.Chrome(options=options, service=Service(executable_path=chromedriver))
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def webserver(ui_root: Path) -> Iterator[tuple[subprocess.Popen[bytes], str, Path]]:
    """``dagster-webserver`` started (not yet answering) on a free port: process, URL, log."""
    port = free_port()
    log = ui_root / "webserver.log"
    env = {
        **os.environ,
        "DAGSTER_HOME": str(ui_root / "home"),
        "SAPPHIRE_STATE_DIR": str(ui_root / "state"),
        "SAPPHIRE_CONFIG": str(DEFAULT_CONFIG_PATH),
        "SAPPHIRE_ENV": "local",
    }
    command = [
        str(Path(sys.executable).with_name("dagster-webserver")),
        "-w", str(PROJECT_ROOT / "workspace.yaml"), "-h", "127.0.0.1", "-p", str(port),
    ]  # fmt: skip
    with log.open("wb") as sink:
        # Its own session, so that stopping the group also stops the code server it spawns.
        process = subprocess.Popen(
            command, env=env, cwd=PROJECT_ROOT, stdout=sink, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        yield process, f"http://127.0.0.1:{port}", log
    finally:
        stop_process_group(process)


@pytest.fixture(scope="module")
def materialised(ui_root: Path) -> Materialised:
    """One real run of the market data and features for the universe's first two days."""
    settings = load_settings(DEFAULT_CONFIG_PATH)
    first = settings.universe.start
    partitions = (first.isoformat(), (first + timedelta(days=1)).isoformat())
    defs = build_definitions(settings, "local", ui_root / "state")
    job = defs.resolve_implicit_global_asset_job_def()
    with dg.DagsterInstance.from_config(str(ui_root / "home")) as instance:
        result = job.execute_in_process(
            instance=instance,
            asset_selection=[dg.AssetKey(name) for name in MATERIALISED],
            tags={
                "dagster/asset_partition_range_start": partitions[0],
                "dagster/asset_partition_range_end": partitions[1],
            },
        )
    assert result.success
    return Materialised(result.run_id, partitions)


@pytest.fixture(scope="module")
def dagster_ui(
    webserver: tuple[subprocess.Popen[bytes], str, Path], materialised: Materialised
) -> DagsterUi:
    """The webserver once it answers and has loaded the code location without error."""
    process, base_url, log = webserver
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if process.poll() is not None:
            pytest.fail(f"dagster-webserver exited with {process.returncode}:\n{log_tail(log)}")
        try:
            if httpx.get(f"{base_url}/server_info", timeout=2.0).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(
                f"dagster-webserver not answering after {START_TIMEOUT_S} s:\n{log_tail(log)}"
            )
        time.sleep(0.5)
    reply = httpx.post(f"{base_url}/graphql", json={"query": LOCATION_STATUS}, timeout=30.0)
    entries = reply.json()["data"]["workspaceOrError"]["locationEntries"]
    loaded = {e["name"]: e["locationOrLoadError"] for e in entries}
    assert loaded.get("sapphire", {}).get("__typename") == "RepositoryLocation", loaded
    return DagsterUi(base_url, materialised)
