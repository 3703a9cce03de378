"""Helpers shared by the tests (a module of its own: ``conftest`` names clash between test folders)."""

import atexit
import ipaddress
import os
import shutil
import socket
import tempfile
from pathlib import Path

from helpers.ci_skips import skip_missing

REPO = Path(__file__).resolve().parents[1]
# What a newcomer saw before the quiet start (issue 36): TensorFlow's C++ start-up lines (tests/test_quiet.py).
LOUD = ("I0000", "cuInit", "oneDNN custom operations")
SHARED_DATASETS = Path(os.environ.get("KERAS_RETINANET_DATASETS", REPO.parent / "shared" / "datasets"))
# A few real BCCD and chess640 images with their annotations, vendored (tests/fixtures/README.md).
FIXTURES = Path(__file__).resolve().parent / "fixtures"
BCCD_FIXTURES = FIXTURES / "bccd" / "BCCD"
CHESS_FIXTURES = FIXTURES / "chess640"
# The shared ImageNet MobileNetV2 backbone file (its SOURCE.md), and Keras' name for it in its cache (alpha 1.0,
# 224, no top), under which Keras' weights="imagenet" finds it without downloading.
SHARED_MOBILENET_V2 = SHARED_DATASETS.parent / "weights" / "mobilenet_v2_imagenet_no_top.h5"
KERAS_MOBILENET_V2_FILE = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"


def seeded_keras_home() -> str:
    """A Keras cache folder of the test session's own (for ``KERAS_HOME``; child processes inherit it) holding
    the shared ImageNet MobileNetV2 file under Keras' name: ``weights="imagenet"`` then runs Keras' real code
    path with no download. Any other ImageNet file is missing, and the network guard stops its download."""
    home = tempfile.mkdtemp(prefix="keras-home-")
    atexit.register(shutil.rmtree, home, ignore_errors=True)
    if SHARED_MOBILENET_V2.is_file():
        (Path(home) / "models").mkdir()
        shutil.copyfile(SHARED_MOBILENET_V2, Path(home) / "models" / KERAS_MOBILENET_V2_FILE)
    return home


def _is_local(host) -> bool:
    if isinstance(host, bytes):
        host = host.decode()
    if host in ("localhost", "", None):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_unspecified


def network_guard(connect, lookup):
    """Wraps ``socket.socket.connect`` and ``socket.getaddrinfo``: any host but this machine's loopback fails the
    test before the wrapped function is called. Returns ``(guarded_connect, guarded_lookup)``."""

    def guarded_connect(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6) and not _is_local(address[0]):
            raise AssertionError(f"a test tried to reach the network: {address}")
        return connect(sock, address)

    def guarded_lookup(host, *args, **kwargs):
        if not _is_local(host):
            raise AssertionError(f"a test tried to look up {host!r}")
        return lookup(host, *args, **kwargs)

    return guarded_connect, guarded_lookup


def require_shared() -> Path:
    """The read-only shared datasets folder; skips the test without it, except in CI where it must exist."""
    if not SHARED_DATASETS.is_dir():
        skip_missing(f"the shared datasets at {SHARED_DATASETS} (set KERAS_RETINANET_DATASETS)")
    return SHARED_DATASETS


def tiny_retinanet(num_classes: int = 3, **kwargs):
    """A small RetinaNet for fast tests: MobileNetV2 x0.35 from scratch, 32-channel pyramid and heads of one
    conv."""
    from keras_retinanet import RetinaNet

    options = dict(
        backbone="mobilenet_v2",
        backbone_weights=None,
        backbone_kwargs={"alpha": 0.35},
        fpn_channels=32,
        head_depth=1,
    )
    options.update(kwargs)
    return RetinaNet(num_classes, **options)


def bccd_source(image_ids: list[str]) -> Path:
    """The BCCD VOC folder holding ``image_ids``: the vendored fixtures when they have them all, else the
    shared full set (skipping the test without it)."""
    if all((BCCD_FIXTURES / "JPEGImages" / f"{image_id}.jpg").is_file() for image_id in image_ids):
        return BCCD_FIXTURES
    return require_shared() / "bccd" / "BCCD"


