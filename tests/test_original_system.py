"""The original system's own document, run as tests: its users' code must keep working with only
the import path changed.

ORIGINAL_SYSTEM.md (in ../shared/reference/ beside the repository, in CI too) is the document of
the TF1 system vggish-tf2 replaces. Every Python block in it is read at collection time and put in
one of four kinds, each with its test below; a block of no known kind fails, so a changed document
cannot silently go untested:

* library code (imports from ``backend.processing.audio_pipeline``): the import lines are
  rewritten to ``vggish_tf2.legacy`` / ``vggish_tf2.devices``, nothing else, and the block runs:
  on this machine's real devices and on faked CUDA and Metal ones (a faked ``tf.config`` as in
  tests/devices/fakes.py), with the session's synthetic export as the default model;
* configuration (``VGGISH_* = value``): the same names are environment variables here, and the
  values the document shows must parse to the same settings;
* TensorFlow-only code: runs unchanged;
* the device selection pseudo-code: agrees with ``select_device("auto")`` on every faked host.
"""
from __future__ import annotations

import ast
import collections
import dataclasses
import logging
import re
import sys
import types
import warnings
from pathlib import Path

import numpy as np
import pytest

from vggish_tf2 import config, devices, legacy
from vggish_tf2.devices import configuration, inventory
from vggish_tf2.embedder import Embedder

REPO_ROOT = Path(__file__).resolve().parent.parent
DOCUMENT = REPO_ROOT.parent / "shared" / "reference" / "ORIGINAL_SYSTEM.md"

OLD_PACKAGE = "backend.processing.audio_pipeline"
# The old modules and where their names live now; only these lines of a block are changed.
IMPORT_MAP = {
    f"{OLD_PACKAGE}.vggish_model": "vggish_tf2.legacy",
    f"{OLD_PACKAGE}.device_config": "vggish_tf2.devices",
    f"{OLD_PACKAGE}.pipeline": "vggish_tf2.legacy",
}

GIB = 1 << 30


@dataclasses.dataclass(frozen=True)
class Block:
    number: int  # 1-based among the document's fenced blocks
    heading: str  # the nearest heading above it
    language: str
    code: str

    @property
    def id(self) -> str:
        slug = re.sub(r"[^a-z0-9]+", "-", self.heading.lower()).strip("-")
        return f"block{self.number}-{slug}"


def read_blocks() -> list[Block]:
    if not DOCUMENT.is_file():
        return []
    text = DOCUMENT.read_text(encoding="utf-8")
    blocks = []
    fence = re.compile(r"^([ \t]*)```(\w*)[ \t]*\n(.*?)^\1```[ \t]*$", re.MULTILINE | re.DOTALL)
    for number, match in enumerate(fence.finditer(text), start=1):
        before = text[: match.start()]
        headings = re.findall(r"^#+\s+(.+)$", before, re.MULTILINE)
        indent = match.group(1)
        code = "".join(line[len(indent):] if line.startswith(indent) else line
                       for line in match.group(3).splitlines(keepends=True))
        blocks.append(Block(number, headings[-1] if headings else "", match.group(2), code))
    return blocks


BLOCKS = read_blocks()
MISSING = pytest.mark.skipif(
    not BLOCKS, reason=f"{DOCUMENT} not found: the original system's document sits in ../shared/reference/ "
    "beside the repository (as in CI)"
)


def kind(block: Block) -> str:
    if block.language != "python":
        return "shell" if block.language == "bash" else "other"
    if OLD_PACKAGE in block.code:
        return "library"
    tree = ast.parse(block.code)
    if all(isinstance(node, ast.Assign) and all(isinstance(t, ast.Name) and t.id.startswith("VGGISH_")
                                                 for t in node.targets) for node in tree.body):
        return "config"
    imports = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    if imports == {"tensorflow"} and not any(isinstance(n, ast.ImportFrom) for n in ast.walk(tree)):
        return "tensorflow"
    if [type(n) for n in tree.body] == [ast.FunctionDef] and tree.body[0].name == "select_device":
        return "selection-pseudocode"
    return "unknown"


def blocks_of(kind_name: str) -> list:
    chosen = [pytest.param(b, id=b.id) for b in BLOCKS if kind(b) == kind_name]
    return chosen or [pytest.param(None, marks=MISSING, id="document-missing")]


def rewrite_imports(code: str) -> str:
    """The block with only its import lines pointed at vggish_tf2."""
    out = []
    for line in code.splitlines(keepends=True):
        match = re.match(r"(\s*from\s+)([\w.]+)(\s+import\b.*)", line, re.DOTALL)
        if match and match.group(2).startswith(OLD_PACKAGE):
            module = match.group(2)
            if module not in IMPORT_MAP:
                pytest.fail(f"the document imports {module}, which IMPORT_MAP does not map")
            line = match.group(1) + IMPORT_MAP[module] + match.group(3)
        out.append(line)
    return "".join(out)


