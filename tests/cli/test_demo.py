"""``sapphire demo`` end to end, short: real Dagster runs, a real redis-server and the real
execution service; it trades, feeds the fills back and retrains."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from sapphire_domain.settings import PROJECT_ROOT
from tests.cli.conftest import base_env, sapphire

pytestmark = pytest.mark.slow


def test_a_short_demo_trades_feeds_back_retrains_and_exits_zero(tmp_path: Path):
    env = base_env(tmp_path)
    env.pop("SAPPHIRE_CONFIG")  # the project's own universe
    state = tmp_path / "demo"
    result = subprocess.run(
        sapphire("demo", "--state-dir", str(state), "--history-days", "24", "--days", "2",
                 "--backtest-days", "1", "--speed", "43200"),
        cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    figures = json.loads((state / "summary.json").read_text())

    assert figures["fills"] > 0 and figures["orders"] > 0
    assert f"{figures['fills']} fills of {figures['orders']} orders" in output
    assert "PnL" in output and "Models: the champion before and after" in output
    assert figures["targets_published"] == 3  # the backtest's last, then one per session day
    assert figures["trading_state"] == "ACTIVE"
    for agent, model in figures["models"].items():
        assert model["before"].startswith(f"{agent}-") and model["challenger"] != model["before"]
        assert model["after"] == (model["challenger"] if model["promoted"] else model["before"])
        assert model["trade_feedback_rows"] > 0  # the session's outcomes were learnt from

    # every fill reached the warehouse with its decision; the runs are in the demo's instance
    stored = pl.read_parquet(state / "warehouse" / "trade_fills" / "*.parquet")
    assert stored.height == figures["fills"]
    assert figures["trade_feedback_rows"] == figures["fills"]
    instance = dg.DagsterInstance.from_config(str(state / "dagster_home"))
    jobs = {r.dagster_run.job_name for r in instance.get_run_records()}
    assert {"__ASSET_JOB", "retrain_agents"} <= jobs
