#!/usr/bin/env bash
# The main job, end to end and offline: set up, write a checkpoint in Google's released format
# with SYNTHETIC (seeded) weights, convert it to a verified TF2 SavedModel, embed a few recordings,
# print the summary. With Google's real files, replace the convert step by
#   .venv/bin/python -m convert.checkpoint_to_savedmodel --download
set -euo pipefail
cd "$(dirname "$0")/.."
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-3}"
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[formats]'
.venv/bin/python -m convert.checkpoint_to_savedmodel --synthetic-weights 0 --output models/vggish-synthetic --overwrite
.venv/bin/python scripts/make_demo_audio.py demo-output/audio
.venv/bin/vggish-tf2 embed demo-output/audio --out demo-output/embeddings --model models/vggish-synthetic --overwrite
.venv/bin/python - <<'PY'
import numpy as np, pathlib
for path in sorted(pathlib.Path("demo-output/embeddings").rglob("*.npz")):
    with np.load(path, allow_pickle=False) as npz:
        e = npz["embedding"]
        print(f"{path}: {e.shape[0]} examples, embedding mean {e.mean():+.4f} std {e.std():.4f}"
              + (f", uint8 mean {npz['postprocessed'].mean():.1f}" if "postprocessed" in npz.files else ""))
PY
echo "NOTE: synthetic weights: these numbers show the pipeline works; they are not VGGish embeddings."
