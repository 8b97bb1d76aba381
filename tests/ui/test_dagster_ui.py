"""The Dagster UI, rendered by a real headless Chromium, shows the assets and their real runs."""

import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By

from tests.ui.conftest import DagsterUi

pytestmark = pytest.mark.ui

T = TypeVar("T")
MARKET_DATA = {"candles", "trades", "funding_rates"}
STATUS_BLOCK = "//span[normalize-space()='Latest materialization']/.."


def settle(read: Callable[[], T], done: Callable[[T], bool], timeout_s: float = 60.0) -> T:
    """Reads the page until ``done`` holds or time runs out, and returns the last reading.

    The UI renders in stages (the graph, then each node's live data), so the assertions look at
    a page that has settled, and a page that never does fails on what it last showed.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            reading = read()
        except StaleElementReferenceException:  # re-rendered while being read
            if time.monotonic() > deadline:
                raise
        else:
            if done(reading) or time.monotonic() > deadline:
                return reading
        time.sleep(0.25)


def group_graph(browser: WebDriver) -> tuple[dict[str, str], set[str]]:
    """The group's own asset nodes (name -> latest event as shown) and the linked outside assets."""
    own: dict[str, str] = {}
    for node in browser.find_elements(By.CSS_SELECTOR, "svg foreignObject"):
        lines = node.text.splitlines()
        if "Latest event" in lines[:-1]:
            own[lines[0]] = lines[lines.index("Latest event") + 1]
    outside = {
        label.get_attribute("title") or ""
        for label in browser.find_elements(By.CSS_SELECTOR, "svg foreignObject span.label")
    }
    return own, outside


def latest_materialisation(browser: WebDriver) -> tuple[str, list[str]]:
    """The asset page's "Latest materialization" block: its text and the runs it links to."""
    blocks = browser.find_elements(By.XPATH, STATUS_BLOCK)
    if not blocks:
        return "", []
    links = blocks[0].find_elements(By.CSS_SELECTOR, "a[href^='/runs/']")
    return blocks[0].text, [link.get_attribute("href") or "" for link in links]


def test_the_lineage_graph_shows_the_groups_assets_with_their_latest_events(
    browser: WebDriver, dagster_ui: DagsterUi, screenshots: Path
):
    browser.get(f"{dagster_ui.base_url}/locations/sapphire/asset-groups/market_data")
    own, outside = settle(
        lambda: group_graph(browser),
        lambda graph: set(graph[0]) == MARKET_DATA and "features" in graph[1]
        and all(event.endswith("ago") for event in graph[0].values()),
    )  # fmt: skip
    browser.save_screenshot(str(screenshots / "lineage-market_data.png"))

    assert set(own) == MARKET_DATA
    # Every node shows the run that just materialised it, as a relative time ("... ago").
    assert all(event.endswith("ago") for event in own.values()), own
    # Downstream assets of other groups are linked from the graph.
    assert {"features", "target_portfolio"} <= outside


def test_the_asset_page_shows_the_latest_materialisation_and_its_run(
    browser: WebDriver, dagster_ui: DagsterUi, screenshots: Path
):
    run = dagster_ui.run
    browser.get(f"{dagster_ui.base_url}/assets/candles")
    text, links = settle(lambda: latest_materialisation(browser), lambda block: bool(block[1]))
    browser.save_screenshot(str(screenshots / "asset-candles.png"))

    # The last partition of the run, linked to the run itself.
    assert run.partitions[1] in text.splitlines(), text
    assert len(links) == 1 and f"/runs/{run.run_id}?" in links[0], links

    browser.get(f"{dagster_ui.base_url}/assets/candles?view=events")
    event = f"Partition {run.partitions[1]} materialized in run {run.run_id[:8]}"
    body = settle(lambda: browser.find_element(By.TAG_NAME, "body").text, lambda t: event in t)
    browser.save_screenshot(str(screenshots / "asset-candles-events.png"))
    assert event in body


def test_an_asset_never_materialised_shows_no_materialisation(
    browser: WebDriver, dagster_ui: DagsterUi, screenshots: Path
):
    browser.get(f"{dagster_ui.base_url}/assets/target_portfolio")
    text, links = settle(
        lambda: latest_materialisation(browser), lambda block: len(block[0].splitlines()) > 1
    )
    browser.save_screenshot(str(screenshots / "asset-target_portfolio.png"))

    assert text.splitlines() == ["Latest materialization", "Never materialized"]
    assert links == []
