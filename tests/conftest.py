"""Shared pytest fixtures."""

import logging

import pytest


@pytest.fixture(scope="session")
def ray_local():
    """A real local Ray cluster of 2 CPUs for the whole test session (no dashboard).

    `ray.init(local_mode=True)` no longer exists, and a bare `ray.init()` can hang on a stale
    cluster file; address="local" always starts a fresh cluster."""
    ray = pytest.importorskip("ray")
    started = False
    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False,
                 logging_level=logging.WARNING, log_to_driver=False)
        started = True
    yield ray
    if started:
        ray.shutdown()
