"""``retinanet convert torchvision|model-garden CHECKPOINT --output MODEL.keras``: other frameworks' weights as
Keras models (:mod:`keras_retinanet.convert`), or a torchvision state dict as a torch-free ``.npz`` /
``.safetensors``. ``.pth``/``.pt`` inputs need torch (``pip install 'keras-retinanet[torch]'``).
"""

from __future__ import annotations

import argparse
import os

from keras_retinanet import atomic
from keras_retinanet.model.presets import TORCHVISION_IMAGE_SIZE

_FRAMEWORKS = ("torchvision", "model-garden")
_MODEL_GARDEN_SPECS = ("mobilenet_v2", "mobilenet_multi_avg", "mobilenet_multi_avg_i384")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("framework", choices=_FRAMEWORKS, help="where the checkpoint comes from")
    parser.add_argument(
        "checkpoint",
        help="torchvision: state dict file, .pth/.pt (needs torch), .safetensors or .npz; model-garden: the "
        "TensorFlow checkpoint (PREFIX such as ckpt-277200, or its folder)",
    )
    parser.add_argument(
        "--output",
        "-o",
        required=True,
        help="MODEL.keras (a RetinaNet checkpoint) or FILE.npz / FILE.safetensors (the state dict, torch-free)",
    )
    parser.add_argument(
        "--variant",
        choices=("v1", "v2"),
        help="torchvision: insist on retinanet_resnet50_fpn (v1) or _v2; default: detected from the tensors",
    )
    parser.add_argument(
        "--spec",
        choices=_MODEL_GARDEN_SPECS,
        help="model-garden: MediaPipe Model Maker's MOBILENET_V2, MOBILENET_MULTI_AVG or its 384-px sibling; "
        "default: the backbone found in the checkpoint, at 256 px",
    )
    parser.add_argument(
        "--class-names",
        help="text file, one name per class slot of the checkpoint (default: COCO's 91 for 91 slots); slots "
        "named __background__ or N/A are dropped",
    )
    parser.add_argument(
        "--keep-unused-slots",
        action="store_true",
        help="keep every class slot, the unused ones named N/A_<slot> (a 91-class model, slot i = COCO id i)",
    )
    parser.add_argument(
        "--image-size",
        help="letterbox size N or HxW recorded in the model for evaluation, prediction and export (default: "
        f"torchvision {TORCHVISION_IMAGE_SIZE}, a multiple of 128 near torchvision's 800-px shorter side for 4:3 "
        "images; model-garden the size the checkpoint was trained at)",
    )
    parser.add_argument(
        "--batchnorm-epsilon",
        type=float,
        help="epsilon of the backbone's frozen BatchNorm; default 0 for v1 (torchvision runs its COCO v1 weights "
        "so), 1e-5 for v2. Pass 1e-5 for a v1 model trained in torchvision from ImageNet weights",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file")


def _read_class_names(path: str) -> list[str]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"class names file {path!r} does not exist")
    with open(path, encoding="utf-8") as file:
        names = [line.strip() for line in file if line.strip()]
    if not names:
        raise ValueError(f"{path}: no class names")
    return names


def _image_size(text: str):
    from keras_retinanet.imaging import parse_image_size

    height, width = parse_image_size(text)
    return height if height == width else [height, width]


def run(args: argparse.Namespace) -> int:
    output = args.output
    suffix = os.path.splitext(output)[1].lower()
    if suffix not in (".keras", ".npz", ".safetensors"):
        raise ValueError(f"--output must end in .keras, .npz or .safetensors, got {output!r}")
    if os.path.exists(output) and not args.overwrite:
        raise FileExistsError(f"{output} exists; pass --overwrite to replace it")
    if args.framework == "model-garden":
        if suffix != ".keras":
            raise ValueError(f"--output of a model-garden conversion must end in .keras, got {output!r}")
        return _convert_model_garden(args)
    if args.spec:
        raise ValueError("--spec is for model-garden checkpoints")
    if suffix == ".keras":
        return _convert_retinanet(args)
    return _resave(args)


def _resave(args: argparse.Namespace) -> int:
    from keras_retinanet.backbones.torchvision.state_dict import load_state_dict, save_state_dict

    tensors = load_state_dict(args.checkpoint)
    save_state_dict(tensors, args.output)
    print(f"{len(tensors)} tensors of {args.checkpoint} written to {args.output}")
    return 0


def _convert_retinanet(args: argparse.Namespace) -> int:
    from keras_retinanet.convert.torchvision import convert_torchvision_retinanet

    class_names = _read_class_names(args.class_names) if args.class_names else None
    model, report = convert_torchvision_retinanet(
        args.checkpoint,
        variant=args.variant,
        class_names=class_names,
        keep_unused_slots=args.keep_unused_slots,
        image_size=_image_size(args.image_size or str(TORCHVISION_IMAGE_SIZE)),
        batchnorm_epsilon=args.batchnorm_epsilon,
    )
    atomic.save_model(model, args.output)
    dropped = report["dropped_slots"]
    print(
        f"torchvision RetinaNet {report['variant']} (ResNet-{report['depth']}, {report['tensors']} tensors, "
        f"BatchNorm epsilon {report['batchnorm_epsilon']:g}) -> "
        f"{args.output}: {len(report['class_names'])} classes"
        + (f", class slots {dropped} (__background__ / N/A) dropped" if dropped else "")
    )
    return 0


def _convert_model_garden(args: argparse.Namespace) -> int:
    from keras_retinanet.convert.model_garden import convert_model_garden_retinanet

    if args.variant or args.batchnorm_epsilon is not None:
        raise ValueError("--variant and --batchnorm-epsilon are for torchvision checkpoints")
    class_names = _read_class_names(args.class_names) if args.class_names else None
    overrides = {"image_size": _image_size(args.image_size)} if args.image_size else {}
    model, report = convert_model_garden_retinanet(
        args.checkpoint,
        spec=args.spec,
        class_names=class_names,
        keep_unused_slots=args.keep_unused_slots,
        **overrides,
    )
    atomic.save_model(model, args.output)
    dropped = report["dropped_slots"]
    print(
        f"TF Model Garden RetinaNet {report['spec']} ({report['variables']} variables of {report['source']}) -> "
        f"{args.output}: {len(report['class_names'])} classes, input {model.image_size[0]}x{model.image_size[1]}"
        + (f", class channels {dropped} (__background__ / N/A) dropped" if dropped else "")
    )
    return 0
