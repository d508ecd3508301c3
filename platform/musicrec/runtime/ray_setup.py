"""Ray for a profile: in-process for local, ``RAY_ADDRESS`` (or ``runtime.ray.address``) on a cluster."""

from __future__ import annotations

import logging
import os

import ray

from musicrec.config import Config
from musicrec.errors import ConfigError

log = logging.getLogger(__name__)


def init_ray(config: Config, *, dashboard: bool = False) -> None:
    """``dashboard`` (local only; a cluster has its own): also start Ray's dashboard (127.0.0.1, ~1 s),
    whose State API Ray Train's placement-group cleaner needs: to free the resources of a run whose
    trial Tune stopped, and to watch a run's controller at all (without it, it logs a warning every second)."""
    if ray.is_initialized():
        return
    address = config.runtime.ray.address or os.environ.get("RAY_ADDRESS", "")
    if address:
        ray.init(address=address, log_to_driver=True)
    elif config.runtime.profile == "cluster":
        raise ConfigError("runtime.profile=cluster needs a Ray cluster: set RAY_ADDRESS or runtime.ray.address")
    else:
        ray.init(
            num_cpus=config.runtime.ray.num_cpus,
            include_dashboard=dashboard,
            dashboard_host="127.0.0.1",
            _node_ip_address="127.0.0.1",
            configure_logging=True,
            logging_level=logging.WARNING,
        )
    log.info("Ray %s: %s CPUs", ray.__version__, ray.cluster_resources().get("CPU"))
