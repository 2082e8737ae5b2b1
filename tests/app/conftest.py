"""Fixtures of the application tests."""

import pytest


@pytest.fixture(scope="module")
def ray_cluster():
    """A Ray instance on this machine with two worker CPUs, for the whole module."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="warning")
    yield ray
    ray.shutdown()
