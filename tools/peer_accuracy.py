"""Accuracy against the tool users would pick instead: Ultralytics YOLO11n, trained and scored like our runs.

Trains YOLO11n **from its model YAML** (``yolo11n.yaml``: random weights, nothing downloaded) with Ultralytics in
its own Python environment, on the same training data, epochs, image size and batch as a ``retinanet train`` run,
on this machine, then scores its ``best.pt`` (what a user would deploy) with pycocotools on the same split,
against the ground truth this project builds for its own evaluation, by the same code
(:func:`keras_retinanet.evaluation.evaluate_detections`). Writes ``OUTPUT/peer_accuracy.json`` and prints a
markdown table (``OUTPUT/peer_accuracy.md``), one row per model.

How it runs:

1. Both specs are read by this project's readers (``--skip-bad`` as in ``retinanet train``; the scoring split with
   the training split's class list, as training does) and converted by ``keras_retinanet.data.writers.write_yolo``
   (what ``retinanet data convert SPEC --to yolo`` runs) into ``OUTPUT/data`` (splits ``train`` and ``val``).
   ``OUTPUT/data.yaml`` points Ultralytics' ``train`` at the training split and ``val`` at the scoring split.
2. ``OUTPUT/yolo_child.py`` (written from this file) runs in the Ultralytics environment:
   ``YOLO("yolo11n.yaml").train(data=OUTPUT/data.yaml, imgsz=N, epochs=E, batch=B, device="cpu", workers=0,
   seed=0, deterministic=True, plots=False, project=OUTPUT, name="train")``; every other setting is
   Ultralytics' default (optimizer ``auto``, mosaic, HSV, flips, scale, EMA, ...). ``plots=False`` only because
   the plots download a font. It records the training wall time, ``torch.get_num_threads()`` and
   ``OMP_NUM_THREADS`` as the child saw them (Ultralytics sets ``OMP_NUM_THREADS=1`` when unset and pins torch
   to ``cpu_count - 1`` threads: one on a 2-core machine; this tool leaves both to Ultralytics), then predicts
   every scoring image with ``train/weights/best.pt`` at Ultralytics' validation settings (conf 0.001, IoU 0.7,
   max_det 300; boxes in original pixels) and writes them to ``OUTPUT/yolo_predictions.json``.
3. Back here, the predictions become detections in the scoring split's class ids (by class name), are written as
   COCO results (``OUTPUT/yolo_detections.coco.json``, boxes ``[x, y, w, h]`` in original pixels) and are scored.

A rerun with the same ``--output`` reuses a finished training (``OUTPUT/yolo_train.json`` and its ``best.pt``)
and only predicts and scores again; ``--retrain`` trains again from the start.

``--ours RUN_DIR ...`` adds this project's runs: the final metrics ``retinanet train`` wrote into
``RUN_DIR/train_summary.json`` when its ``--val-data`` was this scoring split (scored at the end of training by
the same ``evaluate_detections``), else ``RUN_DIR/model.keras`` evaluated here on the scoring split
(``keras_retinanet.evaluation.evaluate_model``). Its training wall time is read from the run folder's files
(``config.yaml`` written at the start, ``model.keras`` at the end): approximate.

The Ultralytics environment (outside the repository, never a dependency of this project)::

    python3 -m venv /work/peers-yolo
    /work/peers-yolo/bin/pip install torch==2.13.0                # a CPU build where one lies on disk
    /work/peers-yolo/bin/pip install ultralytics==8.4.190 pycocotools
    # on this machine the second step replaced torch 2.13.0+cpu with torch 2.14.1 / torchvision 0.29.1 (the
    # CUDA builds, which run on the CPU): ultralytics needs torchvision, and only those lie on disk for it.
    export RETINANET_PEER_PYTHON=/work/peers-yolo/bin/python

Example (the BCCD-quick comparison; about 30 minutes on a 2-core CPU)::

    python tools/peer_accuracy.py --data voc:BCCD:trainval --val-data voc:BCCD:test --skip-bad \\
        --epochs 30 --image-size 384 --output /work/peer_runs/bccd30 --ours runs/bccd30

Exit status 2, with one line on stderr, when the Ultralytics interpreter is not given or not found, cannot
import ultralytics, or a spec is malformed or names missing data.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from benchmarking.peers import PEER_PYTHON_ENV, PeerPythonError, resolve_peer_python

from keras_retinanet._quiet import parse_args_quietly

# Ultralytics' validation settings, used for the predictions that are scored.
PREDICT_SETTINGS = {"conf": 0.001, "iou": 0.7, "max_det": 300}
MODEL_YAML = "yolo11n.yaml"
WEIGHTS = "best.pt"
CHILD_SCRIPT = "yolo_child.py"
TRAIN_REPORT = "yolo_train.json"
PREDICTIONS = "yolo_predictions.json"
DETECTIONS = "yolo_detections.coco.json"
RESULTS_JSON = "peer_accuracy.json"
RESULTS_MD = "peer_accuracy.md"
TABLE_COLUMNS = (
    "model",
    "data",
    "epochs",
    "image size",
    "AP",
    "AP50",
    "AP75",
    "AP50 per class",
    "train wall s",
    "threads",
)


class PeerAccuracyError(ValueError):
    """A problem worth one line and exit status 2 (no interpreter, no ultralytics, bad spec)."""


# ----------------------------------------------------------------------------------------------------------
# pure parts (no Ultralytics, no torch)


def write_data_yaml(
    path: str | os.PathLike,
    root: str | os.PathLike,
    class_names: Sequence[str],
    train_split: str = "train",
    val_split: str = "val",
) -> Path:
    """Writes Ultralytics' dataset YAML: ``path`` (absolute ``root``), ``train: images/TRAIN``, ``val:
    images/VAL`` and ``names`` (``{id: name}`` in ``class_names`` order); returns its path.

    ``root`` is a folder written by ``keras_retinanet.data.writers.write_yolo`` (``images/SPLIT``,
    ``labels/SPLIT``). The file also reads with this project's ``yolo:FILE:SPLIT`` spec.
    """
    root = Path(root).resolve()
    for split in (train_split, val_split):
        if not (root / "images" / split).is_dir() or not (root / "labels" / split).is_dir():
            raise FileNotFoundError(f"{root}: no images/{split} and labels/{split} (write_yolo's layout)")
    config = {
        "path": str(root),
        "train": f"images/{train_split}",
        "val": f"images/{val_split}",
        "names": {k: str(name) for k, name in enumerate(class_names)},
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(config, f, sort_keys=False, allow_unicode=True)
    return path


def yolo_to_detections(
    predictions: Sequence[Mapping[str, Any]], yolo_names: Sequence[str], class_names: Sequence[str]
) -> list[dict[str, np.ndarray]]:
    """Ultralytics' per-image predictions -> detections in the data set's class ids.

    Args:
        predictions: one entry per image with ``boxes`` (D, 4) xyxy in the image's original pixels (Ultralytics'
            ``Results.boxes.xyxy``), ``scores`` (D,) and ``classes`` (D,) YOLO class ids.
        yolo_names: the YOLO model's class names (``model.names`` in id order).
        class_names: the data set's class names; detections are mapped to them by name, and a YOLO class whose
            name the data set lacks is dropped.
    Returns:
        ``[{"boxes": float64 (D, 4), "scores": (D,), "classes": int64 (D,)}]`` in the order of ``predictions``,
        as :func:`keras_retinanet.evaluation.evaluate_detections` takes them.
    """
    index = {name: k for k, name in enumerate(class_names)}
    mapping = np.array([index.get(str(name), -1) for name in yolo_names], np.int64)
    detections = []
    for k, prediction in enumerate(predictions):
        boxes = np.asarray(prediction.get("boxes", []), np.float64).reshape(-1, 4)
        scores = np.asarray(prediction.get("scores", []), np.float64).reshape(-1)
        yolo_ids = np.asarray(prediction.get("classes", []), np.float64).reshape(-1).astype(np.int64)
        if not len(boxes) == len(scores) == len(yolo_ids):
            raise ValueError(
                f"prediction {k}: {len(boxes)} boxes, {len(scores)} scores, {len(yolo_ids)} classes"
            )
        if len(yolo_ids) and (yolo_ids.min() < 0 or yolo_ids.max() >= len(mapping)):
            raise ValueError(f"prediction {k}: YOLO class id outside 0..{len(mapping) - 1}")
        classes = mapping[yolo_ids] if len(yolo_ids) else np.zeros((0,), np.int64)
        keep = classes >= 0
        detections.append({"boxes": boxes[keep], "scores": scores[keep], "classes": classes[keep]})
    return detections


def coco_results(
    detections: Sequence[Mapping[str, Any]], examples: Sequence[Mapping[str, Any]], class_names: Sequence[str]
) -> list[dict]:
    """The detections as a COCO results list: image ids ``1..N`` in ``examples`` order and category ids ``1..K``,
    as :func:`keras_retinanet.evaluation.examples_to_coco` numbers the ground truth, boxes ``[x, y, w, h]`` in
    original pixels, each with its ``category_name`` and ``file_name``."""
    from keras_retinanet.evaluation import detections_to_coco_results

    return detections_to_coco_results(
        detections,
        list(range(1, len(examples) + 1)),
        category_offset=1,
        class_names=class_names,
        file_names=[str(example.get("image_path", "")) for example in examples],
    )


def score(
    examples: Sequence[Mapping[str, Any]],
    detections: Sequence[Mapping[str, Any]],
    class_names: Sequence[str],
) -> dict:
    """pycocotools' metrics, by the code that scores this project's models
    (:func:`keras_retinanet.evaluation.evaluate_detections`, ground truth by ``examples_to_coco``)."""
    from keras_retinanet.evaluation import evaluate_detections

    return evaluate_detections(examples, detections, class_names)


def short_spec(spec: str) -> str:
    """A dataset spec shortened for a table: ``voc:/x/BCCD:test`` -> ``BCCD:test``,
    ``coco:/x/chess640/valid/_annotations.coco.json:/x/chess640/valid`` -> ``chess640/valid``."""
    from keras_retinanet.data import parse_spec

    parsed = parse_spec(spec)
    path = Path(parsed.path)
    if parsed.format in ("voc", "yolo"):
        name = path.name if parsed.format == "voc" else path.parent.name
        return f"{name}:{parsed.extra}" if parsed.extra else name
    if parsed.format == "coco":
        return f"{path.parent.parent.name}/{path.parent.name}"
    return str(parsed)


def _number(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    value = float(value)
    return "n/a" if value < 0 or value != value else f"{value:.{digits}f}"


def _threads_text(threads: Any) -> str:
    if not isinstance(threads, Mapping):
        return "-" if threads is None else str(threads)
    torch_threads = threads.get("torch_num_threads")
    omp = threads.get("OMP_NUM_THREADS")
    if torch_threads is None and omp is None:
        return str(threads.get("note", "-"))
    return f"torch {torch_threads}, OMP {omp if omp is not None else 'unset'}"


def format_row(row: Mapping[str, Any]) -> str:
    """One markdown table row (columns :data:`TABLE_COLUMNS`) from one entry of ``peer_accuracy.json``."""
    per_class = row.get("per_class_AP50") or {}
    wall = row.get("train_wall_s")
    cells = [
        str(row.get("model", "")),
        str(row.get("data_label", "")),
        str(row.get("epochs", "")),
        str(row.get("image_size", "")),
        _number(row.get("AP")),
        _number(row.get("AP50")),
        _number(row.get("AP75")),
        ", ".join(f"{name} {_number(value)}" for name, value in per_class.items()) or "-",
        "-"
        if wall is None
        else f"{float(wall):,.0f}" + (" (approx.)" if row.get("train_wall_approx") else ""),
        _threads_text(row.get("threads")),
    ]
    return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"


def format_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """The markdown table: header, separator, one :func:`format_row` per row."""
    header = "| " + " | ".join(TABLE_COLUMNS) + " |"
    numeric = {"epochs", "image size", "AP", "AP50", "AP75", "train wall s"}
    separator = "|" + "|".join("---:" if name in numeric else "---" for name in TABLE_COLUMNS) + "|"
    return "\n".join([header, separator, *(format_row(row) for row in rows)])


def metrics_row(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """AP, AP50, AP75 and per-class AP50 of :func:`score`'s metrics, for a row."""
    return {
        "AP": metrics["AP"],
        "AP50": metrics["AP50"],
        "AP75": metrics["AP75"],
        "per_class_AP50": {name: values["AP50"] for name, values in metrics["per_class"].items()},
        "metrics": dict(metrics),
    }


