"""vggish_tf2.corpus.ray_regroup: embedded rows in any order, some repeated -> whole files, each once (no Ray)."""
from __future__ import annotations

import numpy as np
import pytest

from vggish_tf2 import params
from vggish_tf2.corpus.ray_regroup import Regrouper
from vggish_tf2.errors import InternalError, InvalidAudioError


def _batch(task, examples, *, end_at=None, samples=0, error_type="", error=""):
    n = len(examples)
    end = np.zeros(n, bool)
    total = np.zeros(n, np.int64)
    if end_at is not None:
        end[end_at] = True
        total[end_at] = samples
    errors = np.full(n, "", dtype=object)
    types = np.full(n, "", dtype=object)
    if error_type:
        errors[-1], types[-1] = error, error_type
    embedding = np.stack([np.full(params.EMBEDDING_SIZE, 1000 * task + max(e, 0), np.float32) for e in examples])
    return {"task": np.full(n, task, np.int64), "example": np.asarray(examples, np.int64), "end": end,
            "samples": total, "error": errors, "error_type": types, "embedding": embedding}


def _concat(*batches):
    return {key: np.concatenate([b[key] for b in batches]) for key in batches[0]}


def test_regrouper_reorders_files_spanning_batches_and_drops_repeats():
    regrouper = Regrouper(3)
    # file 0: examples 0..4 arriving out of order over three batches, one batch repeated (a retry)
    assert regrouper.add(_batch(0, [3, 4], end_at=1, samples=80000)) == []
    first = _concat(_batch(0, [0, 1]), _batch(1, [-1], end_at=0, samples=4000))  # file 1: too short
    done = regrouper.add(first)
    assert [(t, len(e), s, err) for t, e, s, err in done] == [(1, 0, 4000, None)]
    assert regrouper.add(_batch(0, [0, 1])) == []  # the retried batch's copy
    done = regrouper.add(_batch(0, [2]))
    assert len(done) == 1
    task, embedding, samples, error = done[0]
    assert (task, samples, error) == (0, 80000, None)
    assert embedding[:, 0].tolist() == [0, 1, 2, 3, 4]
    assert regrouper.add(_batch(0, [4], end_at=0, samples=80000)) == []  # a late repeat of a done file
    assert regrouper.outstanding == 1


def test_regrouper_fails_a_file_on_its_error_and_ignores_its_rows():
    regrouper = Regrouper(1)
    assert regrouper.add(_batch(0, [0, 1])) == []  # rows decoded before the error
    done = regrouper.add(_batch(0, [-1], end_at=0, error_type="AudioDecodeError", error="x.wav: truncated"))
    [(task, embedding, _, error)] = done
    assert task == 0 and embedding is None
    assert type(error).__name__ == "AudioDecodeError" and str(error) == "x.wav: truncated"
    assert regrouper.add(_batch(0, [2])) == []
    assert regrouper.outstanding == 0


def test_regrouper_wraps_a_foreign_error_type_as_invalid_audio():
    [(_, _, _, error)] = Regrouper(1).add(_batch(0, [-1], end_at=0, error_type="RuntimeError", error="boom"))
    assert type(error) is InvalidAudioError and str(error) == "boom"


def test_regrouper_refuses_rows_it_cannot_place():
    with pytest.raises(InternalError, match="task 5"):
        Regrouper(2).add(_batch(5, [0], end_at=0, samples=16000))
    regrouper = Regrouper(1)
    regrouper.add(_batch(0, [0, 7]))
    with pytest.raises(InternalError, match="expected"):
        regrouper.add(_batch(0, [1], end_at=0, samples=32000))  # 2 expected, examples 0 and 7 came
