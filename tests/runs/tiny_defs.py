"""A small code location for the run launcher's tests: a job that records which process ran
it (and which version of this file), and one that waits so it can be cancelled or killed. The
tests load a copy of it, which they may edit."""

import os
import time

import dagster as dg

VERSION = 1
print(f"tiny location {VERSION} imported")  # output at import must not garble the launcher


@dg.op(out={"result": dg.Out(dg.Nothing)})
def record(context: dg.OpExecutionContext) -> None:
    context.add_output_metadata(
        {"pid": os.getpid(), "parent": os.getppid(), "version": VERSION}, output_name="result"
    )


@dg.op
def wait_long() -> None:
    time.sleep(300)


@dg.job(executor_def=dg.in_process_executor)  # the op runs in the run worker itself
def which_process() -> None:
    record()


@dg.job(executor_def=dg.in_process_executor)  # the op runs in the run worker itself
def long_wait() -> None:
    wait_long()


defs = dg.Definitions(jobs=[which_process, long_wait])
