"""vggish_tf2.corpus.ray_stages without a cluster: where the embedder actors go (placement).

The stages on a running Ray instance are tested through the engine (test_ray_engine.py) and the
Dataset API (test_ray_api.py).
"""
from __future__ import annotations

import pytest

from vggish_tf2.corpus.ray_stages import Placement, plan_placement
from vggish_tf2.errors import DeviceError
from vggish_tf2.options import RunOptions


@pytest.mark.parametrize("fields, gpus, expected", [
    ({}, 0, Placement(actors=1, gpus_per_actor=0.0, memory_fraction=None)),
    ({"ray_actors": 2}, 0, Placement(actors=2, gpus_per_actor=0.0, memory_fraction=None)),
    ({}, 4, Placement(actors=4, gpus_per_actor=1.0, memory_fraction=None)),
    ({"ray_actors": 2}, 4, Placement(actors=2, gpus_per_actor=1.0, memory_fraction=None)),
    # two actors per GPU: half a GPU each, and half the default memory share (0.8) each
    ({"ray_actors": 4}, 2, Placement(actors=4, gpus_per_actor=0.5, memory_fraction=0.4)),
    ({"ray_actors": 4, "memory_fraction": 0.3}, 2, Placement(actors=4, gpus_per_actor=0.5, memory_fraction=0.3)),
    ({"device": "cpu"}, 4, Placement(actors=1, gpus_per_actor=0.0, memory_fraction=None)),
])
def test_placement(fields, gpus, expected):
    assert plan_placement(RunOptions(engine="ray", **fields), gpus) == expected


def test_placement_gpu_asked_on_a_cluster_without_one():
    with pytest.raises(DeviceError, match="device='gpu'.*no GPU"):
        plan_placement(RunOptions(engine="ray", device="gpu"), 0)
