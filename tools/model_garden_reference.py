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

Every variable is then set to seeded random values (kernels ~ N(0, 1/fan_in), biases and BN betas ~ N(0, 0.1),
BN gammas ~ U(0.5, 1.5), moving means ~ N(0, 0.2), moving variances ~ U(0.5, 1.5)) and written as a
TF2 object-based checkpoint laid out like a Model Garden trainer checkpoint (``--ckpt-layout trainer``, the
default: root children ``global_step``, ``model``, ``backbone``, ``decoder``, ``head``, so variable keys start
``backbone/``, ``decoder/``, ``head/``), which Model Maker's ``load_checkpoint`` reads (checked here). Then the
model runs on ``--images`` and ``reference.npz`` gets the input tensor and the raw head outputs before decoding.

Files written under ``<out-dir>/<spec>/``:

- ``ckpt-277200.index`` / ``ckpt-277200.data-00000-of-00001``: the checkpoint;
- ``checkpoint_variables.txt``: ``tf.train.list_variables`` (key, shape), with the tf_keras variable each key
  restores into and, for the MobileNetV2 backbone, the ``keras.applications.MobileNetV2`` weight it maps to;
- ``reference.npz``: ``input`` [N, S, S, 3] float32 (what the model was fed), ``image_info`` [N, 4, 2]
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
``--resize stretch`` resizes straight to S x S instead (no padding).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np

SPECS = {
    # Model Maker SupportedModels.MOBILENET_V2 (mobilenet_v2_i256_spec).
    "mobilenet_v2": {"model_id": "MobileNetV2", "input_size": 256, "min_level": 3, "max_level": 7},
    # Model Maker SupportedModels.MOBILENET_V2_I320: levels 3-6 only.
    "mobilenet_v2_i320": {"model_id": "MobileNetV2", "input_size": 320, "min_level": 3, "max_level": 6},
    # Model Maker SupportedModels.MOBILENET_MULTI_AVG.
    "mobilenet_multi_avg": {"model_id": "MobileNetMultiAVG", "input_size": 256, "min_level": 3, "max_level": 7},
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
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
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


def _kind(var) -> str:
    name = var.name.split(":")[0]
    return name.rsplit("/", 1)[-1]


def randomize(model, seed: int) -> None:
    """Sets every variable of ``model`` to seeded random values (see module docstring)."""
    rng = np.random.default_rng(seed)
    for var in model.variables:
        shape = tuple(var.shape)
        kind = _kind(var)
        if kind == "moving_mean":
            value = rng.normal(0.0, 0.2, shape)
        elif kind == "moving_variance" or kind == "gamma":
            value = rng.uniform(0.5, 1.5, shape)
        elif kind in ("beta", "bias"):
            value = rng.normal(0.0, 0.1, shape)
        elif kind == "depthwise_kernel":
            value = rng.normal(0.0, 1.0 / np.sqrt(shape[0] * shape[1]), shape)
        elif kind in ("kernel", "pointwise_kernel"):
            value = rng.normal(0.0, 1.0 / np.sqrt(np.prod(shape[:-1])), shape)
        else:
            raise ValueError(f"unexpected variable {var.name} {shape}")
        var.assign(value.astype(var.dtype.as_numpy_dtype))


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
    """keras.applications.MobileNetV2 (alpha 1.0) weight for a MobileNetV2 backbone checkpoint key, or ''."""
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
    return f"{layer}/{weight}"


def write_variable_list(model, ckpt_path: str, out: Path, model_id: str) -> int:
    """Writes ``tf.train.list_variables`` with the variable each key restores into; returns unmatched count."""
    tf = _tf()
    by_digest = {}
    for var in model.variables:
        by_digest.setdefault(_digest(var.numpy()), []).append(var.name)
    reader = tf.train.load_checkpoint(ckpt_path)
    unmatched = 0
    lines = ["# key\tshape\ttf_keras variable restored into\tkeras.applications.MobileNetV2 weight (MNV2 only)"]
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


def preprocess(path: str, size: int, mode: str, resize: str):
    """Returns (image [S, S, 3] float32, image_info [4, 2]) as Model Maker / Model Garden make them."""
    tf = _tf()
    from official.vision.ops import preprocess_ops

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
    return image.numpy().astype(np.float32), info.numpy().astype(np.float32)


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
    parser.add_argument("--num-classes", type=int, default=91, help="91 for the COCO checkpoints (0: background)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--preprocess", choices=["modelmaker", "imagenet"], default="modelmaker")
    parser.add_argument("--resize", choices=["letterbox", "stretch"], default="letterbox")
    parser.add_argument("--ckpt-layout", choices=["trainer", "modelmaker", "model"], default="trainer")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)

    tf = _tf()
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    spec = SPECS[args.spec]
    size = spec["input_size"]
    levels = range(spec["min_level"], spec["max_level"] + 1)
    out = Path(args.out_dir) / args.spec
    out.mkdir(parents=True, exist_ok=True)

    model = build_model(spec, args.num_classes)
    randomize(model, args.seed)
    ckpt_path = make_checkpoint(model, args.ckpt_layout).write(str(out / CHECKPOINT_NAME))
    summary = {
        "spec": args.spec,
        **spec,
        "num_classes": args.num_classes,
        "num_anchors_per_location": 9,
        "seed": args.seed,
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
        pairs = [(synthetic_image(size), np.array([[size, size], [size, size], [1, 1], [0, 0]], np.float32))]
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
            diffs.append(np.abs(raw["box_outputs"][str(level)].numpy() - arrays[f"box_outputs_{level}"]).max())
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
