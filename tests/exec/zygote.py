"""A pre-warmed parent for crash tests: it imports the service once, then forks a fresh service
process per command, so 50+ kill -9 cycles do not each pay the interpreter's import time.

Each child is a real, separate process running ``sapphire_exec.cli.main`` from scratch (no
state is shared beyond the imported modules); the test kills it with SIGKILL by pid.
Protocol on stdin/stdout, one line each: ``spawn`` -> pid; ``reap PID`` -> exit status.
"""

from __future__ import annotations

import math
import os
import signal
import sys

import sapphire_exec.cli
import sapphire_exec.http
import sapphire_exec.venues.paper
import sapphire_market.replay  # noqa: F401
from sapphire_domain.fill_model import CostModel, MarketState, fill


def main() -> None:
    # Compile-cache load of the fill model (seconds) happens once here; numba starts no threads.
    fill(1.0, MarketState(1.0, math.nan, math.nan), CostModel())
    for line in sys.stdin:
        command = line.split()
        if command[0] == "spawn":
            pid = os.fork()
            if pid == 0:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                log = os.open(command[1], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
                os.dup2(log, 1)
                os.dup2(log, 2)
                code = 1
                try:
                    code = sapphire_exec.cli.main([])
                finally:
                    os._exit(code)
            print(pid, flush=True)
        elif command[0] == "reap":
            _, status = os.waitpid(int(command[1]), 0)
            print(status, flush=True)


if __name__ == "__main__":
    main()
