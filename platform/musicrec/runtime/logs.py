"""Quiet, readable logs: our own lines at the configured level, every library's at WARNING.

Libraries log at INFO through loggers we do not know in advance (py4j reports a dropped
gateway connection with a traceback through the root logger), so the root stays at WARNING and
only the ``musicrec`` loggers follow ``runtime.log_level``.
"""

from __future__ import annotations

import logging


def setup_logging(level: str = "INFO") -> None:
    ours = getattr(logging, level)
    logging.basicConfig(
        level=max(logging.WARNING, ours),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        force=True,
    )
    logging.getLogger("musicrec").setLevel(ours)
