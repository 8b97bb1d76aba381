"""The warm parent of run workers.

It imports Dagster's command line and the code location (``argv[1]``: a serialised repository
origin, the one the runs will name) once, says ``{"ready": ...}``, then forks one worker per
request. A request is one JSON line on stdin, ``{"argv": [...]}`` (the arguments of the
``dagster`` command, ``api execute_run ...``); the reply is one line on stdout, ``{"pid": N}``,
or ``{"stale": path}`` when a source file of the project changed since the imports, after which
the parent exits (runs must see edited code, as they do when Dagster reloads a location). Any
other output, the code location's or a run's, goes to stderr. The worker runs that command as
the ``dagster`` executable would, so a run executes exactly as it does in a freshly started
process, without the seconds of imports. End of stdin (the launcher is gone) ends the parent;
running workers carry on to the end of their runs.

Forking is safe because the parent does nothing but wait on stdin after the imports: no thread
pool has worked (importing starts none that a child would miss), no database connection or
socket is open, and workers are reaped automatically (``SIGCHLD`` ignored here; restored in
the worker, whose own subprocesses need ``wait``).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import traceback
from typing import TextIO

from dagster._cli import cli as dagster_cli
from dagster._core.origin import RepositoryPythonOrigin
from dagster._serdes import deserialize_value
from dagster._utils.hosted_user_process import recon_repository_from_origin


def _run_worker(argv: list[str], replies: TextIO) -> None:
    """The forked child: run ``dagster <argv>`` and exit with its status, never returning."""
    code = 1
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)  # Dagster's cancel signal
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        # Not the parent's pipes: the launcher must see them close when the parent ends.
        os.close(replies.fileno())
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        dagster_cli.main(args=argv, prog_name="dagster", standalone_mode=True)
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _project_sources() -> dict[str, int]:
    """Modification times of the imported modules that are the project's own code (under the
    working directory, not an installed package)."""
    root = os.path.realpath(os.getcwd()) + os.sep
    installed = tuple(os.path.realpath(p) + os.sep for p in {sys.prefix, sys.base_prefix})
    sources: dict[str, int] = {}
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if not path:
            continue
        path = os.path.realpath(path)
        if path.startswith(root) and not path.startswith(installed):
            sources[path] = os.stat(path).st_mtime_ns
    return sources


def _changed(sources: dict[str, int]) -> str | None:
    for path, mtime in sources.items():
        try:
            if os.stat(path).st_mtime_ns != mtime:
                return path
        except OSError:
            return path
    return None


def main() -> None:
    # Replies go to the launcher's pipe; anything else written to stdout (a print in the code
    # location, a run's output) goes where stderr goes, so it can never garble a reply.
    replies = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    origin = deserialize_value(sys.argv[1], RepositoryPythonOrigin)
    recon_repository_from_origin(origin).get_definition()  # imports the code location
    sources = _project_sources()
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    print(json.dumps({"ready": os.getpid()}), file=replies, flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        changed = _changed(sources)  # a stat per module: well under a millisecond
        if changed is not None:
            print(json.dumps({"stale": changed}), file=replies, flush=True)
            return  # edited code: the launcher starts a parent that imports the new version
        pid = os.fork()
        if pid == 0:
            _run_worker(request["argv"], replies)
        print(json.dumps({"pid": pid}), file=replies, flush=True)


if __name__ == "__main__":
    main()
