"""Provisions and runs the BigQuery emulator (``bqemulator``) for tests of the BigQuery path.

bqemulator pins ``duckdb==1.5.5`` while the project uses DuckDB 2, so it lives in a virtualenv
of its own under ``var/bqemulator/venv``, built once with uv and then reused. The environment is
built in a scratch folder and renamed into place, so concurrent test workers never see half of
one. The emulator needs DuckDB's spatial extension, which is installed from a wheel because there
is no internet to fetch it from.

Run ``python -m tests.warehouse.bqemulator`` to provision it ahead of time.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sapphire_bus.server import free_port

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CACHE_DIR = PROJECT_ROOT / "var" / "bqemulator"
REQUIREMENTS = (
    "bqemulator==1.4.0",
    "duckdb==1.5.5",
    "duckdb-extensions==1.5.5",
    "duckdb-extension-spatial==1.5.5",
    # bqemulator registers numpy-backed UDFs at start-up but does not declare numpy.
    "numpy",
)
# Written last: a venv without it is incomplete and gets rebuilt.
_READY_MARKER = "sapphire-provisioned.txt"


class ProvisioningError(RuntimeError):
    """The emulator's environment could not be built (e.g. no package registry)."""


def find_uv() -> str:
    found = shutil.which("uv") or str(PROJECT_ROOT / ".tools" / "bin" / "uv")
    if not Path(found).exists():
        raise ProvisioningError("uv not found on PATH nor at .tools/bin/uv")
    return found


def _run(args: list[str], what: str, env: dict[str, str] | None = None) -> None:
    result = subprocess.run(args, capture_output=True, text=True, env=env, check=False)
    if result.returncode != 0:
        raise ProvisioningError(f"{what} failed ({result.returncode}): {result.stderr[-2000:]}")


def provision(cache_dir: Path = CACHE_DIR) -> Path:
    """Build the emulator's virtualenv if needed; return its Python interpreter."""
    venv = cache_dir / "venv"
    python = venv / "bin" / "python"
    wanted = "\n".join(REQUIREMENTS)
    marker = venv / _READY_MARKER
    if not (marker.exists() and marker.read_text() == wanted):
        cache_dir.mkdir(parents=True, exist_ok=True)
        scratch = cache_dir / f".build-{uuid.uuid4().hex}"
        try:
            uv = find_uv()
            # The venv's own python: the project's interpreter is 3.11+, as bqemulator needs.
            _run([uv, "venv", "--quiet", "--python", sys.executable, str(scratch)], "uv venv")
            env = {**os.environ, "VIRTUAL_ENV": str(scratch)}
            _run(
                [uv, "pip", "install", "--quiet", "--python", str(scratch / "bin" / "python"),
                 *REQUIREMENTS],
                "uv pip install " + " ".join(REQUIREMENTS),
                env=env,
            )  # fmt: skip
            (scratch / _READY_MARKER).write_text(wanted)
            if venv.exists():
                shutil.rmtree(venv, ignore_errors=True)
            try:
                scratch.rename(venv)
            except OSError:
                # Another worker renamed its build in first; that one serves as well.
                if not marker.exists():
                    raise
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    # Installs the extension into DuckDB's per-user folder; cheap, so done every session.
    _run(
        [
            str(python),
            "-c",
            "import duckdb_extensions; duckdb_extensions.import_extension('spatial')",
        ],
        "installing DuckDB's spatial extension",
    )
    return python


@dataclass(frozen=True)
class Emulator:
    """A running emulator: its REST endpoint and default project."""

    endpoint: str
    project: str


def _wait_ready(endpoint: str, process: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"bqemulator exited with {process.returncode}: {log.read_text()[-3000:]}"
            )
        try:
            with urllib.request.urlopen(f"{endpoint}/readyz", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"bqemulator not ready after {timeout:.0f}s: {log.read_text()[-3000:]}")


@contextmanager
def running_emulator(
    python: Path, data_dir: Path, project: str = "sapphire-test", timeout: float = 60.0
) -> Iterator[Emulator]:
    """Start the emulator on a free loopback port with its data in ``data_dir``; stop it after."""
    data_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = data_dir / "bqemulator.log"
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            [str(python), "-m", "bqemulator", "start",
             "--rest-host", "127.0.0.1", "--rest-port", str(port),
             "--grpc-host", "127.0.0.1", "--grpc-port", "0",
             "--persistent", "--data-dir", str(data_dir),
             "--project", project, "--log-level", "warning"],
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    endpoint = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(endpoint, process, log, timeout)
        yield Emulator(endpoint=endpoint, project=project)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


if __name__ == "__main__":
    started = time.monotonic()
    print(f"bqemulator environment: {provision()} ({time.monotonic() - started:.1f}s)")
