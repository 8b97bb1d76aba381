"""The pure domain package imports neither Dagster nor any I/O client."""

import pkgutil
import subprocess
import sys

import sapphire_domain

FORBIDDEN = ("dagster", "ccxt", "duckdb", "redis", "requests", "google", "sapphire_market")


def test_the_domain_package_imports_no_dagster_and_no_io_client():
    modules = [f"sapphire_domain.{m.name}" for m in pkgutil.iter_modules(sapphire_domain.__path__)]
    assert "sapphire_domain.candles" in modules
    program = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in modules)
        + f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r})\n"
        + "print(','.join(bad))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == ""
