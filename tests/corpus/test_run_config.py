"""corpus.run_config: run_config.json written, compared and kept; the model fingerprint. No model."""
import json

import pytest

from vggish_tf2.corpus.engine import ModelFacts
from vggish_tf2.corpus.run_config import (
    RUN_CONFIG_NAME,
    build_run_config,
    check_run_config,
    known_before_loading,
    model_fingerprint,
    output_metadata,
    recorded_jit_compile,
)
from vggish_tf2.errors import InvalidArgumentError, OutputError
from vggish_tf2.options import RunOptions

FACTS = ModelFacts(model_path="models/none", has_pca=True, synthetic_weights=True, frontend_precision="float64",
                   jit_compile=False, resampler="kaiser_best", hop_samples=15360, short_clips="drop",
                   device="/device:CPU:0", batch_size=24, files_verified=True)


def test_a_default_run_writes_the_keys_it_always_wrote(tmp_path):
    """layout and pool are compared, but written only when not the default: a default run's file
    has the same bytes as before they existed."""
    config = build_run_config(FACTS, RunOptions(), fingerprint="handle:x")
    check_run_config(tmp_path, config, overwrite=False)
    written = json.loads((tmp_path / RUN_CONFIG_NAME).read_text())
    assert sorted(written) == ["config_version", "format", "frontend_precision", "hop_samples", "hop_seconds",
                               "jit_compile", "model_hash", "postprocess", "resampler", "short_clips"]
    check_run_config(tmp_path, config, overwrite=False)  # the same settings: accepted
    sharded = build_run_config(FACTS, RunOptions(output_format="npz", pool="mean"), fingerprint="handle:x")
    with pytest.raises(InvalidArgumentError, match=r"pool 'none' then, 'mean' now.*--overwrite"):
        check_run_config(tmp_path, sharded, overwrite=False)
    with pytest.raises(InvalidArgumentError, match=r"format 'npz' then, 'parquet' now"):
        check_run_config(tmp_path, known_before_loading(RunOptions(output_format="parquet")), overwrite=False,
                         record=False)


def test_shards_and_pool_are_written_and_compared(tmp_path):
    options = RunOptions(output_format="parquet", layout="shards", pool="mean")
    check_run_config(tmp_path, build_run_config(FACTS, options, fingerprint="handle:x"), overwrite=False)
    written = json.loads((tmp_path / RUN_CONFIG_NAME).read_text())
    assert (written["layout"], written["pool"]) == ("shards", "mean")
    with pytest.raises(InvalidArgumentError, match=r"layout 'shards' then, 'files' now"):
        check_run_config(tmp_path, known_before_loading(RunOptions(output_format="parquet", pool="mean")),
                         overwrite=False, record=False)


def test_known_before_loading_leaves_out_what_the_model_decides():
    assert known_before_loading(RunOptions()) == {"format": "npz", "postprocess": True, "layout": "files",
                                                  "pool": "none"}
    assert known_before_loading(RunOptions(hop_seconds=0.5, jit_compile=True))["hop_samples"] == 8000


def test_recorded_jit_compile_and_unreadable_files(tmp_path):
    assert recorded_jit_compile(tmp_path) is None
    (tmp_path / RUN_CONFIG_NAME).write_text("{}")
    assert recorded_jit_compile(tmp_path) is False  # written before the key existed: never XLA
    (tmp_path / RUN_CONFIG_NAME).write_text('{"jit_compile": true}')
    assert recorded_jit_compile(tmp_path) is True
    (tmp_path / RUN_CONFIG_NAME).write_text("not json")
    with pytest.raises(OutputError, match="unreadable run configuration"):
        check_run_config(tmp_path, {"format": "npz"}, overwrite=False)


def test_fingerprint_of_a_handle_and_metadata():
    assert model_fingerprint("https://tfhub.dev/google/vggish/1") == "handle:https://tfhub.dev/google/vggish/1"
    metadata = output_metadata(FACTS, fingerprint="handle:x", has_postprocessed=True)
    assert metadata["model"] == {"path": "models/none", "hash": "handle:x"}
    assert metadata["hop_seconds"] == 0.96 and metadata["warning"].startswith("SYNTHETIC WEIGHTS")
    assert list(metadata)[:3] == ["model", "synthetic_weights", "has_postprocessed"]
