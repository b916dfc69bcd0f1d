"""Fixtures of the Ray tests in tests/corpus (test_ray_*.py): one local Ray instance per module.

Ray is imported and started only by a test that asks for ``ray_session``: the other tests here
(and the Ray tests that need no cluster: decoding rows, regrouping, placement) never start it.
"""
from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def ray_session():
    """A local Ray instance (2 CPUs) for the module, shut down after it; one already running
    (another module's, or the user's) is used as it is and left running."""
    ray = pytest.importorskip("ray")

    if ray.is_initialized():
        yield ray
        return
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    try:
        yield ray
    finally:
        ray.shutdown()
