"""Prebuilding TensorRT engines at export time: the one place the build drives TensorRT (kept small on purpose).

By default TensorRT targets build their engine on the device at first start, into the engine-cache volume (the
runtime logs the progress). When the build machine has TensorRT and the same GPU as the fleet, `export
--prebuild-engine` builds it here instead and ships it as a layer at the target's engine-cache path, in the
runtime's own layout (`mlpk.runtimes.providers.TensorrtSettings`: CACHE/<model sha256[:16]>/engines, shared timing
cache), so the first start skips the build. An engine is tied to the GPU model and the TensorRT version that built
it; onnxruntime hashes both into the engine file names, so on another GPU the runtime builds a fresh engine instead
of loading a wrong one. A Docker named volume mounted there starts with the image's engines (Docker copies image
content into an empty named volume on first use).
"""

from __future__ import annotations

import hashlib
import platform as host
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from mlpk.packager.emulation import emulated
from mlpk.packager.errors import ToolchainError
from mlpk.packager.oci import Layer, layer_from_dir
from mlpk.packager.targets import Target
from mlpk.runtimes import providers


def settings_for(model: Path, target: Target, card: dict[str, Any], cache_root: Path) -> Any:
    """The runtime's TensorRT settings for `model` under `target`, with the caches rooted at `cache_root`."""
    _require_tensorrt_target(target)
    assert target.tensorrt is not None
    sha = hashlib.sha256(model.read_bytes()).hexdigest()
    precision = providers.precision_from_card(card)
    if precision == "fp32" and target.tensorrt.fp16:
        precision = "fp16"
    return providers.TensorrtSettings(cache_root=cache_root, precision=precision, model_key=sha[:16],
                                      max_workspace_bytes=target.tensorrt.workspace_mb * 1024 * 1024)


def _require_tensorrt_target(target: Target) -> None:
    if target.tensorrt is None:
        raise ToolchainError(f"target {target.name} does not use TensorRT (providers: {', '.join(target.providers)})",
                             hint="--prebuild-engine is for the jetson and cuda targets")


def check_available(target: Target, platform: str) -> None:
    """Raise ToolchainError unless `target` uses TensorRT and this machine can build engines for `platform`."""
    import onnxruntime as ort

    _require_tensorrt_target(target)
    if emulated(platform):
        raise ToolchainError(f"--prebuild-engine builds on this machine's GPU, which is {host.machine()}, but "
                             f"{target.name} images are {platform}", hint="run the export on a device of that platform,"
                             " or leave the engine to be built at the device's first start")
    available = ort.get_available_providers()
    if "TensorrtExecutionProvider" not in available:
        raise ToolchainError("--prebuild-engine needs onnxruntime's TensorrtExecutionProvider, and this onnxruntime "
                             f"{ort.__version__} offers only {', '.join(available)}",
                             hint="install onnxruntime-gpu with TensorRT on a machine with the fleet's GPU, or drop "
                             "the flag: the image builds its engine at first start")


def engine_layer(model: Path, target: Target, card: dict[str, Any], platform: str) -> Layer:
    """Build the engine for `model` with TensorRT here and return it as a layer at the target's engine cache."""
    import onnxruntime as ort

    check_available(target, platform)
    assert target.tensorrt is not None
    with tempfile.TemporaryDirectory(prefix="mlpack-trt-") as tmp:
        settings = settings_for(model, target, card, Path(tmp))
        settings.engine_dir.mkdir(parents=True)
        settings.timing_dir.mkdir(parents=True)
        session = ort.InferenceSession(str(model), providers=[(providers.TENSORRT,
                                                               providers.tensorrt_options(settings))])
        feeds = {}
        for arg in session.get_inputs():  # one run with batch 1 makes TensorRT build (and cache) the engine
            shape = [d if isinstance(d, int) and d > 0 else 1 for d in arg.shape]
            dtype = np.float16 if "float16" in arg.type else np.int64 if "int64" in arg.type else np.float32
            feeds[arg.name] = np.zeros(shape, dtype=dtype)
        session.run(None, feeds)
        uid, _, gid = target.user.partition(":")
        return layer_from_dir(Path(tmp), prefix=target.tensorrt.engine_cache, uid=int(uid), gid=int(gid or uid))
