"""Running the peers' measurements (``tools/peer_benchmarks.py``) in their own Python and reading their JSON.

The peers (keras-hub's ``RetinaNetObjectDetector``, torchvision's ``retinanet_resnet50_fpn``) are never
dependencies of this project: they live in a separate environment whose interpreter is given with
``--peer-python`` or the ``RETINANET_PEER_PYTHON`` environment variable (docs/benchmark.md shows how to make
one). The peers' script times with :mod:`keras_retinanet.detectors.timing` (standard library only), which the
subprocess finds through ``PYTHONPATH``: a temporary directory holding only a link to this ``keras_retinanet``
package, so that nothing else of this project's environment (its TensorFlow, its numpy) shadows the peers'.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

PEERS = ("keras-hub", "torchvision")
PEER_PYTHON_ENV = "RETINANET_PEER_PYTHON"
_PACKAGE_DIR = Path(__file__).resolve().parents[2] / "keras_retinanet"


class PeerPythonError(ValueError):
    """The peers' interpreter was asked for (``--compare``) but is not given or not found."""


def resolve_peer_python(given: str | None, environ: dict[str, str] | None = None) -> str:
    """The peers' interpreter: ``given``, else ``$RETINANET_PEER_PYTHON``; a path or a command on ``PATH``.

    Raises:
        PeerPythonError: neither is set, or the interpreter does not exist / is not executable.
    """
    environ = os.environ if environ is None else environ
    value = given or environ.get(PEER_PYTHON_ENV)
    source = "--peer-python" if given else PEER_PYTHON_ENV
    if not value:
        raise PeerPythonError(
            "comparing with the peers needs their Python environment (keras-hub, torch, torchvision): pass "
            f"--peer-python PATH or set {PEER_PYTHON_ENV}; docs/benchmark.md shows how to create it"
        )
    found = shutil.which(value)
    if found is None:
        raise PeerPythonError(f"{source}={value}: no such executable interpreter")
    return found


def run_peer(
    peer: str,
    python: str,
    script: str | os.PathLike,
    inputs_path: str | os.PathLike,
    *,
    threads: int,
    runs: int,
    warmup: int,
    num_classes: int = 80,
    quick: bool = False,
    xla: bool = False,
    timeout: float = 3600.0,
) -> dict[str, Any]:
    """Runs ``python script --peer PEER ...`` and returns the JSON report it writes.

    Args:
        peer: one of :data:`PEERS`.
        python: the peers' interpreter (:func:`resolve_peer_python`).
        script: ``tools/peer_benchmarks.py``.
        inputs_path: ``.npz`` of :func:`benchmarking.project.benchmark_inputs`.
        threads, runs, warmup, num_classes, quick, xla: passed on as the script's flags.
        timeout: seconds before the subprocess is killed.
    Returns:
        The script's report (``{"results": {phase: record}, "params", "versions", "config"}``), or
        ``{"skipped": why}`` when the peer's library is missing, the script fails or times out.
    """
    if peer not in PEERS:
        raise ValueError(f"unknown peer {peer!r}; choose from {', '.join(PEERS)}")
    with tempfile.TemporaryDirectory(prefix="retinanet-peer-") as tmp:
        out = Path(tmp) / "peer.json"
        command = [
            python,
            os.fspath(script),
            "--peer",
            peer,
            "--inputs",
            os.fspath(inputs_path),
            "--threads",
            str(threads),
            "--runs",
            str(runs),
            "--warmup",
            str(warmup),
            "--num-classes",
            str(num_classes),
            "--json",
            str(out),
        ]
        if quick:
            command.append("--quick")
        if xla:
            command.append("--xla")
        print(f"[benchmark] peer {peer}: {shlex.join(command)}", flush=True)
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
        env.update(
            PYTHONPATH=_package_path(Path(tmp)),
            OMP_NUM_THREADS=str(threads),
            TF_CPP_MIN_LOG_LEVEL="2",
            KERAS_BACKEND="tensorflow",
        )
        try:
            proc = subprocess.run(
                command, capture_output=True, text=True, timeout=timeout, env=env, check=False
            )
        except subprocess.TimeoutExpired:
            return {"skipped": f"{peer} timed out after {timeout:.0f} s"}
        if out.exists():
            report = json.loads(out.read_text())
            return {"skipped": report["skipped"]} if "skipped" in report else report
        tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-5:]
        return {"skipped": f"{peer} exited {proc.returncode}: " + " | ".join(tail)[-600:]}


def _package_path(scratch: Path) -> str:
    """A ``PYTHONPATH`` entry that holds only this ``keras_retinanet`` package (a link in ``scratch``).

    Where links cannot be made, the directory holding the package (the repository root of a checkout).
    """
    link = scratch / "pythonpath" / _PACKAGE_DIR.name
    try:
        link.parent.mkdir()
        link.symlink_to(_PACKAGE_DIR, target_is_directory=True)
        return str(link.parent)
    except OSError:
        return str(_PACKAGE_DIR.parent)
