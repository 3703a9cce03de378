"""Reference outputs of a TF Model Garden mobile RetinaNet (as MediaPipe Model Maker builds it), random weights.

Runs ONLY in the side environment that has ``tf-models-official`` (see /work/notes/model_garden_env.md), never
in this project's venv, and imports nothing from ``keras_retinanet``::

    /work/peers-mg/bin/python tools/model_garden_reference.py --spec mobilenet_v2 \\
        --images /work/shared/datasets/bccd/BCCD/JPEGImages/BloodImage_00000.jpg --out-dir /work/notes/mg_ref

For ``--spec`` it builds the Model Garden ``RetinaNetModel`` with the config of Model Maker's
``ObjectDetectorModel._get_model_config`` (mediapipe/model_maker/python/vision/object_detector/model.py) and the
spec values of ``model_spec.py`` (backbone ``model_id``, input size, min/max level) through
``official.vision.modeling.factory.build_retinanet``; the same config is in Model Garden's
``official/projects/qat/vision/configs/experiments/retinanet/coco_mobilenetv2_qat_tpu_e2e.yaml`` (and
``coco_mobilenetv3.5_avg_qat_tpu_e2e.yaml``), whose FP32 ``ckpt-277200`` Model Maker downloads.

Every variable is then set from ``recipe_values`` (numpy only, one generator per variable seeded by the crc32 of
its full checkpoint key; see its docstring) and written as a TF2 object-based checkpoint laid out like a Model
Garden trainer checkpoint (``--ckpt-layout trainer``, the default: root children ``global_step``, ``model``,
``backbone``, ``decoder``, ``head``, so variable keys start ``backbone/``, ``decoder/``, ``head/``), which Model
Maker's ``load_checkpoint`` reads (checked here, as is the QAT factory's reader; the script exits 1 unless both
give outputs identical to the model's). Which variable a key stores is found by writing distinct noise first and
matching the stored tensors (``key_to_variable``); the written file is then checked to hold exactly the recipe.
Then the model runs on ``--images`` and ``reference.npz`` gets the input tensor and the raw head outputs.

The vendored test fixture (tests/fixtures/model_garden_reference, see its README.md) is made with::

    for spec in mobilenet_v2 mobilenet_multi_avg; do
      /work/peers-mg/bin/python tools/model_garden_reference.py --spec $spec \\
          --images /work/shared/datasets/bccd/BCCD/JPEGImages/BloodImage_00000.jpg \\
          --preprocess imagenet --resize cv2-area --out-dir /work/notes/mg_ref/fixture_work \\
          --fixture-dir tests/fixtures/model_garden_reference
    done

Files written under ``<out-dir>/<spec>/``:

- ``ckpt-277200.index`` / ``ckpt-277200.data-00000-of-00001``: the checkpoint;
- ``checkpoint_variables.txt``: ``tf.train.list_variables`` (key, shape), with the tf_keras variable each key
  restores into and, for the MobileNetV2 backbone, the Keras 3 ``keras.applications.MobileNetV2`` weight;
- ``reference.npz``: ``input`` [N, S, S, 3] float32 (what the model was fed), ``image_uint8_rgb`` (``cv2-area``
  only), ``image_info`` [N, 4, 2]
  (Model Garden's: original hw, desired hw, scale yx, offset yx), ``cls_outputs_<level>``
  [N, H, W, A * num_classes] and ``box_outputs_<level>`` [N, H, W, A * 4] (raw logits and box deltas,
  inference mode), ``backbone_<level>`` (backbone endpoints), ``decoder_<level>`` (FPN outputs),
  ``anchors_<level>`` [H, W, A * 4] (Model Garden anchors, y1 x1 y2 x2 in input pixels), ``detection_*``
  (the default detection generator's NMS output, for reference only) and string entries ``image_paths``,
  ``spec``, ``preprocess``, ``resize``;
- ``summary.json``: config, output shapes and statistics, and the checkpoint checks.

Preprocessing (``--preprocess``): ``modelmaker`` (default) is Model Maker's ``Preprocessor`` in eval mode:
decode JPEG to uint8 RGB, ``normalize_image(image, offset=(0.5,), scale=(0.5,))`` i.e. x / 255 * 2 - 1 per
channel, then ``resize_and_crop_image`` (keep aspect ratio: scale = min(S / h, S / w), new size
round(hw * scale), ``tf.image.resize`` bilinear, no antialias, half-pixel centres; zero-pad bottom/right to
S x S; zero is mid-grey after normalisation). ``imagenet`` is Model Garden's own RetinaNet parser
(``retinanet_input.Parser``: ``normalize_image`` with its defaults, mean (0.485, 0.456, 0.406) and std
(0.229, 0.224, 0.225) on x / 255, RGB), the normalisation the COCO checkpoints were trained with.
``--resize stretch`` resizes straight to S x S instead (no padding). ``--resize cv2-area`` (the fixture's) reads
the JPEG with ``cv2.imread``, stretches it to S x S with ``cv2.INTER_AREA`` on the uint8 pixels, converts BGR to
RGB, and normalises in numpy float32 (``normalize_uint8``: imagenet ``(x / 255 - mean) / std``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np

from keras_retinanet._quiet import parse_args_quietly

SPECS = {
    # Model Maker SupportedModels.MOBILENET_V2 (mobilenet_v2_i256_spec).
    "mobilenet_v2": {"model_id": "MobileNetV2", "input_size": 256, "min_level": 3, "max_level": 7},
    # Model Maker SupportedModels.MOBILENET_V2_I320: levels 3-6 only.
    "mobilenet_v2_i320": {"model_id": "MobileNetV2", "input_size": 320, "min_level": 3, "max_level": 6},
    # Model Maker SupportedModels.MOBILENET_MULTI_AVG.
    "mobilenet_multi_avg": {
        "model_id": "MobileNetMultiAVG",
        "input_size": 256,
        "min_level": 3,
        "max_level": 7,
    },
    # Model Maker SupportedModels.MOBILENET_MULTI_AVG_I384.
    "mobilenet_multi_avg_i384": {
        "model_id": "MobileNetMultiAVG",
        "input_size": 384,
        "min_level": 3,
        "max_level": 7,
    },
}

CHECKPOINT_NAME = "ckpt-277200"  # the name Model Maker's specs give the released checkpoints
MODELMAKER_L2_WEIGHT_DECAY = 3e-5  # ObjectDetectorModelOptions default; Model Maker passes l2(decay / 2)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _tf():
    import tensorflow as tf

    return tf


def model_config(spec: dict, num_classes: int):
    """Model Maker's ``ObjectDetectorModel._get_model_config`` for ``spec``."""
    from official.vision import configs

    return configs.retinanet.RetinaNet(
        min_level=spec["min_level"],
        max_level=spec["max_level"],
        num_classes=num_classes,
        input_size=[spec["input_size"], spec["input_size"], 3],
        anchor=configs.retinanet.Anchor(num_scales=3, aspect_ratios=[0.5, 1.0, 2.0], anchor_size=3),
        backbone=configs.backbones.Backbone(
            type="mobilenet", mobilenet=configs.backbones.MobileNet(model_id=spec["model_id"])
        ),
        decoder=configs.decoders.Decoder(
            type="fpn",
            fpn=configs.decoders.FPN(num_filters=128, use_separable_conv=True, use_keras_layer=True),
        ),
        head=configs.retinanet.RetinaNetHead(num_filters=128, use_separable_conv=True),
        detection_generator=configs.retinanet.DetectionGenerator(),
        norm_activation=configs.common.NormActivation(activation="relu6"),
    )


