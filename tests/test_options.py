"""RunOptions: one frozen object, validated once where it is built; errors name the field; each
field carries its command-line flag. No model, no TensorFlow."""
import dataclasses

import pytest

from vggish_tf2 import audio, config, frontend, outputs, windows
from vggish_tf2.errors import InvalidArgumentError
from vggish_tf2.options import (
    DEVICES,
    EMBEDDER_FIELDS,
    FLAGS,
    FORMATS,
    PRECISIONS,
    RESAMPLERS,
    SHORT_CLIPS,
    RunOptions,
)


def test_defaults_are_todays_run():
    options = RunOptions()
    assert (options.output_format, options.layout, options.pool, options.engine) == ("npz", "files", "none", "local")
    assert options.batch_size == "auto" and options.postprocess and options.verify_model_hashes
    assert options.shard_rows == 100_000 and not options.overwrite
    assert options.embedder_options_given() == [] and options.hop_samples is None


def test_frozen_and_replace_validates_again():
    options = RunOptions(output_format="parquet")
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.layout = "shards"
    assert options.replace(layout="shards").layout == "shards"
    with pytest.raises(InvalidArgumentError, match="layout='shards' writes parquet or tfrecord shards, not npz"):
        options.replace(output_format="npz", layout="shards")


def test_choice_lists_are_their_owners():
    assert FORMATS is outputs.OUTPUT_FORMATS and RESAMPLERS is audio.RESAMPLERS
    assert PRECISIONS is frontend.FRONTEND_PRECISIONS and SHORT_CLIPS is windows.SHORT_CLIP_POLICIES
    assert DEVICES is config.DEVICE_PREFERENCES


@pytest.mark.parametrize("fields, match", [
    ({"output_format": "csv"}, r"output_format='csv' must be one of npz, tfrecord, parquet"),
    ({"layout": "tree"}, r"layout='tree' must be one of files, shards"),
    ({"pool": "max"}, r"pool='max' must be one of none, mean"),
    ({"engine": "spark"}, r"engine='spark' must be one of local, ray"),
    ({"output_format": "tfrecord", "postprocess": False}, r"format 'tfrecord' stores AudioSet's post-processed uint8"),
    ({"output_format": "tfrecord", "pool": "mean"}, r"pool='mean' gives one vector per file.*use npz or parquet"),
    ({"layout": "shards"}, r"layout='shards' writes parquet or tfrecord shards, not npz"),
    ({"shard_rows": 0}, r"shard_rows=0 must be a positive integer"),
    ({"shard_rows": True}, r"shard_rows=True must be a positive integer"),
    ({"batch_size": 0}, r"batch_size=0 must be a positive integer or 'auto'"),
    ({"batch_size": "48"}, r"batch_size='48' must be a positive integer or 'auto'"),
    ({"workers": 0}, r"workers=0 must be a positive integer"),
    ({"memory_fraction": 1.5}, r"memory_fraction=1.5 must be in \(0, 1\]"),
    ({"device": "tpu"}, r"device_preference='tpu' is not one of auto, cpu, gpu, metal"),
    ({"hop_seconds": 0.015}, r"hop_seconds=0.015 must be a multiple of 0.01"),
    ({"hop_seconds": "0.96"}, r"hop_seconds='0.96' must be a number of seconds"),
    ({"resampler": "linear"}, r"resampler='linear' must be one of soxr_hq, kaiser_best"),
    ({"frontend_precision": "float16"}, r"frontend_precision='float16' must be one of float64, float32"),
    ({"short_clips": "trim"}, r"short_clips='trim' must be one of drop, pad, repeat"),
    ({"jit_compile": "auto"}, r"jit_compile='auto' must be True, False or None"),
    ({"postprocess": "yes"}, r"postprocess='yes' must be True or False"),
    ({"verify_model_hashes": 1}, r"verify_model_hashes=1 must be True or False"),
    ({"overwrite": None}, r"overwrite=None must be True or False"),
    ({"model": 3}, r"model=3 must be a model directory path or a TF Hub handle"),
    ({"engine": "ray", "ray_actors": 0}, r"ray_actors=0 must be a positive integer"),
    ({"engine": "ray", "ray_address": ""}, r"ray_address='' must be a non-empty string"),
    ({"ray_actors": 2}, r"ray_actors=2 needs engine='ray' \(engine='local'\)"),
    ({"ray_address": "auto"}, r"ray_address='auto' needs engine='ray'"),
])
def test_invalid_values_raise_naming_the_field(fields, match):
    with pytest.raises(InvalidArgumentError, match=match):
        RunOptions(**fields)


@pytest.mark.parametrize("fields", [
    {"output_format": "parquet", "layout": "shards", "shard_rows": 10},
    {"output_format": "tfrecord", "layout": "shards"},
    {"output_format": "npz", "pool": "mean"},
    {"output_format": "parquet", "pool": "mean", "postprocess": False},
    {"engine": "ray", "ray_address": "ray://head:10001", "ray_actors": 4},
    {"batch_size": 48, "jit_compile": False, "hop_seconds": 0.5, "workers": 2, "memory_fraction": 1},
])
def test_valid_combinations(fields):
    options = RunOptions(**fields)
    for name, value in fields.items():
        assert getattr(options, name) == value


def test_device_is_normalised_and_hop_given_in_samples():
    options = RunOptions(device="GPU", hop_seconds=0.5)
    assert options.device == "gpu" and options.hop_samples == 8000
    assert options.embedder_options_given() == ["device", "hop_seconds"]


def test_every_field_has_one_flag():
    names = [f.name for f in dataclasses.fields(RunOptions)]
    assert list(FLAGS) == names and len(set(FLAGS.values())) == len(names)
    assert FLAGS["output_format"] == "--format" and FLAGS["verify_model_hashes"] == "--no-verify-model"
    assert all(FLAGS[name].startswith("--") for name in names)
    assert EMBEDDER_FIELDS[0] == "model" and EMBEDDER_FIELDS[-1] == "verify_model_hashes"
    assert "output_format" not in EMBEDDER_FIELDS and "engine" not in EMBEDDER_FIELDS
