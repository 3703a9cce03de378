"""torchvision ResNet weights into ``build_torchvision_resnet`` models, and the state-dict reading that
:mod:`keras_retinanet.convert.torchvision` shares. Every tensor taken is checked (name, rank, shape) and
recorded, so leftovers are reported."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

import keras
import numpy as np

from keras_retinanet.backbones.torchvision.resnet import RESNET_BLOCKS, FrozenBatchNormalization
from keras_retinanet.backbones.torchvision.state_dict import CheckpointError, load_state_dict

_IGNORED_LEAVES = ("num_batches_tracked",)


class TensorReader:
    """A state dict being consumed: every take is checked and recorded, so leftovers can be reported."""

    def __init__(self, tensors: Mapping[str, np.ndarray], source: str):
        self.tensors = dict(tensors)
        self.source = source
        self.used: set[str] = set()

    def __contains__(self, name: str) -> bool:
        return name in self.tensors

    def take(self, name: str, ndim: int | None = None) -> np.ndarray:
        if name not in self.tensors:
            raise CheckpointError(f"{self.source}: tensor {name!r} is missing")
        value = np.asarray(self.tensors[name])
        if ndim is not None and value.ndim != ndim:
            raise CheckpointError(
                f"{self.source}: tensor {name!r} has shape {value.shape}, expected {ndim} dims"
            )
        self.used.add(name)
        return value.astype("float32")

    def unused(self, prefix: str = "") -> list[str]:
        return sorted(
            name
            for name in self.tensors
            if name.startswith(prefix)
            and name not in self.used
            and name.rsplit(".", 1)[-1] not in _IGNORED_LEAVES
        )


def read_state_dict(
    source: str | os.PathLike | Mapping[str, np.ndarray],
) -> tuple[dict[str, np.ndarray], str]:
    """``({name: array}, what to call it)``; ``module.`` dropped from the names of a DistributedDataParallel
    model's checkpoint."""
    tensors, name = (
        (source, "state dict")
        if isinstance(source, Mapping)
        else (load_state_dict(source), os.fspath(source))
    )
    if tensors and all(key.startswith("module.") for key in tensors):
        return {key[len("module.") :]: value for key, value in tensors.items()}, name
    return dict(tensors), name


def assign_weight(variable, value: np.ndarray, what: str) -> None:
    if tuple(variable.shape) != value.shape:
        raise CheckpointError(
            f"{what}: shape {value.shape} does not fit the Keras weight {tuple(variable.shape)}"
        )
    variable.assign(value)


def torch_kernel(weight: np.ndarray) -> np.ndarray:
    """(out, in, kh, kw) -> (kh, kw, in, out)."""
    return np.transpose(weight, (2, 3, 1, 0))


def load_conv(
    layer: keras.layers.Conv2D, tensors: TensorReader, prefix: str, allow_missing_bias: bool = False
) -> None:
    assign_weight(
        layer.kernel,
        torch_kernel(tensors.take(f"{prefix}.weight", ndim=4)),
        f"{tensors.source}: {prefix}.weight",
    )
    if not layer.use_bias:
        return
    if f"{prefix}.bias" in tensors or not allow_missing_bias:
        assign_weight(layer.bias, tensors.take(f"{prefix}.bias", ndim=1), f"{tensors.source}: {prefix}.bias")
    else:  # a conv followed by GroupNorm has no bias in torchvision v2
        layer.bias.assign(np.zeros(layer.bias.shape, "float32"))


def load_norm(layer, tensors: TensorReader, prefix: str) -> None:
    """BatchNorm (frozen or not) or GroupNorm from PyTorch's weight / bias [/ running_mean / running_var]."""
    pairs = [("gamma", "weight"), ("beta", "bias")]
    if not isinstance(layer, keras.layers.GroupNormalization):
        pairs += [("moving_mean", "running_mean"), ("moving_variance", "running_var")]
    for keras_name, torch_name in pairs:
        name = f"{prefix}.{torch_name}"
        assign_weight(getattr(layer, keras_name), tensors.take(name, ndim=1), f"{tensors.source}: {name}")


def resnet_depth(tensors: Mapping[str, np.ndarray], prefix: str = "") -> int:
    """50, 101 or 152 from the number of bottlenecks in ``layer3`` of a torchvision ResNet state dict."""
    pattern = re.compile(re.escape(prefix) + r"layer3\.(\d+)\.")
    blocks = {int(m.group(1)) for name in tensors if (m := pattern.match(name))}
    for depth, stages in RESNET_BLOCKS.items():
        if len(blocks) == stages[2]:
            return depth
    raise CheckpointError(
        f"not a torchvision ResNet-50/101/152 state dict: {len(blocks)} blocks in {prefix}layer3 "
        f"(expected {', '.join(str(s[2]) for s in RESNET_BLOCKS.values())})"
    )


def load_resnet(model: keras.Model, tensors: TensorReader, prefix: str) -> int:
    """Loads every conv and norm layer of a ``build_torchvision_resnet`` model; returns how many."""
    count = 0
    for layer in model.layers:
        torch_prefix = prefix + layer.name.replace("_", ".")
        if isinstance(layer, keras.layers.Conv2D):
            load_conv(layer, tensors, torch_prefix)
        elif isinstance(layer, (FrozenBatchNormalization, keras.layers.BatchNormalization)):
            load_norm(layer, tensors, torch_prefix)
        else:
            if layer.weights:
                raise TypeError(f"unexpected layer with weights in a torchvision ResNet: {layer.name}")
            continue
        count += 1
    return count


def load_torchvision_resnet_weights(
    model: keras.Model, source: str | os.PathLike | Mapping[str, np.ndarray]
) -> dict:
    """Copies a torchvision ResNet state dict into a ``build_torchvision_resnet`` model (in place).

    Args:
        source: a checkpoint file (.pth/.pt, .safetensors, .npz) or ``{name: array}`` of an ImageNet classifier
            (its ``fc`` ignored) or a detection model (its ``backbone.body.`` used).
    Returns:
        ``{"source", "prefix", "layers", "ignored"}``: the layers loaded and the tensors not used.
    Raises:
        CheckpointError: a tensor is missing or has the wrong shape, or the ResNet has blocks this model lacks.
    """
    raw, name = read_state_dict(source)
    prefixes = [
        p
        for p in ("", "backbone.body.", "body.")
        if {f"{p}conv1.weight", f"{p}layer1.0.conv1.weight"} <= raw.keys()
    ]
    if not prefixes:
        raise CheckpointError(
            f"{name}: not a torchvision ResNet checkpoint (no conv1.weight / layer1.0.conv1.weight, nor under "
            "backbone.body. as in a detection checkpoint)"
        )
    prefix = prefixes[0]
    depth = resnet_depth(raw, prefix)
    expected = sum(isinstance(layer, keras.layers.Conv2D) for layer in model.layers)
    actual = sum(
        name.startswith(prefix) and name.endswith(".weight") and np.ndim(value) == 4
        for name, value in raw.items()
    )
    if actual != expected:
        raise CheckpointError(
            f"{name}: a ResNet-{depth} checkpoint ({actual} convolutions) does not fit the backbone "
            f"{model.name!r} ({expected} convolutions)"
        )
    tensors = TensorReader(raw, name)
    layers = load_resnet(model, tensors, prefix)
    leftover = tensors.unused(prefix)
    leftover = [n for n in leftover if not n.startswith(f"{prefix}fc.")]
    if leftover:
        raise CheckpointError(f"{name}: tensors not used by {model.name!r}: {', '.join(leftover[:10])}")
    return {"source": name, "prefix": prefix, "layers": layers, "ignored": tensors.unused()}
