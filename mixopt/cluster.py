"""Joining or starting the Ray cluster, once per process: the one way the driver gets a Ray.

    init_ray(address=None, num_cpus=None)

Corpus preparation (mixopt/data/build.py) and proxy training (mixopt/pipeline/runner.py) both go
through it, so `mixopt recommend` that prepares its corpus and then trains uses one cluster.
"""

from __future__ import annotations

import logging
import os


def init_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Connect to Ray once per process.

    Already connected: that cluster, as it is. address given: that cluster. Inside `ray job
    submit` (RAY_ADDRESS set): the job's cluster. Otherwise a new local cluster of num_cpus CPUs
    on loopback without a dashboard. Token authentication stays on (Ray's default)."""
    import ray

    if ray.is_initialized():
        return
    quiet = dict(logging_level=logging.WARNING, log_to_driver=False)
    if address:
        ray.init(address=address, **quiet)
    elif os.environ.get("RAY_ADDRESS"):
        ray.init(**quiet)
    else:
        ray.init(address="local", num_cpus=num_cpus or os.cpu_count() or 1, include_dashboard=False, **quiet)
