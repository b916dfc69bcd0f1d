"""The device step: example windows [B, 15600] -> embeddings [B, 128], on one or several devices.

A step holds `batch_size` rows per device, a multiple of step.STEP_EXAMPLES; each device runs
its rows through vggish_tf2.step, whose network calls all have one shape, so an example's
embedding does not depend on the batch size, its row, its neighbours or the device count. With
several devices, each holds a copy of the weights and gets an equal share of the step; the
shares run concurrently inside one graph and are concatenated in order.

Out of memory never loses an example: the batch size is halved (down to one slice of
STEP_EXAMPLES rows) and the same rows are run again; a GPU that still fails at one slice is given
up for the CPU, with a warning.
"""
from __future__ import annotations

import dataclasses
import logging
import time
import warnings

import numpy as np
import tensorflow as tf

from vggish_tf2 import devices, frontend, params, step
from vggish_tf2.network import copy_to_device

logger = logging.getLogger(__name__)

MIN_BATCH_SIZE = devices.MIN_BATCH_SIZE  # one fixed-shape slice per device


def rows_per_device(batch_size: int) -> int:
    """`batch_size` rounded down to a multiple of STEP_EXAMPLES (at least one slice): a step never
    pads rows it could have filled."""
    return max(1, int(batch_size) // step.STEP_EXAMPLES) * step.STEP_EXAMPLES


@dataclasses.dataclass
class RunnerStats:
    """Counters of the device stage (read from Python; logged at INFO by the Embedder)."""

    examples: int = 0
    batches: int = 0
    device_seconds: float = 0.0
    oom_retries: int = 0
    cpu_fallbacks: int = 0


class DeviceRunner:
    """Runs the device step on `device_names` with `batch_size` rows per device."""

    def __init__(
        self,
        network_module,
        *,
        device_names: tuple[str, ...],
        batch_size: int,
        frontend_precision: str = "float64",
        compute_dtype: str = "float32",
        jit_compile: bool = False,
        frontend_device: str | None = None,
        prebuilt_step=None,
    ):
        """``prebuilt_step``: a function computing this very step, already traced (the loaded
        export's ``embed_windows``, restored with the SavedModel: the same vggish_tf2.step graph,
        so the same numbers bit for bit), used on one device instead of tracing it again (~1 s of
        start-up). Only valid for the export's own front-end precision, float32 compute, no XLA
        and the front end on the same device; the caller checks that."""
        self._source = network_module
        self._prebuilt_step = prebuilt_step
        self._precision = frontend.check_precision(frontend_precision)
        self._compute_dtype = compute_dtype
        self._jit_compile = bool(jit_compile)
        self._frontend_device = frontend_device
        self.batch_size = rows_per_device(batch_size)
        self.stats = RunnerStats()
        self._build(tuple(device_names))

    @property
    def device_names(self) -> tuple[str, ...]:
        return self._device_names

    @property
    def jit_compile(self) -> bool:
        return self._jit_compile

    @property
    def rows_per_step(self) -> int:
        return self.batch_size * len(self._device_names)

    def _build(self, device_names: tuple[str, ...]) -> None:
        self._device_names = device_names
        if self._prebuilt_step is not None and len(device_names) == 1:
            prebuilt, (name,) = self._prebuilt_step, device_names

            def restored_step(windows):  # [b, 15600] -> [b, 128], already traced
                with tf.device(name):
                    return prebuilt(windows)

            self.replica_functions = (prebuilt,)
            self._step = restored_step
            return
        if len(device_names) == 1:
            # One device: the loaded variables are used as they are (TF places them there).
            replicas = [self._source]
        else:
            replicas = [copy_to_device(self._source, name) for name in device_names]

        def replica_step(weights):
            def replica(windows):  # [b,15600] -> [b,128], b a multiple of STEP_EXAMPLES
                return step.embed_windows(weights, windows, precision=self._precision, compute_dtype=self._compute_dtype,
                                          frontend_device=self._frontend_device)

            return tf.function(replica, jit_compile=self._jit_compile)

        replica_fns = [replica_step(w) for w in replicas]
        self.replica_functions = tuple(replica_fns)  # one tf.function per device (XLA-compiled with jit_compile)

        # One trace for every step size (the last, smaller step of a run included): the slices
        # inside have one static shape whatever the number of rows, as in the export's signatures.
        @tf.function(input_signature=[tf.TensorSpec([None, params.EXAMPLE_WINDOW_SAMPLES], tf.as_dtype(self.window_dtype))])
        def all_replicas(windows):  # [R*b, 15600] -> [R*b, 128]
            parts = tf.split(windows, len(device_names))
            outputs = []
            for name, fn, part in zip(device_names, replica_fns, parts):
                with tf.device(name):
                    outputs.append(fn(part))
            return tf.concat(outputs, 0)

        self._step = all_replicas

    @property
    def window_dtype(self) -> type:
        """The dtype windows are computed in: float64 for the float64 front end (the reference's
        precision from decoding on), else float32."""
        return np.float64 if self._precision == "float64" else np.float32

    def run(self, rows: np.ndarray) -> np.ndarray:
        """Embeddings float32 [n, 128] of windows [n, 15600], any n, in order."""
        n = len(rows)
        out = np.empty((n, params.EMBEDDING_SIZE), np.float32)
        start = 0
        while start < n:
            take = min(self.rows_per_step, n - start)
            try:
                out[start : start + take] = self._run_step(rows[start : start + take])
            except Exception as e:  # noqa: BLE001 - only OOM is handled; anything else re-raised
                if not devices.is_gpu_oom(e):
                    raise
                self._recover_from_oom(e)
                continue  # the same rows again, in smaller steps or on the CPU
            start += take
        return out

    def _run_step(self, rows: np.ndarray) -> np.ndarray:
        take = len(rows)
        batch = np.zeros((self._padded_rows(take), params.EXAMPLE_WINDOW_SAMPLES), self.window_dtype)
        batch[:take] = rows  # padded rows are computed and discarded
        started = time.perf_counter()
        result = self._step(tf.constant(batch)).numpy()[:take]
        self.stats.device_seconds += time.perf_counter() - started
        self.stats.examples += take
        self.stats.batches += 1
        return result

    def _padded_rows(self, take: int) -> int:
        """Rows to compute for `take` real rows: whole slices per device, so a 3-example call
        computes one slice per device, not a full step."""
        replicas = len(self._device_names)
        per_device = step.padded_rows(-(-take // replicas))
        return min(per_device, self.batch_size) * replicas

    def _recover_from_oom(self, error: Exception) -> None:
        self.stats.oom_retries += 1
        if self.batch_size > MIN_BATCH_SIZE:
            self.batch_size = rows_per_device(self.batch_size // 2)
            logger.warning("out of memory on %s; retrying with batch size %d", ", ".join(self._device_names), self.batch_size)
            return
        if self._device_names == (devices.CPU_DEVICE_NAME,):
            raise error  # nothing smaller or safer to fall back to
        warnings.warn(
            f"{', '.join(self._device_names)} still out of memory at batch size {self.batch_size}; "
            "falling back to the CPU", RuntimeWarning, stacklevel=3,
        )
        self.stats.cpu_fallbacks += 1
        self._prebuilt_step = None  # traced for the GPU's placement: the CPU gets its own trace
        self.batch_size = rows_per_device(devices.CPU_BATCH_SIZE)
        self._build((devices.CPU_DEVICE_NAME,))