# --- Faked devices (as in tests/devices/fakes.py: what TF 2.18-2.21 reports) -----------------

PhysicalDevice = collections.namedtuple("PhysicalDevice", ["name", "device_type"])


@dataclasses.dataclass(frozen=True)
class LogicalDeviceConfiguration:
    memory_limit: int | None = None


class FakeTFConfig:
    """The part of tf.config that device detection and configuration use, for one fake host."""

    def __init__(self, gpu_names: list[str]):
        self.cpu = PhysicalDevice("/physical_device:CPU:0", "CPU")
        self.gpus = [PhysicalDevice(f"/physical_device:GPU:{i}", "GPU") for i in range(len(gpu_names))]
        self.details = dict(zip(self.gpus, gpu_names))
        self.visible = list(self.gpus)
        self.LogicalDeviceConfiguration = LogicalDeviceConfiguration
        self.experimental = types.SimpleNamespace(
            get_device_details=lambda d: {"device_name": self.details[d]},
            set_memory_growth=lambda d, enable: None,
        )

    def list_physical_devices(self, device_type):
        return [self.cpu] if device_type == "CPU" else list(self.gpus)

    def get_visible_devices(self, device_type):
        return [d for d in self.visible if d.device_type == device_type]

    def set_visible_devices(self, devices_, device_type):
        self.visible = list(devices_)

    def set_logical_device_configuration(self, device, configs):
        pass

    def get_logical_device_configuration(self, device):
        return None

    def list_logical_devices(self, device_type):
        raise AssertionError("list_logical_devices would initialize the TF runtime")


HOSTS = ("this machine", "CUDA, 2 GPUs", "Metal")


@pytest.fixture(params=HOSTS)
def host(request, monkeypatch):
    """This machine's real devices, or a faked Linux host with two RTX 3060s, or a faked Apple M1."""
    monkeypatch.delenv("TF_FORCE_GPU_ALLOW_GROWTH", raising=False)
    monkeypatch.setattr(configuration, "_force_growth_env_set_by_us", False)
    if request.param == "CUDA, 2 GPUs":
        fake = FakeTFConfig(["NVIDIA GeForce RTX 3060"] * 2)
        monkeypatch.setattr(inventory, "_host_platform", lambda: ("Linux", "x86_64"))
        monkeypatch.setattr(inventory, "_run_nvidia_smi", lambda args: "NVIDIA GeForce RTX 3060, 12288, 11900\n" * 2)
        monkeypatch.setitem(sys.modules, "pynvml", None)
    elif request.param == "Metal":
        fake = FakeTFConfig(["METAL"])
        monkeypatch.setattr(inventory, "_host_platform", lambda: ("Darwin", "arm64"))
    else:
        return request.param
    monkeypatch.setattr(inventory, "_tf_config", lambda: fake)
    monkeypatch.setattr(inventory, "_runtime_initialized", lambda: False)
    monkeypatch.setattr(inventory, "_host_memory_bytes", lambda: 16 * GIB)
    return request.param


def real_gpu_kind() -> str | None:
    found = {d.type for d in devices.detect_available_devices()} - {devices.DeviceType.CPU}
    return found.pop().value if found else None


@pytest.fixture
def default_model(monkeypatch, exported_model, loaded_export):
    """The synthetic export as the default model (VGGISH_MODEL_DIR), loaded once per session."""
    from vggish_tf2 import model as model_module

    real_load = model_module.load_export

    def load_export(path, **kwargs):
        # Loading the same export again per block costs seconds on a small box: reuse the
        # session's, for that directory only.
        if Path(path).resolve() == Path(exported_model).resolve():
            return loaded_export
        return real_load(path, **kwargs)

    monkeypatch.setattr(model_module, "load_export", load_export)
    monkeypatch.setenv("VGGISH_MODEL_DIR", str(exported_model))
    monkeypatch.setattr(legacy, "_default_model", None)
    config.get_settings.cache_clear()
    yield exported_model
    config.get_settings.cache_clear()


def run_block(block: Block, namespace: dict | None = None) -> dict:
    code = rewrite_imports(block.code)
    changed = [(a, b) for a, b in zip(block.code.splitlines(), code.splitlines()) if a != b]
    assert all(a.lstrip().startswith("from ") for a, _ in changed), changed  # only import lines
    namespace = {"__name__": f"original_system_{block.id}"} if namespace is None else namespace
    exec(compile(code, f"ORIGINAL_SYSTEM.md:{block.id}", "exec"), namespace)  # noqa: S102
    return namespace


# --- The document is fully covered ----------------------------------------------------------------


@MISSING
def test_every_python_block_is_of_a_known_kind():
    unknown = [b.id for b in BLOCKS if kind(b) == "unknown"]
    assert not unknown, f"blocks this test does not know how to run: {unknown}"
    assert {kind(b) for b in BLOCKS if b.language == "python"} == {
        "library", "config", "tensorflow", "selection-pseudocode"
    }