def build_model(spec: dict, num_classes: int):
    """Model Maker's ``ObjectDetectorModel._build_model`` plus the dummy call of its ``load_checkpoint``."""
    tf = _tf()
    import tf_keras
    from official.vision.modeling import factory

    size = spec["input_size"]
    input_specs = tf_keras.layers.InputSpec(shape=[None, size, size, 3])
    l2 = tf_keras.regularizers.l2(MODELMAKER_L2_WEIGHT_DECAY / 2.0)
    model = factory.build_retinanet(input_specs, model_config(spec, num_classes), l2)
    model(tf.zeros([1, size, size, 3]), training=True)
    return model


GLOBAL_STEP = 277200  # the trainer's step counter in the released files' name; the recipe's global_step value
VARIABLE_SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"


def recipe_values(shapes: dict) -> dict:
    """The weights recipe: ``{checkpoint key: shape}`` -> ``{checkpoint key: numpy array}``.

    For each FULL checkpoint key (e.g. ``backbone/layer_with_weights-0/_conv0/kernel/.ATTRIBUTES/VARIABLE_VALUE``)
    ``rng = np.random.default_rng(zlib.crc32(key.encode()))`` (crc32 of the key's UTF-8 bytes, one fresh generator
    per key, one draw of the whole shape). The variable name is the path part just before ``/.ATTRIBUTES``:

    - ``global_step``: ``np.array(277200, np.int64)`` (a scalar; no draw);
    - ``moving_mean``: ``rng.normal(0, 0.2, shape)``;
    - ``moving_variance`` and ``gamma``: ``rng.uniform(0.5, 1.5, shape)``;
    - ``beta`` and ``bias``: ``rng.normal(0, 0.1, shape)``;
    - ``depthwise_kernel`` (kh, kw, C, 1): ``rng.normal(0, 1 / sqrt(kh * kw), shape)``;
    - ``kernel`` and ``pointwise_kernel``: ``rng.normal(0, 1 / sqrt(prod(shape[:-1])), shape)``;

    every float drawn in float64 by numpy, then cast ``.astype(np.float32)``. Any other name is an error.
    """
    import zlib

    out = {}
    for key, shape in shapes.items():
        shape = tuple(int(d) for d in shape)
        name = key.split("/.ATTRIBUTES")[0].rsplit("/", 1)[-1]
        rng = np.random.default_rng(zlib.crc32(key.encode()))
        if name == "global_step":
            out[key] = np.array(GLOBAL_STEP, np.int64)
            continue
        if name == "moving_mean":
            value = rng.normal(0.0, 0.2, shape)
        elif name in ("moving_variance", "gamma"):
            value = rng.uniform(0.5, 1.5, shape)
        elif name in ("beta", "bias"):
            value = rng.normal(0.0, 0.1, shape)
        elif name == "depthwise_kernel":
            value = rng.normal(0.0, 1.0 / np.sqrt(shape[0] * shape[1]), shape)
        elif name in ("kernel", "pointwise_kernel"):
            value = rng.normal(0.0, 1.0 / np.sqrt(np.prod(shape[:-1])), shape)
        else:
            raise ValueError(f"no recipe for {key} {shape}")
        out[key] = value.astype(np.float32)
    return out