def copy_bccd_subset(destination: Path, image_ids: list[str], split: str = "train") -> Path:
    """Copies a few BCCD images and annotations into a VOC folder under ``destination``."""
    source = bccd_source(image_ids)
    root = destination / "BCCD"
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for image_id in image_ids:
        shutil.copy(source / "Annotations" / f"{image_id}.xml", root / "Annotations")
        shutil.copy(source / "JPEGImages" / f"{image_id}.jpg", root / "JPEGImages")
    (root / "ImageSets" / "Main" / f"{split}.txt").write_text("\n".join(image_ids) + "\n")
    return root


def make_detector_like(model, images) -> None:
    """Make an untrained model produce varied detections, so that tests do not run on empty outputs.

    A freshly initialised RetinaNet scores every anchor at the prior (~0.01, with a spread of ~1e-6), so no
    detection passes any threshold and ties decide everything. The final convolution kernels of the two heads
    are rescaled so that, on ``images`` ((B, H, W, 3) float32 canvases of the model's input size), the logits
    spread with std 2 around -5.5 and the box deltas with std 0.3: an arbitrary but deterministic detector whose
    scores and boxes vary widely from anchor to anchor, with real NMS decisions.
    """
    import numpy as np

    outputs = model(images)
    logit_std = float(np.asarray(outputs["classification"]).std())
    delta_std = float(np.asarray(outputs["box_regression"]).std())
    head = model.get_layer("classification_head").final
    head.kernel.assign(head.kernel.numpy() * (2.0 / logit_std))
    head.bias.assign(np.full(head.bias.shape, -5.5, np.float32))
    box = model.get_layer("box_head").final
    box.kernel.assign(box.kernel.numpy() * (0.3 / delta_std))


DETECTOR_LIKE_SIZE = 128
DETECTOR_LIKE_IMAGES = (120, 160)  # (H, W): letterboxed into 128 x 128 with scale 0.8, content 96 x 128


def make_detector_like_files(folder: Path) -> dict:
    """A tiny detector-like RetinaNet (3 synthetic classes, input 128 px) saved as ``.keras`` and as a float32
    ``.tflite`` (with ``labels.txt``), and 4 synthetic rectangular images (COCO spec) to run it on.

    Returns {"keras": path, "tflite": path, "spec": dataset spec, "images": [paths], "class_names": [...]}.
    """
    import keras
    import numpy as np

    from keras_retinanet.data.synthetic import CLASS_NAMES, make_synthetic_coco
    from keras_retinanet.export import convert_tflite
    from keras_retinanet.imaging import letterbox, read_image

    keras.utils.set_random_seed(3)
    spec = make_synthetic_coco(folder / "data", 4, DETECTOR_LIKE_IMAGES, seed=1)
    images = sorted(str(p) for p in (folder / "data" / "images").iterdir())
    model = tiny_retinanet(len(CLASS_NAMES), class_names=list(CLASS_NAMES), image_size=DETECTOR_LIKE_SIZE)
    canvases = np.stack([letterbox(read_image(p), DETECTOR_LIKE_SIZE)[0] for p in images]).astype(np.float32)
    make_detector_like(model, canvases)
    model.save(folder / "model.keras")
    export = folder / "export"
    export.mkdir()
    (export / "model_float32.tflite").write_bytes(convert_tflite(model, "float32"))
    (export / "labels.txt").write_text("\n".join(CLASS_NAMES) + "\n")
    return {
        "keras": str(folder / "model.keras"),
        "tflite": str(export / "model_float32.tflite"),
        "spec": spec,
        "images": images,
        "class_names": list(CLASS_NAMES),
    }


def keras_detections_by_hand(model, image, size: int = DETECTOR_LIKE_SIZE, **decoder_settings):
    """Detections of a RetinaNet on one (H, W, 3) uint8 image computed without the detector classes.

    Letterbox to ``size`` x ``size``, the model's own eager ``detect`` (``decoder_settings`` set on its decoder
    for this call only), boxes divided by the per-axis scale and clipped to the image, boxes under one pixel wide
    or high dropped, sorted by score. Returns {"boxes" (D, 4) xyxy original pixels, "scores" (D,), "classes" (D,)}.
    """
    import numpy as np

    from keras_retinanet.imaging import letterbox

    saved = {key: getattr(model.decoder, key) for key in decoder_settings}
    canvas, (scale_y, scale_x) = letterbox(image, size)
    try:
        for key, value in decoder_settings.items():
            setattr(model.decoder, key, value)
        raw = {k: np.asarray(v) for k, v in model.detect(canvas[None].astype(np.float32)).items()}
    finally:
        for key, value in saved.items():
            setattr(model.decoder, key, value)
    n = int(raw["num_detections"][0])
    return _finish(
        raw["boxes"][0, :n], raw["scores"][0, :n], raw["classes"][0, :n], (scale_y, scale_x), image
    )


