"""The execution service never imports Dagster."""

import pkgutil
import subprocess
import sys

import sapphire_exec
import sapphire_exec.venues


def test_the_execution_service_imports_no_dagster():
    modules = [f"sapphire_exec.{m.name}" for m in pkgutil.iter_modules(sapphire_exec.__path__)]
    modules += [
        f"sapphire_exec.venues.{m.name}"
        for m in pkgutil.iter_modules(sapphire_exec.venues.__path__)
    ]
    assert "sapphire_exec.service" in modules
    program = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in modules if not m.endswith("__main__"))
        + "print(','.join(sorted(m for m in sys.modules if m.split('.')[0] == 'dagster')))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == ""
