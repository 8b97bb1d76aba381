"""The execution service in paper mode, as ``sapphire run`` and ``sapphire demo`` start it.

Both start the real service (``python -m sapphire_exec``) from ``config/exec-paper.yaml``, with
the HTTP port and the candle timeframe of the run written into a copy of it, so the file itself
never needs editing to move a port.
"""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path
from typing import Any

import httpx
import yaml

from sapphire_domain.errors import ConfigError
from sapphire_domain.settings import PROJECT_ROOT

DEFAULT_CONFIG = PROJECT_ROOT / "config" / "exec-paper.yaml"
TOKEN_ENV = "SAPPHIRE_CONTROL_TOKEN"


def write_config(base: Path, dest: Path, port: int, timeframe: str) -> Path:
    """``base`` with the HTTP port and the paper venue's timeframe set, written to ``dest``."""
    try:
        raw = yaml.safe_load(base.read_text()) or {}
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError(f"cannot read the execution config {base}: {error}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"the execution config {base} must be a mapping")
    raw.setdefault("http", {})["port"] = port
    venue = raw.setdefault("venue", {})
    if venue.get("kind", "paper") == "paper":
        venue.setdefault("paper", {})["timeframe"] = timeframe
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(
        f"# Written by sapphire from {base}; edit that file instead.\n" + yaml.safe_dump(raw)
    )
    return dest


def control_token(state: Path) -> str:
    """``SAPPHIRE_CONTROL_TOKEN``, else this state folder's own token (created once, mode 600)."""
    if os.environ.get(TOKEN_ENV):
        return os.environ[TOKEN_ENV]
    path = state / "exec" / "control_token"
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(24)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(token)
    return token


def token_file(state: Path) -> Path:
    return state / "exec" / "control_token"


def command(config: Path) -> list[str]:
    return [sys.executable, "-m", "sapphire_exec", "--config", str(config)]


def healthy(url: str) -> bool:
    """``/healthz`` answers 200: started, reconciled and connected to the bus."""
    try:
        return httpx.get(f"{url}/healthz", timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def status(url: str, token: str) -> dict[str, Any]:
    """The control API's status: trading state, positions, equity."""
    response = httpx.get(
        f"{url}/control/status", headers={"Authorization": f"Bearer {token}"}, timeout=5.0
    )
    response.raise_for_status()
    result: dict[str, Any] = response.json()
    return result