# ----------------------------------------------------------------------------------------------------------
# the child, run by the Ultralytics interpreter (written to OUTPUT/yolo_child.py; imports nothing of this project)

CHILD_SOURCE = r'''"""Written and run by tools/peer_accuracy.py in the Ultralytics environment: train, then predict."""
import json
import os
import sys
import time

config = json.load(open(sys.argv[1], encoding="utf-8"))
omp_before = os.environ.get("OMP_NUM_THREADS")
import torch  # noqa: E402
import ultralytics  # noqa: E402
from ultralytics import YOLO  # noqa: E402


def write(path, value):
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        json.dump(value, f)
    os.replace(path + ".tmp", path)


train_report = config["train_report"]
if config["train"]:
    model = YOLO(config["model"])
    start = time.perf_counter()
    model.train(
        data=config["data_yaml"],
        imgsz=config["imgsz"],
        epochs=config["epochs"],
        batch=config["batch"],
        device="cpu",
        workers=0,
        seed=config["seed"],
        deterministic=True,
        plots=False,
        project=config["project"],
        name=config["name"],
        exist_ok=True,
    )
    wall = time.perf_counter() - start
    trainer = model.trainer
    metrics = {k: float(v) for k, v in (getattr(trainer, "metrics", None) or {}).items()}
    report = {
        "train_wall_s": wall,
        "threads": {
            "torch_num_threads": torch.get_num_threads(),
            "torch_num_interop_threads": torch.get_num_interop_threads(),
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
            "OMP_NUM_THREADS_given": omp_before,
            "cpu_count": os.cpu_count(),
        },
        "versions": {"ultralytics": ultralytics.__version__, "torch": torch.__version__,
                     "python": sys.version.split()[0]},
        "best": str(trainer.best),
        "last": str(trainer.last),
        "ultralytics_val_of_best": metrics,
        "optimizer": str(getattr(trainer, "optimizer", "")).split("(")[0].strip(),
        "train_args": {k: str(v) for k, v in vars(trainer.args).items()},
    }
    write(train_report, report)
report = json.load(open(train_report, encoding="utf-8"))
model = YOLO(report["best"] if config["weights"] == "best.pt" else report["last"])
predictions = []
start = time.perf_counter()
for path in config["images"]:
    (result,) = model.predict(path, imgsz=config["imgsz"], device="cpu", verbose=False, **config["predict"])
    boxes = result.boxes
    predictions.append({
        "path": path,
        "boxes": boxes.xyxy.cpu().numpy().tolist(),
        "scores": boxes.conf.cpu().numpy().tolist(),
        "classes": boxes.cls.cpu().numpy().astype(int).tolist(),
        "shape": list(result.orig_shape),
    })
predict_s = time.perf_counter() - start
write(config["predictions"], {
    "names": [model.names[k] for k in sorted(model.names)],
    "weights": config["weights"],
    "predict_s": predict_s,
    "predict_threads": torch.get_num_threads(),
    "predictions": predictions,
})
'''


