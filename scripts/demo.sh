#!/usr/bin/env bash
# The main job, end to end and offline: set up .venv, write a checkpoint in Google's released
# format with SYNTHETIC (seeded) weights, convert it into a verified TF2 SavedModel at
# models/vggish (where Embedder(), `vggish-tf2 embed` and the README's examples look), embed a few
# generated recordings, print a summary.
#
# models/vggish holding anything but a synthetic export (say, one converted from Google's real
# files) is never touched: the demo then converts into models/vggish-synthetic instead.
# For real VGGish embeddings (network), replace the synthetic export with Google's:
#   .venv/bin/python -m convert.checkpoint_to_savedmodel --download --overwrite
set -euo pipefail
cd "$(dirname "$0")/.."
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-3}"
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[formats]'

# "absent", "synthetic" (made from seeded weights: safe to replace) or "other" (keep it).
# Reads the export's metadata as JSON: no TensorFlow import for a directory check.
export_kind() {
    .venv/bin/python - "$1" <<'PY'
import json, pathlib, sys
export = pathlib.Path(sys.argv[1])
if not export.exists() and not export.is_symlink():
    print("absent")
    sys.exit()
try:
    metadata = json.loads((export / "assets" / "vggish_tf2.json").read_text())
    print("synthetic" if metadata.get("synthetic_weights") is True else "other")
except (OSError, ValueError, AttributeError):
    print("other")
PY
}

model=""
for candidate in models/vggish models/vggish-synthetic; do
    kind=$(export_kind "$candidate")
    if [ "$kind" != other ]; then
        model=$candidate
        break
    fi
    echo "keeping $candidate: not a synthetic export"
done
if [ -z "$model" ]; then
    echo "error: models/vggish and models/vggish-synthetic both hold something other than a synthetic export; move one away" >&2
    exit 1
fi

.venv/bin/python -m convert.checkpoint_to_savedmodel --synthetic-weights 0 --output "$model" --overwrite
.venv/bin/python scripts/make_demo_audio.py demo-output/audio
.venv/bin/vggish-tf2 embed demo-output/audio --out demo-output/embeddings --model "$model" --overwrite
.venv/bin/python - <<'PY'
import numpy as np, pathlib
for path in sorted(pathlib.Path("demo-output/embeddings").rglob("*.npz")):
    with np.load(path, allow_pickle=False) as npz:
        e = npz["embedding"]
        print(f"{path}: {e.shape[0]} examples, embedding mean {e.mean():+.4f} std {e.std():.4f}"
              + (f", uint8 mean {npz['postprocessed'].mean():.1f}" if "postprocessed" in npz.files else ""))
PY
cat > demo-output/SYNTHETIC_WEIGHTS.txt <<EOF
SYNTHETIC WEIGHTS: these are not VGGish embeddings.
Everything here was made by scripts/demo.sh with the seeded test weights in $model: the numbers
show the pipeline works, nothing more. For real embeddings, use an export converted from Google's
checkpoint (README.md: "Convert Google's checkpoint").
EOF
echo
echo "SYNTHETIC WEIGHTS: these are not VGGish embeddings; they show the pipeline works."
if [ "$model" = models/vggish ]; then
    echo "The synthetic export is at models/vggish: Embedder(), vggish-tf2 embed and the README's examples use it."
    echo "For real embeddings (network): .venv/bin/python -m convert.checkpoint_to_savedmodel --download --overwrite"
else
    echo "models/vggish was kept; the demo used $model (pass --model $model to use it)."
fi