def checkpoint_shapes(ckpt_path: str) -> dict:
    """``{key: shape}`` of every variable in a checkpoint (``tf.train.list_variables`` order, object graph left out)."""
    tf = _tf()
    return {
        key: [int(d) for d in shape]
        for key, shape in tf.train.list_variables(ckpt_path)
        if key != "_CHECKPOINTABLE_OBJECT_GRAPH"
    }


def _checkpoint_variables(model, ckpt) -> list:
    variables = list(model.variables)
    if getattr(ckpt, "global_step", None) is not None:
        variables.append(ckpt.global_step)
    return variables


def key_to_variable(model, ckpt, scratch_prefix: str) -> dict:
    """Which Python variable each checkpoint key of ``ckpt`` stores: ``{key: tf.Variable}``.

    Every variable is first set to distinct seeded noise, ``ckpt`` is written to ``scratch_prefix`` and each key's
    stored tensor is matched to the one variable with the same bytes and shape (the digest matching of
    ``write_variable_list``). Fails unless keys and variables match one to one.
    """
    tf = _tf()
    rng = np.random.default_rng(12345)
    variables = _checkpoint_variables(model, ckpt)
    for var in variables:
        if var.dtype.is_floating:
            var.assign(rng.standard_normal(tuple(var.shape)).astype(var.dtype.as_numpy_dtype))
    by_digest = {}
    for var in variables:
        by_digest.setdefault(_digest(var.numpy()), []).append(var)
    path = ckpt.write(scratch_prefix)
    reader = tf.train.load_checkpoint(path)
    mapping = {}
    for key in checkpoint_shapes(path):
        found = by_digest.get(_digest(np.asarray(reader.get_tensor(key))), [])
        if len(found) != 1:
            raise RuntimeError(f"checkpoint key {key} matches {len(found)} variables")
        mapping[key] = found[0]
    mapped = {id(v) for v in mapping.values()}
    missing = [v.name for v in variables if id(v) not in mapped]
    if missing or len(mapped) != len(mapping):
        raise RuntimeError(
            f"variables without a key: {missing}; keys {len(mapping)}, variables {len(mapped)}"
        )
    for file in Path(path).parent.glob(Path(path).name + ".*"):
        file.unlink()
    return mapping


