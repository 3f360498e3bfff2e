"""Shared pytest fixtures: one prepared fixture corpus and one local Ray cluster per session."""

import logging
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def fixture_corpus(tmp_path_factory) -> Path:
    """The committed fixture corpus (tests/fixtures/corpus: real text, every domain), prepared once
    for the whole session. Tests read it; a test that damages a corpus prepares its own."""
    from mixopt.data.prepare import prepare_corpus

    directory = tmp_path_factory.mktemp("corpus") / "fixture"
    prepare_corpus(directory, source="fixture")
    return directory


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