# ----------------------------------------------------------------------------------------------------------
# the steps


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Train Ultralytics YOLO11n like a retinanet run and score both with pycocotools",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--data", required=True, help="training data spec (voc:DIR:SPLIT, coco:ANN.json:IMAGES, ...)"
    )
    parser.add_argument(
        "--val-data", required=True, help="the split to score on (Ultralytics' val during training)"
    )
    parser.add_argument("--epochs", type=int, required=True)
    parser.add_argument("--image-size", type=int, required=True, help="longer side (Ultralytics' imgsz)")
    parser.add_argument("--batch-size", type=int, default=8, help="default 8, as retinanet train")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--skip-bad", action="store_true", help="skip bad records (as retinanet train --skip-bad)"
    )
    parser.add_argument(
        "--peer-python",
        default=None,
        help=f"the Ultralytics environment's python (default ${PEER_PYTHON_ENV})",
    )
    parser.add_argument("--output", required=True, help="work folder and results")
    parser.add_argument(
        "--ours", nargs="*", default=[], metavar="RUN_DIR", help="retinanet run folders to add"
    )
    parser.add_argument(
        "--retrain", action="store_true", help="train again even if OUTPUT holds a finished run"
    )
    parser.add_argument(
        "--timeout", type=float, default=6 * 3600.0, help="seconds before the child is killed"
    )
    args = parse_args_quietly(parser, argv)
    if args.epochs < 1 or args.image_size < 32 or args.batch_size < 1:
        parser.error("--epochs and --batch-size must be >= 1 and --image-size >= 32")
    return args


