"""Quiet, readable logs: our own lines at the configured level, every library's at WARNING.

Libraries log at INFO through loggers we do not know in advance (py4j reports a dropped
gateway connection with a traceback through the root logger), so the root stays at WARNING and
only the ``musicrec`` loggers follow ``runtime.log_level``. Some libraries give their loggers
handlers of their own (MLflow's prints "Creating initial MLflow database tables" at INFO): those
are set to WARNING by name.
"""

from __future__ import annotations

import logging

_OWN_HANDLERS = ("py4j", "pyspark", "ray", "mlflow", "alembic", "urllib3", "filelock", "deltalake", "numba")


def setup_logging(level: str = "INFO") -> None:
    ours = getattr(logging, level)
    quiet = max(logging.WARNING, ours)
    logging.basicConfig(
        level=quiet,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        force=True,
    )
    for name in _OWN_HANDLERS:
        logging.getLogger(name).setLevel(quiet)
    logging.getLogger("musicrec").setLevel(ours)
