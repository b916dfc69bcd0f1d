"""Reading Google's released files: the TF1 checkpoint (V1 or V2 format) and the PCA npz, checked."""
from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np

from vggish_tf2.errors import CheckpointError
from vggish_tf2.network import check_weights
from vggish_tf2.postprocess import check_pca_params


def checkpoint_files(path: str | os.PathLike) -> list[Path]:
    """The files that make up a checkpoint: the V1 single file, or a V2 prefix's .index + data shards."""
    path = Path(path)
    if path.is_file():
        return [path]  # V1: one file
    index = Path(f"{path}.index")
    if index.is_file():
        return [index, *sorted(path.parent.glob(f"{path.name}.data-*"))]
    if path.is_dir():
        raise CheckpointError(f"{path}: is a directory; give the checkpoint file (vggish_model.ckpt)")
    raise CheckpointError(f"{path}: no such checkpoint (neither a V1 file nor a V2 prefix with .index)")


def read_checkpoint(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Every VGGish variable of a TF1 checkpoint as float32 arrays; CheckpointError on anything else."""
    import tensorflow as tf

    checkpoint_files(path)  # clear error for a missing path before TF's own
    try:
        reader = tf.train.load_checkpoint(str(path))
        shapes = reader.get_variable_to_shape_map()
        # Optimizer slots and the global step are not part of the model; Google's file has none.
        names = [n for n in shapes if n.startswith("vggish/") and not n.endswith(("/Adam", "/Adam_1"))]
        weights = {name: reader.get_tensor(name) for name in names}
    except Exception as e:  # TF raises DataLossError, NotFoundError, OutOfRangeError... for bad files
        raise CheckpointError(f"{path}: cannot read the checkpoint ({type(e).__name__}: {str(e).splitlines()[0]})") from e
    check_weights(weights, source=str(path))
    return weights


def read_pca_params(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """pca_eigen_vectors [128, 128] and pca_means [128] as float64, never unpickling anything."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such PCA parameters file")
    if not zipfile.is_zipfile(path):
        # np.load treats anything that is not .npy/.npz as a pickle: say what the file really is not.
        raise CheckpointError(f"{path}: not a readable .npz file (not a zip archive)")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except ValueError as e:
        # allow_pickle=False refuses object arrays: a pickled file is never executed.
        raise CheckpointError(f"{path}: refusing to load pickled data ({e})") from e
    except Exception as e:  # BadZipFile, OSError, EOFError for truncated or foreign files
        raise CheckpointError(f"{path}: not a readable .npz file ({type(e).__name__}: {e})") from e
    return check_pca_params(arrays, source=str(path))