def check_ultralytics(python: str, config_dir: str | os.PathLike | None = None) -> dict[str, str]:
    """Versions of ultralytics and torch in the peer interpreter; :class:`PeerAccuracyError` when they do not
    import."""
    code = (
        "import json, ultralytics, torch; "
        "print(json.dumps({'ultralytics': ultralytics.__version__, 'torch': torch.__version__}))"
    )
    try:
        proc = subprocess.run(
            [python, "-c", code],
            capture_output=True,
            text=True,
            env=child_env(config_dir),
            timeout=300,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        raise PeerAccuracyError(f"{python}: cannot run it: {err}") from None
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["(no message)"])[-1]
        raise PeerAccuracyError(
            f"ultralytics is not importable with {python}: {last}; install it there "
            "(pip install ultralytics==8.4.190 pycocotools; see tools/peer_accuracy.py's docstring)"
        )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def child_env(config_dir: str | os.PathLike | None = None) -> dict[str, str]:
    """The child's environment: this one without this project's Python paths or thread settings (Ultralytics
    chooses its own threads), offline, its settings in ``config_dir``."""
    drop = ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
    env = {key: value for key, value in os.environ.items() if key not in drop}
    env["YOLO_OFFLINE"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    if config_dir is not None:
        env["YOLO_CONFIG_DIR"] = os.fspath(config_dir)
    return env


def load_splits(data: str, val_data: str, skip_bad: bool):
    """(training set, scoring set) by this project's readers; the scoring set with the training class list."""
    from keras_retinanet.data import load_dataset, parse_spec
    from keras_retinanet.data.validation import DataError

    try:
        parse_spec(data)
        parse_spec(val_data)
        train = load_dataset(data, skip_bad=skip_bad)
        val = load_dataset(val_data, skip_bad=skip_bad, class_names=train.class_names)
    except (ValueError, FileNotFoundError, DataError) as err:
        raise PeerAccuracyError(str(err).splitlines()[0]) from None
    if train.encoded_images is not None or val.encoded_images is not None:
        raise PeerAccuracyError("TFDS data sets have no image files to convert: use a file format")
    return train, val


def convert(train, val, root: Path) -> dict[str, int]:
    """Both splits through ``write_yolo`` (``retinanet data convert --to yolo``) into ``root``, rewritten from
    scratch; returns the ignore boxes each left out (YOLO has no ignore flag)."""
    from keras_retinanet.data import writers
    from keras_retinanet.data.validation import DataError

    if root.exists():
        shutil.rmtree(root)
    try:
        _, left_train = writers.write_yolo(train, os.fspath(root), "train")
        _, left_val = writers.write_yolo(val, os.fspath(root), "val")
    except DataError as err:
        raise PeerAccuracyError(f"converting to YOLO: {str(err).splitlines()[0]}") from None
    return {"train": left_train, "val": left_val}


def _skip_counts(dataset) -> dict[str, Any]:
    report = dataset.skipped
    return {"images": report.images_skipped, "boxes": report.boxes_skipped, "reasons": report.counts()}


def run_yolo(args: argparse.Namespace, python: str, output: Path, data_yaml: Path, images: list[str]) -> dict:
    """Trains (unless a finished training is reused) and predicts in the child; returns its train report and
    predictions."""
    report_path = output / TRAIN_REPORT
    reuse = report_path.exists() and not args.retrain
    if reuse:
        report = json.loads(report_path.read_text())
        reuse = Path(report.get("best", "")).exists()
        previous = report.get("request", {})
        request = _request(args)
        if reuse and previous != request:
            raise PeerAccuracyError(
                f"{report_path} was trained with {previous}, not {request}: pass --retrain or another --output"
            )
    config = {
        "train": not reuse,
        "model": MODEL_YAML,
        "data_yaml": os.fspath(data_yaml),
        "imgsz": args.image_size,
        "epochs": args.epochs,
        "batch": args.batch_size,
        "seed": args.seed,
        "project": os.fspath(output),
        "name": "train",
        "train_report": os.fspath(report_path),
        "weights": WEIGHTS,
        "images": images,
        "predict": PREDICT_SETTINGS,
        "predictions": os.fspath(output / PREDICTIONS),
    }
    script = output / CHILD_SCRIPT
    script.write_text(CHILD_SOURCE)
    config_path = output / "yolo_child_config.json"
    config_path.write_text(json.dumps(config, indent=1))
    if not reuse and (output / "train").exists():
        shutil.rmtree(output / "train")
    command = [python, os.fspath(script), os.fspath(config_path)]
    print(
        f"[peer_accuracy] {'training' if not reuse else 'reusing the training in ' + str(output / 'train') + ';'}"
        f" YOLO11n: {shlex.join(command)} (log: {output / 'yolo_child.log'})",
        flush=True,
    )
    with open(output / "yolo_child.log", "a", encoding="utf-8") as log:
        try:
            proc = subprocess.run(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=child_env(output / ".ultralytics"),
                cwd=output,
                timeout=args.timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"the Ultralytics child timed out after {args.timeout:.0f} s") from None
    if proc.returncode != 0:
        tail = (output / "yolo_child.log").read_text(errors="replace").strip().splitlines()[-15:]
        raise RuntimeError(
            f"the Ultralytics child failed (exit {proc.returncode}); last lines of its log:\n"
            + "\n".join(tail)
        )
    report = json.loads(report_path.read_text())
    if not reuse:
        report["request"] = _request(args)
        report_path.write_text(json.dumps(report, indent=1))
    return {"train": report, "predictions": json.loads((output / PREDICTIONS).read_text())}


def _request(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "data": args.data,
        "val_data": args.val_data,
        "epochs": args.epochs,
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "seed": args.seed,
        "skip_bad": args.skip_bad,
    }


def ours_row(run_dir: str | os.PathLike, val, args: argparse.Namespace) -> dict[str, Any]:
    """A retinanet run folder's row: its ``train_summary.json`` final metrics when it was validated on this
    scoring split, else its ``model.keras`` evaluated here on it."""
    run = Path(run_dir)
    config_path, summary_path, model_path = (
        run / "config.yaml",
        run / "train_summary.json",
        run / "model.keras",
    )
    if not config_path.is_file():
        raise PeerAccuracyError(f"{run}: no config.yaml (not a retinanet train run folder)")
    config = yaml.safe_load(config_path.read_text()) or {}
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    model_options = config.get("model") or {}
    same_split = config.get("val_data") == args.val_data and bool(config.get("skip_bad")) == args.skip_bad
    metrics = summary.get("final_metrics") if same_split else None
    source = f"{summary_path} final_metrics"
    if metrics is None:
        if not model_path.is_file():
            raise PeerAccuracyError(f"{run}: no model.keras to evaluate (the run has not finished)")
        from keras_retinanet.evaluation import evaluate_model

        print(f"[peer_accuracy] evaluating {model_path} on {args.val_data}", flush=True)
        metrics = evaluate_model(os.fspath(model_path), val, progress=False)
        source = f"{model_path} evaluated by keras_retinanet.evaluation.evaluate_model"
    wall = None
    if model_path.is_file():
        wall = model_path.stat().st_mtime - config_path.stat().st_mtime
    image_size = model_options.get("image_size")
    if isinstance(image_size, (list, tuple)):
        image_size = "x".join(str(v) for v in image_size)
    return {
        "model": f"RetinaNet {model_options.get('backbone', '?')} (keras_retinanet)",
        "data": config.get("data"),
        "val_data": args.val_data,
        "data_label": f"{short_spec(config.get('data') or args.data)} -> {short_spec(args.val_data)}",
        "epochs": config.get("epochs"),
        "image_size": image_size,
        "batch_size": config.get("batch_size"),
        **metrics_row(metrics),
        "train_wall_s": wall,
        "train_wall_approx": True,
        "threads": {"note": "TF default (every core)"},
        "source": source,
        "run_dir": os.fspath(run),
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if not (args.peer_python or os.environ.get(PEER_PYTHON_ENV)):
        print(
            "peer_accuracy: training YOLO11n needs the Ultralytics environment: pass --peer-python PATH or set "
            f"{PEER_PYTHON_ENV}; tools/peer_accuracy.py's docstring shows how to create it",
            file=sys.stderr,
        )
        return 2
    try:
        python = resolve_peer_python(args.peer_python)
    except PeerPythonError as err:
        print(f"peer_accuracy: {err}", file=sys.stderr)
        return 2
    try:
        train, val = load_splits(args.data, args.val_data, args.skip_bad)
        output = Path(args.output).resolve()
        output.mkdir(parents=True, exist_ok=True)
        versions = check_ultralytics(python, output / ".ultralytics")
        left_out = convert(train, val, output / "data")
        data_yaml = write_data_yaml(output / "data.yaml", output / "data", train.class_names)
        images = [str(example["image_path"]) for example in val.examples]
        run = run_yolo(args, python, output, data_yaml, images)
        ours = [ours_row(run_dir, val, args) for run_dir in args.ours]
    except PeerAccuracyError as err:
        print(f"peer_accuracy: {err}", file=sys.stderr)
        return 2

    predictions = run["predictions"]
    paths = [p["path"] for p in predictions["predictions"]]
    if paths != images:
        raise RuntimeError("the child's predictions are not in the scoring images' order")
    detections = yolo_to_detections(predictions["predictions"], predictions["names"], val.class_names)
    (output / DETECTIONS).write_text(json.dumps(coco_results(detections, val.examples, val.class_names)))
    metrics = score(val.examples, detections, val.class_names)
    report = run["train"]
    yolo = {
        "model": f"YOLO11n (ultralytics {report['versions']['ultralytics']})",
        "data": args.data,
        "val_data": args.val_data,
        "data_label": f"{short_spec(args.data)} -> {short_spec(args.val_data)}",
        "epochs": args.epochs,
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        **metrics_row(metrics),
        "train_wall_s": report["train_wall_s"],
        "train_wall_approx": False,
        "threads": report["threads"],
        "weights": predictions["weights"],
        "predict": {**PREDICT_SETTINGS, "imgsz": args.image_size, "batch": 1},
        "predict_ms_per_image": 1000.0 * predictions["predict_s"] / max(1, len(paths)),
        "ultralytics_val_of_best": report.get("ultralytics_val_of_best"),
        "optimizer": report.get("optimizer"),
        "versions": report["versions"],
        "checked_versions": versions,
        "skipped": {"train": _skip_counts(train), "val": _skip_counts(val)},
        "ignore_boxes_left_out_of_yolo_labels": left_out,
        "images": {"train": len(train), "val": len(val)},
        "class_names": list(val.class_names),
        "command": shlex.join(
            [sys.executable, *(sys.argv if argv is None else ["tools/peer_accuracy.py", *argv])]
        ),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    rows = [yolo, *ours]
    table = format_table(rows)
    (output / RESULTS_JSON).write_text(json.dumps({"rows": rows}, indent=1))
    (output / RESULTS_MD).write_text(table + "\n")
    skipped = yolo["skipped"]
    print(
        f"[peer_accuracy] skipped records: train {skipped['train']['boxes']} box(es), "
        f"{skipped['train']['images']} image(s); val {skipped['val']['boxes']} box(es), "
        f"{skipped['val']['images']} image(s)"
    )
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