def assign_recipe(model, ckpt, scratch_prefix: str) -> dict:
    """Sets every variable that ``ckpt`` saves to ``recipe_values`` of its key; returns ``{key: shape}``."""
    mapping = key_to_variable(model, ckpt, scratch_prefix)
    shapes = {key: [int(d) for d in var.shape] for key, var in mapping.items()}
    values = recipe_values(shapes)
    for key, var in mapping.items():
        if values[key].dtype != var.dtype.as_numpy_dtype:
            raise RuntimeError(f"{key}: recipe dtype {values[key].dtype}, variable {var.dtype}")
        var.assign(values[key])
    return shapes


def make_checkpoint(model, layout: str):
    tf = _tf()
    if layout == "trainer":
        # official/core/base_trainer.py Trainer: Checkpoint(global_step, model, optimizer, **model.checkpoint_items)
        # (the optimizer and its slot variables are left out here).
        return tf.train.Checkpoint(
            global_step=tf.Variable(277200, dtype=tf.int64), model=model, **model.checkpoint_items
        )
    if layout == "modelmaker":
        # ObjectDetectorModel.save_checkpoint
        return tf.train.Checkpoint(backbone=model.backbone, decoder=model.decoder, head=model.head)
    if layout == "model":
        return tf.train.Checkpoint(model=model)
    raise ValueError(layout)


def modelmaker_load(model, path: str, include_last_layer: bool) -> None:
    """``ObjectDetectorModel.load_checkpoint`` of Model Maker (after its dummy call)."""
    tf = _tf()
    if include_last_layer:
        head = model.head
    else:
        head_classifier = tf.train.Checkpoint(depthwise_kernel=model.head._classifier.depthwise_kernel)
        head = tf.train.Checkpoint(
            _classifier=head_classifier,
            _box_norms=model.head._box_norms,
            _box_regressor=model.head._box_regressor,
            _cls_convs=model.head._cls_convs,
            _cls_norms=model.head._cls_norms,
            _box_convs=model.head._box_convs,
        )
    ckpt = tf.train.Checkpoint(backbone=model.backbone, decoder=model.decoder, head=head)
    ckpt.read(path).expect_partial().assert_existing_objects_matched()


def _digest(array: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(array).tobytes() + str(array.shape).encode()).hexdigest()


def keras_applications_name(key: str) -> str:
    """Keras 3 keras.applications.MobileNetV2 (alpha 1.0) weight for a MobileNetV2 backbone key, or ''."""
    parts = key.split("/")
    if parts[0] != "backbone" or not parts[1].startswith("layer_with_weights-"):
        return ""
    index = int(parts[1].split("-")[1])
    sub, weight = parts[2], parts[3]
    if index == 0:
        layer = {"_conv0": "Conv1", "_norm0": "bn_Conv1"}[sub]
    elif index == 18:
        layer = {"_conv0": "Conv_1", "_norm0": "Conv_1_bn"}[sub]
    else:
        prefix = "expanded_conv_" if index == 1 else f"block_{index - 1}_"
        role = {
            "_conv0": "expand",
            "_norm0": "expand_BN",
            "_conv1": "depthwise",
            "_norm1": "depthwise_BN",
            "_conv2": "project",
            "_norm2": "project_BN",
        }[sub]
        layer = prefix + role
    if weight == "depthwise_kernel":
        weight = "kernel"  # Keras 3 DepthwiseConv2D names its (k, k, C, 1) weight "kernel"
    return f"{layer}/{weight}"


def write_variable_list(model, ckpt_path: str, out: Path, model_id: str) -> int:
    """Writes ``tf.train.list_variables`` with the variable each key restores into; returns unmatched count."""
    tf = _tf()
    by_digest = {}
    for var in model.variables:
        by_digest.setdefault(_digest(var.numpy()), []).append(var.name)
    reader = tf.train.load_checkpoint(ckpt_path)
    unmatched = 0
    lines = [
        "# key\tshape\ttf_keras variable restored into\tKeras 3 keras.applications.MobileNetV2 weight (MNV2 only)"
    ]
    for key, shape in tf.train.list_variables(ckpt_path):
        if key == "_CHECKPOINTABLE_OBJECT_GRAPH":
            continue
        short = key.replace("/.ATTRIBUTES/VARIABLE_VALUE", "")
        names = by_digest.get(_digest(np.asarray(reader.get_tensor(key))), [])
        if short != "global_step" and len(names) != 1:
            unmatched += 1
        kapps = keras_applications_name(short) if model_id == "MobileNetV2" else ""
        lines.append(f"{key}\t{list(shape)}\t{','.join(names) or '-'}\t{kapps}")
    out.write_text("\n".join(lines) + "\n")
    return unmatched