def tflite_detections_by_hand(path, image, resize: str = "stretch"):
    """Detections of a keras_retinanet ``.tflite`` file on one image, run directly on a LiteRT interpreter.

    The image resized to the file's input size by ``keras_retinanet.imaging.stretch`` (the whole image, as
    MediaPipe does) or ``letterbox``, one thread, outputs in the op's order (boxes normalised ymin, xmin, ymax,
    xmax; classes; scores; count), boxes scaled to the input then divided by the resize's per-axis scale.
    """
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    from keras_retinanet.imaging import letterbox, stretch

    interpreter = Interpreter(model_path=str(path), num_threads=1)
    interpreter.allocate_tensors()
    (inp,) = interpreter.get_input_details()
    height, width = (int(v) for v in inp["shape"][1:3])
    canvas, scale = {"stretch": stretch, "letterbox": letterbox}[resize](image, (height, width))
    interpreter.set_tensor(inp["index"], canvas[None].astype(inp["dtype"]))
    interpreter.invoke()
    boxes, classes, scores, count = (
        interpreter.get_tensor(o["index"]) for o in interpreter.get_output_details()
    )
    n = int(count.reshape(-1)[0])
    ymin, xmin, ymax, xmax = boxes[0, :n].T
    pixels = np.stack([xmin * width, ymin * height, xmax * width, ymax * height], axis=1)
    return _finish(pixels, scores[0, :n], classes[0, :n].astype(np.int32), scale, image)


def _finish(boxes, scores, classes, scale, image):
    import numpy as np

    scale_y, scale_x = scale
    height, width = image.shape[:2]
    boxes = np.clip(boxes / [scale_x, scale_y, scale_x, scale_y], 0, [width, height, width, height])
    # Detections under one pixel wide or high in the original image are dropped (detectors.base.MIN_BOX_SIDE).
    keep = (boxes[:, 2] - boxes[:, 0] >= 1.0) & (boxes[:, 3] - boxes[:, 1] >= 1.0)
    order = np.argsort(-scores, kind="stable")
    order = order[keep[order]]
    return {
        "boxes": boxes[order].astype(np.float32),
        "scores": np.asarray(scores)[order],
        "classes": np.asarray(classes)[order].astype(np.int32),
    }


def require_mediapipe(module: str):
    """Import ``module`` (a part of mediapipe); skip without it (a failure under CI, which installs it)."""
    try:
        return __import__(module, fromlist=["_"])
    except ImportError as err:
        skip_missing(f"mediapipe (make install: pip install --no-deps mediapipe==1.2.3): {err}")


def assert_rows_match_one_to_one(
    got_rows, wanted_rows, box_tolerance: float, where: str, names=("got", "wanted")
):
    """Each ``(class, score, four box numbers)`` row of ``got_rows`` matches a distinct row of ``wanted_rows``:
    same class, score within 1e-4, every box number within ``box_tolerance`` (the closest such row is taken,
    highest scores first), and the two lists are as long."""
    assert len(got_rows) == len(wanted_rows) > 0, where
    unmatched = list(wanted_rows)
    for got in sorted(got_rows, key=lambda r: -r[1]):
        candidates = [
            want
            for want in unmatched
            if want[0] == got[0]
            and abs(want[1] - got[1]) <= 1e-4
            and max(abs(a - b) for a, b in zip(got[2:], want[2:])) <= box_tolerance + 1e-3
        ]
        assert candidates, f"{where}: {names[0]}'s {got} is not among {names[1]}'s detections"
        unmatched.remove(min(candidates, key=lambda w: max(abs(a - b) for a, b in zip(got[2:], w[2:]))))