@MISSING
def test_every_old_module_the_document_imports_is_mapped():
    imported = set(re.findall(rf"from\s+({re.escape(OLD_PACKAGE)}[\w.]*)\s+import", DOCUMENT.read_text()))
    assert imported == set(IMPORT_MAP)


# --- Library code ---------------------------------------------------------------------------------


def library_block(name_in_code: str) -> list:
    chosen = [pytest.param(b, id=b.id) for b in BLOCKS if kind(b) == "library" and name_in_code in b.code]
    return chosen or [pytest.param(None, marks=MISSING, id="document-missing")]


@pytest.mark.parametrize("block", library_block("load_vggish_model("))
def test_load_vggish_model_block_runs(block, host, default_model):
    expected_fallbacks = {  # preferences the block asks for that each host lacks
        "this machine": {"gpu", "metal"} - {real_gpu_kind()},
        "CUDA, 2 GPUs": {"metal"},
        "Metal": {"gpu"},
    }[host]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        namespace = run_block(block)
    messages = [str(w.message) for w in caught]
    for preference in expected_fallbacks:
        assert any(f'device preference "{preference}" but TensorFlow lists no' in m for m in messages), messages
    assert len(messages) == len(expected_fallbacks), messages
    model = namespace["model"]
    assert isinstance(model, Embedder)
    assert legacy._default_model is model  # the last load is the default, as before
    if host == "CUDA, 2 GPUs":
        # The block's last call: device_preference="gpu", gpu_memory_fraction=0.5, growth off.
        plan = model.plan
        assert plan.device_type is devices.DeviceType.GPU and plan.num_replicas == 2
        assert plan.memory_limit_bytes == 6144 << 20 and plan.allow_growth is False


@pytest.mark.parametrize("block", library_block("detect_available_devices"))
def test_device_loop_block_runs(block, host, capsys, caplog):
    expected = {
        "this machine": [f"{d.type.value}: {d.available}" for d in devices.detect_available_devices()],
        "CUDA, 2 GPUs": ["cpu: True", "gpu: True", "gpu: True"],
        "Metal": ["cpu: True", "metal: True"],
    }[host]
    with caplog.at_level(logging.INFO, logger="vggish_tf2.devices"):
        run_block(block)
    assert capsys.readouterr().out.splitlines() == expected
    assert 'device preference "auto" selects' in caplog.text  # log_device_info()


@pytest.mark.parametrize("block", library_block("embed_wav_file("))
def test_benchmark_block_runs(block, default_model, tmp_path, monkeypatch, capsys):
    import soundfile as sf

    # The block names "path/to/audio.wav"; only imports may change, so that file is made here.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "path" / "to").mkdir(parents=True)
    rng = np.random.default_rng(0)
    sf.write(tmp_path / "path/to/audio.wav", rng.uniform(-0.5, 0.5, (44100 * 3, 2)), 44100, subtype="PCM_16")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        namespace = run_block(block)
    embeddings = namespace["embeddings"]
    assert embeddings.shape == (3, 128) and embeddings.dtype == np.float32  # 3 s -> 3 examples
    out = capsys.readouterr().out
    assert re.search(r"^Generated 3 embeddings in \d+\.\d\ds$", out, re.MULTILINE), out
    assert re.search(r"^Rate: \d+\.\d embeddings/sec$", out, re.MULTILINE), out


# --- Configuration --------------------------------------------------------------------------------


@pytest.mark.parametrize("block", blocks_of("config"))
def test_config_assignments_are_environment_variables_here(block):
    values = {k: v for k, v in run_block(block, {}).items() if k.startswith("VGGISH_")}
    environ = {name: str(value) for name, value in values.items()}  # True -> "True", 0.8 -> "0.8"
    settings = config.settings_from_env(environ)
    fields = {
        config.ENV_DEVICE_PREFERENCE: "device_preference",
        config.ENV_GPU_MEMORY_FRACTION: "gpu_memory_fraction",
        config.ENV_GPU_ALLOW_GROWTH: "gpu_allow_growth",
    }
    assert set(values) <= set(fields), f"names with no environment variable here: {set(values) - set(fields)}"
    for name, value in values.items():
        assert getattr(settings, fields[name]) == value


# --- TensorFlow only, and the selection pseudo-code -----------------------------------------------


@pytest.mark.parametrize("block", blocks_of("tensorflow"))
def test_tensorflow_blocks_run_unchanged(block, capsys):
    run_block(block)
    assert capsys.readouterr().out.strip()


@pytest.mark.parametrize("block", blocks_of("selection-pseudocode"))
def test_documented_selection_algorithm_matches_auto(block, host):
    infos = devices.detect_available_devices()
    kinds = {d.type for d in infos if d.available}
    namespace = run_block(block, {
        "metal_available": devices.DeviceType.METAL in kinds,
        "on_apple_silicon": inventory._is_macos_arm64(),
        "cuda_gpu_available": devices.DeviceType.GPU in kinds,
    })
    assert namespace["select_device"]() == devices.select_device("auto").type.value
