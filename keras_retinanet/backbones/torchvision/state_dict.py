"""Reading and writing PyTorch state dicts as ``{name: numpy array}``: ``.pth`` / ``.pt`` (needs torch; read
with ``weights_only=True``, a training checkpoint's ``{"model": ...}`` unwrapped), ``.safetensors``, ``.npz``."""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np

STATE_DICT_SUFFIXES = (".pth", ".pt", ".safetensors", ".npz")
_WRAPPER_KEYS = ("model", "state_dict", "model_state_dict")


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read or does not hold the expected tensors."""


def load_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Reads a PyTorch state dict file into ``{name: numpy array}`` (float tensors as float32 or wider).

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: unknown suffix, torch needed but missing, or no tensors in the file.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path!r} does not exist")
    suffix = os.path.splitext(path)[1].lower()
    if suffix in (".pth", ".pt"):
        tensors = _load_torch(path)
    elif suffix == ".safetensors":
        try:
            from safetensors.numpy import load_file
        except ImportError:
            raise CheckpointError(
                f"{path}: reading .safetensors needs the safetensors package (pip install safetensors)"
            ) from None
        tensors = dict(load_file(path))
    elif suffix == ".npz":
        with np.load(path, allow_pickle=False) as archive:
            tensors = {name: archive[name] for name in archive.files}
    else:
        raise CheckpointError(
            f"{path}: unknown checkpoint format {suffix!r}; expected one of {', '.join(STATE_DICT_SUFFIXES)}"
        )
    if not tensors:
        raise CheckpointError(f"{path}: the file holds no tensors")
    return tensors


def _load_torch(path: str) -> dict[str, np.ndarray]:
    try:
        import torch
    except ImportError:
        raise CheckpointError(
            f"{path}: reading a .pth/.pt file needs torch (pip install 'keras-retinanet[torch]'). Without torch, "
            "save the state dict as .safetensors (safetensors.torch.save_file) or .npz where torch is installed, "
            "or run `retinanet convert torchvision FILE.pth --output FILE.npz` there."
        ) from None
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several kinds for a corrupt file or pickled objects
        raise CheckpointError(f"{path}: torch.load failed: {type(error).__name__}: {error}") from None
    for key in _WRAPPER_KEYS:
        if isinstance(loaded, Mapping) and key in loaded and isinstance(loaded[key], Mapping):
            loaded = loaded[key]
            break
    if not isinstance(loaded, Mapping):
        raise CheckpointError(f"{path}: expected a state dict (name -> tensor), got {type(loaded).__name__}")
    tensors = {}
    for name, value in loaded.items():
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{path}: entry {name!r} is a {type(value).__name__}, not a tensor")
        value = value.detach().cpu()
        if value.dtype in (torch.float16, torch.bfloat16):
            value = value.float()
        tensors[name] = value.numpy()
    return tensors


def save_state_dict(tensors: Mapping[str, np.ndarray], path: str | os.PathLike) -> None:
    """Writes ``{name: array}`` as ``.npz`` (or ``.safetensors`` with the safetensors package)."""
    path = os.fspath(path)
    suffix = os.path.splitext(path)[1].lower()
    arrays = {name: np.ascontiguousarray(value) for name, value in tensors.items()}
    if suffix == ".npz":
        np.savez(path, **arrays)
    elif suffix == ".safetensors":
        from safetensors.numpy import save_file

        save_file(arrays, path)
    else:
        raise CheckpointError(f"{path}: a state dict is written as .npz or .safetensors, not {suffix!r}")
