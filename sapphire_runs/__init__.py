"""Run workers forked from a warm parent, so a live run does not pay for Python imports.

The embedded default's run launcher (``PrewarmedRunLauncher``, set in ``dagster.yaml``) keeps one
parent process per code location that has imported Dagster and the definitions once
(``zygote``); each run is a fresh process forked from it. Production uses dagster-k8s instead.
"""
