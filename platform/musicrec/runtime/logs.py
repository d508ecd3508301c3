"""Quiet, readable logs: our own INFO lines, the engines' chatter at WARN."""

from __future__ import annotations

import logging

_NOISY = ("py4j", "pyspark", "ray", "mlflow", "alembic", "urllib3", "filelock", "deltalake", "numba")


def setup_logging(level: str = "INFO") -> None:
    logging.basicConfig(
        level=getattr(logging, level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        force=True,
    )
    for name in _NOISY:
        logging.getLogger(name).setLevel(max(logging.WARNING, getattr(logging, level)))