def load_uint8_cv2_area(path: str, size: int) -> np.ndarray:
    """The fixture image: ``cv2.imread`` (BGR), ``cv2.resize(.., (S, S), interpolation=cv2.INTER_AREA)`` (plain
    stretch, aspect ratio not kept), ``cv2.cvtColor(.., cv2.COLOR_BGR2RGB)``: uint8 RGB [S, S, 3]."""
    import cv2

    bgr = cv2.imread(path, cv2.IMREAD_COLOR)
    if bgr is None:
        raise FileNotFoundError(path)
    return cv2.cvtColor(cv2.resize(bgr, (size, size), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)


def normalize_uint8(image: np.ndarray, mode: str) -> np.ndarray:
    """uint8 RGB -> float32 network input, in numpy float32: ``imagenet``: ``(x / 255 - mean) / std`` with
    ``mean = (0.485, 0.456, 0.406)``, ``std = (0.229, 0.224, 0.225)``; ``modelmaker``: ``(x / 255 - 0.5) / 0.5``."""
    x = image.astype(np.float32) / np.float32(255.0)
    if mode == "imagenet":
        return (x - np.array(IMAGENET_MEAN, np.float32)) / np.array(IMAGENET_STD, np.float32)
    if mode == "modelmaker":
        return (x - np.float32(0.5)) / np.float32(0.5)
    raise ValueError(mode)


def preprocess(path: str, size: int, mode: str, resize: str):
    """Returns (image [S, S, 3] float32, image_info [4, 2], uint8 RGB [S, S, 3] or None) as Model Maker / Model
    Garden make them (``letterbox``, ``stretch``) or as the vendored fixture does (``cv2-area``)."""
    tf = _tf()
    from official.vision.ops import preprocess_ops

    if resize == "cv2-area":
        pixels = load_uint8_cv2_area(path, size)
        h, w = tf.io.extract_jpeg_shape(tf.io.read_file(path)).numpy()[:2]
        info = np.array([[h, w], [size, size], [size / h, size / w], [0, 0]], np.float32)
        return normalize_uint8(pixels, mode), info, pixels

    image = tf.io.decode_jpeg(tf.io.read_file(path), channels=3)  # uint8 RGB
    if mode == "modelmaker":
        image = preprocess_ops.normalize_image(image, offset=(0.5,), scale=(0.5,))
    elif mode == "imagenet":
        image = preprocess_ops.normalize_image(image, offset=IMAGENET_MEAN, scale=IMAGENET_STD)
    else:
        raise ValueError(mode)
    if resize == "letterbox":
        padded = preprocess_ops.compute_padded_size([size, size], 1)  # S is a multiple of 2**max_level
        image, info = preprocess_ops.resize_and_crop_image(
            image, [size, size], padded_size=padded, aug_scale_min=1.0, aug_scale_max=1.0
        )
    elif resize == "stretch":
        shape = tf.cast(tf.shape(image)[:2], tf.float32)
        image = tf.image.resize(image, [size, size], method="bilinear")
        info = tf.stack([shape, [size, size], [size, size] / shape, [0.0, 0.0]])
    else:
        raise ValueError(resize)
    return image.numpy().astype(np.float32), info.numpy().astype(np.float32), None


def write_fixture(
    directory: Path, spec_name: str, shapes: dict, pixels: np.ndarray, arrays: dict, levels, stride: int
):
    """``<spec>_variables.json`` ({key: shape}, compact) and ``<spec>_outputs.npz`` (see tests/fixtures/
    model_garden_reference/README.md) for image 0 of ``arrays``."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{spec_name}_variables.json").write_text(json.dumps(shapes, separators=(",", ":")) + "\n")
    fixture = {"image_uint8_rgb": pixels, "subsample_stride": np.array(stride, np.int64)}
    for level in levels:
        fixture[f"box_outputs_{level}"] = arrays[f"box_outputs_{level}"][0].astype(np.float32)
        cls = arrays[f"cls_outputs_{level}"][0].astype(np.float32)
        fixture[f"cls_outputs_{level}_every{stride}"] = cls.reshape(-1)[::stride]
        fixture[f"cls_outputs_{level}_shape"] = np.array(cls.shape, np.int64)
    for level in (3, 4, 5):
        feat = arrays[f"backbone_{level}"][0].astype(np.float32)
        fixture[f"backbone_{level}_every{stride}"] = feat.reshape(-1)[::stride]
        fixture[f"backbone_{level}_shape"] = np.array(feat.shape, np.int64)
    path = directory / f"{spec_name}_outputs.npz"
    np.savez_compressed(path, **fixture)
    return path


def synthetic_image(size: int) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    return np.stack([2 * xx - 1, 2 * yy - 1, np.sin(6 * xx) * np.cos(4 * yy)], axis=-1)


def _stats(array: np.ndarray) -> dict:
    return {
        "shape": list(array.shape),
        "mean": float(array.mean()),
        "std": float(array.std()),
        "min": float(array.min()),
        "max": float(array.max()),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spec", choices=sorted(SPECS), default="mobilenet_v2")
    parser.add_argument("--images", nargs="*", default=[], help="JPEG paths (none: one synthetic image)")
    parser.add_argument("--out-dir", default="/work/notes/mg_ref")
    parser.add_argument(
        "--num-classes", type=int, default=91, help="91 for the COCO checkpoints (0: background)"
    )
    parser.add_argument("--preprocess", choices=["modelmaker", "imagenet"], default="modelmaker")
    parser.add_argument("--resize", choices=["letterbox", "stretch", "cv2-area"], default="letterbox")
    parser.add_argument("--ckpt-layout", choices=["trainer", "modelmaker", "model"], default="trainer")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--fixture-dir",
        help="also write <spec>_variables.json and <spec>_outputs.npz here (the vendored test fixture; needs one "
        "image, --preprocess imagenet --resize cv2-area, the trainer layout and 91 classes)",
    )
    parser.add_argument(
        "--fixture-stride", type=int, default=11, help="subsampling of the flattened cls/backbone"
    )
    args = parse_args_quietly(parser, argv)
    if args.fixture_dir and not (
        len(args.images) == 1
        and args.preprocess == "imagenet"
        and args.resize == "cv2-area"
        and args.ckpt_layout == "trainer"
        and args.num_classes == 91
    ):
        parser.error(
            "--fixture-dir needs one image, --preprocess imagenet --resize cv2-area, trainer layout, 91 classes"
        )

    tf = _tf()
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    spec = SPECS[args.spec]
    size = spec["input_size"]
    levels = range(spec["min_level"], spec["max_level"] + 1)
    out = Path(args.out_dir) / args.spec
    out.mkdir(parents=True, exist_ok=True)

    model = build_model(spec, args.num_classes)
    ckpt = make_checkpoint(model, args.ckpt_layout)
    shapes = assign_recipe(model, ckpt, str(out / "scratch-mapping"))
    ckpt_path = ckpt.write(str(out / CHECKPOINT_NAME))
    # What was written is the recipe, key by key (values and dtypes), and nothing else.
    if checkpoint_shapes(ckpt_path) != shapes:
        raise RuntimeError("written checkpoint keys/shapes differ from the mapped ones")
    reader = tf.train.load_checkpoint(ckpt_path)
    for key, value in recipe_values(shapes).items():
        stored = np.asarray(reader.get_tensor(key))
        if stored.dtype != value.dtype or not np.array_equal(stored, value):
            raise RuntimeError(f"{key}: stored value is not the recipe's")
    summary = {
        "spec": args.spec,
        **spec,
        "num_classes": args.num_classes,
        "num_anchors_per_location": 9,
        "weights": "recipe_values (crc32 of each checkpoint key)",
        "preprocess": args.preprocess,
        "resize": args.resize,
        "ckpt_layout": args.ckpt_layout,
        "checkpoint": ckpt_path,
        "tensorflow": tf.__version__,
    }
    summary["unmatched_checkpoint_keys"] = write_variable_list(
        model, ckpt_path, out / "checkpoint_variables.txt", spec["model_id"]
    )
    summary["num_checkpoint_variables"] = len(tf.train.list_variables(ckpt_path)) - 1
    summary["num_model_variables"] = len(model.variables)

    # Inputs.
    if args.images:
        pairs = [preprocess(p, size, args.preprocess, args.resize) for p in args.images]
    else:
        pairs = [
            (synthetic_image(size), np.array([[size, size], [size, size], [1, 1], [0, 0]], np.float32), None)
        ]
    images = np.stack([p[0] for p in pairs])
    image_info = np.stack([p[1] for p in pairs])

    # Forward pass, inference mode, as RetinaNetModel.call does it.
    outputs = model(
        tf.constant(images),
        image_shape=tf.constant(image_info[:, 1, :]),
        output_intermediate_features=True,
        training=False,
    )
    arrays = {"input": images, "image_info": image_info}
    for key, value in outputs.items():
        if isinstance(value, dict):
            for level, tensor in value.items():
                arrays[f"{key}_{level}"] = tensor.numpy()
        else:
            arrays[key] = value.numpy()
    from official.vision.ops import anchor as anchor_ops

    boxes = anchor_ops.Anchor(
        min_level=spec["min_level"],
        max_level=spec["max_level"],
        num_scales=3,
        aspect_ratios=[0.5, 1.0, 2.0],
        anchor_size=3,
        image_size=(size, size),
    ).multilevel_boxes
    for level, tensor in boxes.items():
        arrays[f"anchors_{level}"] = tensor.numpy()

    # Checks: Model Maker's reader restores the checkpoint into fresh models, and they give the same outputs.
    checks = {}
    for include_last_layer in (True, False):
        fresh = build_model(spec, args.num_classes)
        modelmaker_load(fresh, ckpt_path, include_last_layer)
        raw = fresh(tf.constant(images), image_shape=tf.constant(image_info[:, 1, :]), training=False)
        diffs = []
        for level in levels:
            if include_last_layer:
                diffs.append(
                    np.abs(raw["cls_outputs"][str(level)].numpy() - arrays[f"cls_outputs_{level}"]).max()
                )
            diffs.append(
                np.abs(raw["box_outputs"][str(level)].numpy() - arrays[f"box_outputs_{level}"]).max()
            )
        checks[f"modelmaker_load_include_last_layer_{include_last_layer}_max_abs_diff"] = float(max(diffs))
    if args.ckpt_layout == "trainer":
        # The QAT factory's reader of ``pretrained_original_checkpoint`` (official/projects/qat/vision/modeling/
        # factory.py build_qat_retinanet): Checkpoint(model=model, **model.checkpoint_items).
        fresh = build_model(spec, args.num_classes)
        tf.train.Checkpoint(model=fresh, **fresh.checkpoint_items).read(
            ckpt_path
        ).expect_partial().assert_existing_objects_matched()
        raw = fresh(tf.constant(images), image_shape=tf.constant(image_info[:, 1, :]), training=False)
        checks["qat_factory_load_max_abs_diff"] = float(
            max(
                np.abs(raw["cls_outputs"][str(level)].numpy() - arrays[f"cls_outputs_{level}"]).max()
                for level in levels
            )
        )
    summary["checks"] = checks

    pixels = [p[2] for p in pairs]
    if all(p is not None for p in pixels):
        arrays["image_uint8_rgb"] = np.stack(pixels)
    if args.fixture_dir:
        fixture_path = write_fixture(
            Path(args.fixture_dir), args.spec, shapes, pixels[0], arrays, levels, args.fixture_stride
        )
        summary["fixture"] = {"npz": str(fixture_path), "npz_bytes": fixture_path.stat().st_size}
        summary["fixture"]["json_bytes"] = (
            (Path(args.fixture_dir) / f"{args.spec}_variables.json").stat().st_size
        )

    arrays["image_paths"] = np.array(args.images or ["<synthetic>"])
    arrays["spec"] = np.array(args.spec)
    arrays["preprocess"] = np.array(args.preprocess)
    arrays["resize"] = np.array(args.resize)
    np.savez(out / "reference.npz", **arrays)
    summary["arrays"] = {
        k: _stats(v) for k, v in arrays.items() if v.dtype.kind == "f" and not k.startswith("detection")
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k != "arrays"}, indent=2))
    if summary["unmatched_checkpoint_keys"] or any(v != 0.0 for v in checks.values()):
        print("FAILED: a reader check or the key/variable matching failed", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
