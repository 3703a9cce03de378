"""The RetinaNet detector as one Keras model: raw outputs for training, decoded detections for prediction."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import keras
import numpy as np
from keras import ops

from keras_retinanet.backbones.registry import build_backbone
from keras_retinanet.conventions import DEFAULT_IMAGE_SIZE, fallback_class_names
from keras_retinanet.imaging import MIN_IMAGE_SIDE, parse_image_size
from keras_retinanet.model.anchors import AnchorGenerator
from keras_retinanet.model.box_coder import BoxCoder
from keras_retinanet.model.decode import DetectionDecoder
from keras_retinanet.model.layers import BoxHead, ClassificationHead, FeaturePyramid
from keras_retinanet.model.losses import BoxRegressionLoss, FocalLoss
from keras_retinanet.model.matching import Matcher
from keras_retinanet.model.targets import LabelEncoder

# Inputs are padded to a multiple of the coarsest stride, so that every level has exactly ceil(H / stride) cells
# whatever the backbone's padding: anchors follow from the image size alone, in the model and in tf.data.
SIZE_DIVISOR = 32


@keras.saving.register_keras_serializable(package="keras_retinanet")
class PadToMultiple(keras.layers.Layer):
    """Zero-pads (B, H, W, C) images at the bottom and right to multiples of ``divisor``; boxes do not move."""

    def __init__(self, divisor: int = SIZE_DIVISOR, **kwargs):
        super().__init__(**kwargs)
        self.divisor = int(divisor)

    def call(self, images):
        shape = ops.shape(images)
        pad_h = (-shape[1]) % self.divisor
        pad_w = (-shape[2]) % self.divisor
        return ops.pad(images, [[0, 0], [0, pad_h], [0, pad_w], [0, 0]])

    def compute_output_shape(self, input_shape):
        def padded(size):
            return None if size is None else -(-size // self.divisor) * self.divisor

        return (input_shape[0], padded(input_shape[1]), padded(input_shape[2]), input_shape[3])

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(divisor=self.divisor)
        return config


def _serialize(obj):
    return keras.saving.serialize_keras_object(obj)


def _deserialize(config):
    return config if not isinstance(config, dict) else keras.saving.deserialize_keras_object(config)


@keras.saving.register_keras_serializable(package="keras_retinanet")
class RetinaNet(keras.Model):
    """RetinaNet (Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017).

    ``model(images)`` returns the **raw training outputs** ``{"classification": (B, N, K) logits,
    "box_regression": (B, N, 4) deltas}``, one row per anchor; ``predict`` and ``detect`` decode detections.

    Args:
        num_classes: number of object classes K (no background class).
        backbone: a name from ``keras_retinanet.available_backbones()`` or a ``keras.Model`` that maps
            (B, H, W, 3) RGB pixels in [0, 255] to [C3, C4, C5] (strides 8, 16, 32).
        backbone_weights: for a named backbone, ``"imagenet"`` (Keras' or torch's cache), ``None`` (from
            scratch) or a local weights file.
        backbone_kwargs, backbone_batchnorm_momentum, backbone_feature_layers, input_normalization: for a
            named backbone, see ``build_backbone``.
        class_names: K names, saved with the model.
        p6_source: ``"c5"`` (paper, torchvision v2) or ``"p5"`` (torchvision v1).
        fpn_padding, fpn_batchnorm, separable_convs, activation: see ``FeaturePyramid`` and the heads.
        head_depth, head_channels, use_group_norm, head_batchnorm: see the heads (``head_channels``
            defaults to ``fpn_channels``).
        anchor_generator, box_coder, matcher, decoder: parts; ``None`` builds the paper's default.
        image_size: the (int or (H, W)) input size the model is trained for; evaluation, prediction and export
            letterbox images to it (the ``image_size`` property). ``None``: not recorded (``DEFAULT_IMAGE_SIZE``).

    Images are (B, H, W, 3) RGB, uint8 or float in [0, 255], any size; the model normalises them and pads them
    to a multiple of 32 at the bottom and right.
    """

    def __init__(
        self,
        num_classes: int,
        backbone: str | keras.Model = "resnet50",
        backbone_weights: str | None = "imagenet",
        backbone_kwargs: dict | None = None,
        backbone_batchnorm_momentum: float | None = 0.9,
        backbone_feature_layers: Sequence[str] | None = None,
        input_normalization: str | None = None,
        class_names: Sequence[str] | None = None,
        fpn_channels: int = 256,
        p6_source: str = "c5",
        fpn_padding: str = "same",
        fpn_batchnorm: bool = False,
        head_depth: int = 4,
        head_channels: int | None = None,
        use_group_norm: bool = False,
        group_norm_epsilon: float = 1e-5,
        head_batchnorm: bool = False,
        separable_convs: bool = False,
        activation: str = "relu",
        prior_probability: float = 0.01,
        anchor_generator: AnchorGenerator | None = None,
        box_coder: BoxCoder | None = None,
        matcher: Matcher | None = None,
        decoder: DetectionDecoder | None = None,
        image_size: int | Sequence[int] | None = None,
        **kwargs,
    ):
        num_classes, class_names, image_size = _check_arguments(num_classes, class_names, image_size)
        anchor_generator = _checked_anchor_generator(anchor_generator)
        head_channels = head_channels or fpn_channels
        backbone_kwargs = dict(backbone_kwargs or {})
        backbone_name = backbone if isinstance(backbone, str) else None
        backbone_model = (
            build_backbone(
                backbone,
                weights=backbone_weights,
                batchnorm_momentum=backbone_batchnorm_momentum,
                feature_layers=backbone_feature_layers,
                normalization=input_normalization,
                **backbone_kwargs,
            )
            if backbone_name
            else _deserialize(backbone)
        )
        feature_pyramid = FeaturePyramid(
            fpn_channels,
            p6_source=p6_source,
            padding=fpn_padding,
            separable=separable_convs,
            batchnorm=fpn_batchnorm,
            activation=activation,
            name="feature_pyramid",
        )
        classification_head, box_head = _heads(
            num_classes,
            anchor_generator.num_anchors_per_location,
            prior_probability,
            depth=head_depth,
            channels=head_channels,
            use_group_norm=use_group_norm,
            group_norm_epsilon=group_norm_epsilon,
            batchnorm_per_level=head_batchnorm,
            separable=separable_convs,
            activation=activation,
        )

        images = keras.Input((None, None, 3), name="images")
        padded = PadToMultiple(SIZE_DIVISOR, name="pad_to_multiple")(images)
        pyramid = feature_pyramid(backbone_model(padded))
        outputs = {"classification": classification_head(pyramid), "box_regression": box_head(pyramid)}
        super().__init__(inputs=images, outputs=outputs, **kwargs)

        self.num_classes = int(num_classes)
        self.class_names = list(class_names) if class_names is not None else fallback_class_names(num_classes)
        self.backbone_name = backbone_name
        self.backbone_kwargs = backbone_kwargs
        self.backbone_batchnorm_momentum = backbone_batchnorm_momentum
        self.backbone_feature_layers = list(backbone_feature_layers) if backbone_feature_layers else None
        self.input_normalization = input_normalization
        self.backbone = backbone_model
        self.fpn_channels = fpn_channels
        self.p6_source = p6_source
        self.fpn_padding = fpn_padding
        self.fpn_batchnorm = bool(fpn_batchnorm)
        self.head_depth = head_depth
        self.head_channels = head_channels
        self.use_group_norm = use_group_norm
        self.group_norm_epsilon = float(group_norm_epsilon)
        self.head_batchnorm = bool(head_batchnorm)
        self.separable_convs = bool(separable_convs)
        self.activation = activation
        self.prior_probability = prior_probability
        self.anchor_generator = anchor_generator
        self.box_coder = _deserialize(box_coder) or BoxCoder()
        self.matcher = _deserialize(matcher) or Matcher()
        self.decoder = _deserialize(decoder) or DetectionDecoder()
        self._given_image_size = image_size

    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W) that evaluation, prediction and export letterbox images to: the ``image_size`` given (an int N
        is N x N), else ``DEFAULT_IMAGE_SIZE``."""
        return parse_image_size(
            DEFAULT_IMAGE_SIZE if self._given_image_size is None else self._given_image_size
        )

    def label_encoder(self) -> LabelEncoder:
        """The label encoder that matches this model's anchors, box coding and matching rule."""
        return LabelEncoder(self.anchor_generator, self.box_coder, self.matcher)

    def compile(self, optimizer="sgd", loss=None, **kwargs):
        """``keras.Model.compile`` with ``{"classification": FocalLoss(), "box_regression":
        BoxRegressionLoss()}`` as the default ``loss``."""
        if loss is None:
            loss = {"classification": FocalLoss(), "box_regression": BoxRegressionLoss()}
        super().compile(optimizer=optimizer, loss=loss, **kwargs)

    def compile_from_config(self, config):
        # Keras' own refuses a custom compile(): a reloaded .keras file would lose its optimiser and its state.
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.built:
            self.optimizer.build(self.trainable_variables)

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        import tensorflow as tf

        if iterator is not None and self._distribute_strategy is None:
            # Without a strategy Keras creates the loss trackers inside the first trace of the train step, and
            # TensorFlow traces a step that creates variables twice: build them from the data's spec first.
            spec = getattr(getattr(iterator, "_distributed_dataset", None), "element_spec", None)
            if spec is not None:
                self._symbolic_build(data_batch=spec)
            return
        # Keras builds the model from the first batch averaged over replicas with an eager strategy.reduce(),
        # which fails under MultiWorkerMirroredStrategy (keras-team/keras#20585); the local share has its shapes.
        if iterator is not None and self._distribute_strategy is not None:
            for _, _, it in iterator:
                data_batch = keras.tree.map_structure(
                    lambda x: (
                        self.distribute_strategy.experimental_local_results(x)[0]
                        if isinstance(x, tf.distribute.DistributedValues)
                        else x
                    ),
                    next(it),
                )
                break
            iterator = None
        super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    def train_step(self, data):
        logs = super().train_step(data)
        import tensorflow as tf

        if isinstance(self._distribute_strategy, tf.distribute.MultiWorkerMirroredStrategy):
            # Shape (1,) so that Keras' cross-worker mean over axis 0 works (keras-team/keras#20585).
            logs = {name: ops.reshape(value, (1,)) for name, value in logs.items()}
        return logs

    def padded_shape(self, image_shape):
        """(H, W) of the network input after padding; ints or scalar tensors."""
        return tuple((size + SIZE_DIVISOR - 1) // SIZE_DIVISOR * SIZE_DIVISOR for size in image_shape)

    def decode(self, outputs: dict, image_shape) -> dict:
        """Decodes raw outputs of images of size ``image_shape`` = (H, W) (before padding).

        Returns the decoder's dict: ``boxes`` (B, M, 4) xyxy pixels of the input image, ``scores`` (B, M),
        ``classes`` (B, M) int32 (-1 for padding rows), ``num_detections`` (B,).
        """
        padded = self.padded_shape(image_shape)
        return self.decoder(
            outputs["classification"],
            outputs["box_regression"],
            self.anchor_generator(image_shape=padded),
            self.anchor_generator.level_sizes(padded),
            self.box_coder,
            image_shape=image_shape,
        )

    def detect(self, images) -> dict:
        """Runs the network and decodes: images -> detections (see ``decode``), as tensors.

        ``images``: a (B, H, W, 3) batch, one (H, W, 3) image (its detections then have no batch axis) or a
        list of (H, W, 3) images of any sizes (one row per image, in order). Pixels are RGB, uint8 or float in
        [0, 255]; boxes are in each image's own pixels. Anything else raises a one-line ``ValueError``.

        Eagerly this runs the :meth:`inference_graph`; traced (``tf.function``, an export) this model's own graph.
        """
        batches, single = image_batches(images, "detect")
        model = self if _is_symbolic(batches[0][1]) else self.inference_graph()
        return _in_order([model._detect_batch(batch) for _, batch in batches], batches, single, tensors=True)

    def _detect_batch(self, images) -> dict:
        """This model's own network and decoder on a checked (B, H, W, 3) batch."""
        images = ops.convert_to_tensor(images)
        shape = images.shape[1:3] if _is_static(images.shape[1:3]) else ops.shape(images)[1:3]
        return self.decode(self(images, training=False), shape)

    def predict(self, x, *args, **kwargs):
        """``keras.Model.predict`` that always decodes: images -> detections as numpy arrays (see ``decode``).

        ``x`` is what :meth:`detect` takes, or a ``tf.data.Dataset`` / ``keras.utils.PyDataset`` of image
        batches. It runs the :meth:`inference_graph` (each new image size retraces once).
        """
        model = self.inference_graph()
        if _is_dataset(x):
            return keras.Model.predict(model, x, *args, **kwargs)
        batches, single = image_batches(x, "predict")
        outputs = [keras.Model.predict(model, np.asarray(batch), *args, **kwargs) for _, batch in batches]
        return _in_order(outputs, batches, single, tensors=False)

    def predict_step(self, data):
        images = data[0] if isinstance(data, (tuple, list)) else data
        if isinstance(images, dict):
            images = images["images"]
        return self._detect_batch(images)

    def inference_graph(self, precision: str | None = None) -> RetinaNet:
        """The copy of this model that ``predict`` and ``detect`` run: BatchNorm folded into the convolutions
        (``inference_graph.cached_inference_model``: kept while this model lives, never with stale weights), in
        ``precision`` ("float32" or "bf16"; None: "bf16" for a model built under ``mixed_bfloat16``). It decodes
        with this model's own parts; a model that is itself such a copy returns itself.
        """
        if getattr(self, "_inference_folds", None) is not None:
            return self
        from keras_retinanet.model.inference_graph import cached_inference_model

        if precision is None:
            precision = "bf16" if self.compute_dtype == "bfloat16" else "float32"
        graph = cached_inference_model(self, precision)
        for part in ("anchor_generator", "box_coder", "decoder"):
            if getattr(graph, part) is not getattr(self, part):
                setattr(graph, part, getattr(self, part))
                graph.predict_function = None  # Keras' traced predict read the old part: trace again
        return graph

    def get_config(self) -> dict:
        plain = ("name", "trainable", "num_classes", "backbone_kwargs", "backbone_batchnorm_momentum")
        plain += (
            "backbone_feature_layers",
            "input_normalization",
            "class_names",
            "fpn_channels",
            "p6_source",
        )
        plain += ("fpn_padding", "fpn_batchnorm", "head_depth", "head_channels", "use_group_norm")
        plain += (
            "group_norm_epsilon",
            "head_batchnorm",
            "separable_convs",
            "activation",
            "prior_probability",
        )
        parts = ("anchor_generator", "box_coder", "matcher", "decoder")
        return {
            **{key: getattr(self, key) for key in plain},
            "backbone": self.backbone_name if self.backbone_name else _serialize(self.backbone),
            # The weights travel in the .keras file; reloading must not download ImageNet weights again.
            "backbone_weights": None,
            **{key: _serialize(getattr(self, key)) for key in parts},
            "image_size": self._given_image_size,
        }

    @classmethod
    def from_config(cls, config: dict) -> RetinaNet:
        # Files saved before the option existed were built with Keras' GroupNormalization default.
        config = {"group_norm_epsilon": 1e-3, **config}
        return cls(**config)


# The levels FeaturePyramid makes (P3..P7): the anchors must have one level per pyramid level.
PYRAMID_LEVELS = [3, 4, 5, 6, 7]


def _heads(num_classes: int, num_anchors: int, prior_probability: float, **head_args) -> tuple:
    """(ClassificationHead, BoxHead), sharing ``head_args`` (depth, channels, normalisation, activation)."""
    classification_head = ClassificationHead(
        num_classes,
        num_anchors=num_anchors,
        prior_probability=prior_probability,
        name="classification_head",
        **head_args,
    )
    return classification_head, BoxHead(num_anchors=num_anchors, name="box_head", **head_args)


def _checked_anchor_generator(anchor_generator) -> AnchorGenerator:
    """The given (or serialised) anchor generator, else the paper's; its levels must be the pyramid's."""
    anchor_generator = _deserialize(anchor_generator) or AnchorGenerator(name="anchor_generator")
    if anchor_generator.levels != PYRAMID_LEVELS:
        raise ValueError(
            f"RetinaNet: anchor_generator levels must be the pyramid's P3..P7 ({PYRAMID_LEVELS}), got "
            f"min_level={anchor_generator.min_level}, max_level={anchor_generator.max_level}"
        )
    return anchor_generator


def _check_arguments(num_classes, class_names, image_size):
    """RetinaNet's arguments checked, with messages that name them: (num_classes, class_names, image_size), the
    image size an int, a list (H, W) or None."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise ValueError(
            f"RetinaNet: num_classes must be an integer >= 1 (object classes, no background class), got "
            f"{num_classes!r}"
        )
    num_classes = int(num_classes)
    if class_names is not None:
        if isinstance(class_names, (str, bytes)) or not isinstance(class_names, Iterable):
            raise ValueError(
                f"RetinaNet: class_names must be a list of {num_classes} strings, got {class_names!r}"
            )
        class_names = list(class_names)
        if len(class_names) != num_classes:
            raise ValueError(
                f"RetinaNet: got {len(class_names)} class_names for num_classes={num_classes}; give one name "
                "per class"
            )
        bad = [name for name in class_names if not isinstance(name, str)]
        if bad:
            raise ValueError(f"RetinaNet: class_names must be strings, got {bad[0]!r}")
    if image_size is not None:
        try:
            parse_image_size(image_size)
        except (TypeError, ValueError):
            raise ValueError(
                f"RetinaNet: image_size must be an integer N or (H, W) with sides >= {MIN_IMAGE_SIDE} pixels, "
                f"or None, got {image_size!r}"
            ) from None
    if image_size is not None and not isinstance(image_size, int):
        image_size = list(image_size)
    return num_classes, class_names, image_size


def _in_order(outputs: list[dict], batches: list, single: bool, tensors: bool) -> dict:
    """The detections of ``image_batches``' batches merged back into the images' order (numpy arrays, or
    tensors with ``tensors``); a single image's lose the batch axis."""
    merged = outputs[0]
    if len(outputs) > 1:
        order = np.argsort(np.concatenate([indices for indices, _ in batches]))
        merged = {}
        for key in outputs[0]:
            rows = [out[key] for out in outputs]
            merged[key] = (
                ops.take(ops.concatenate(rows, axis=0), order, axis=0)
                if tensors
                else np.concatenate(rows)[order]
            )
    return {key: value[0] for key, value in merged.items()} if single else merged


def _is_static(shape) -> bool:
    return all(isinstance(size, int) for size in shape)


def _is_symbolic(tensor) -> bool:
    """True for a tensor of a graph being traced (tf.function, Keras functional), not an eager value."""
    if isinstance(tensor, np.ndarray):
        return False
    import tensorflow as tf

    return isinstance(tensor, keras.KerasTensor) or (tf.is_tensor(tensor) and not tf.executing_eagerly())


def _is_dataset(x) -> bool:
    if isinstance(x, keras.utils.PyDataset):
        return True
    import tensorflow as tf

    return isinstance(x, tf.data.Dataset)


IMAGES_ACCEPTED = (
    "one (H, W, 3) RGB image, a (B, H, W, 3) batch or a list of (H, W, 3) images of any sizes "
    "(uint8 or float pixels, H, W >= 1)"
)


def image_batches(images, caller: str) -> tuple[list[tuple[np.ndarray, object]], bool]:
    """Checks what ``predict`` / ``detect`` (``caller``) were given and splits it into batches of one size.

    Args:
        images: a (B, H, W, 3) or (H, W, 3) array or tensor, or a list / tuple of (H, W, 3) ones.
    Returns:
        ``(batches, single)``: a list of ``(indices, batch)``, ``batch`` a (b, H, W, 3) array or tensor of the
        images at ``indices`` (int array) of the input; ``single``: the input was one (H, W, 3) image.
    Raises:
        ValueError: (one line) wrong rank or channels, nothing, a zero-sized image, non-numeric values.
    """

    def refuse(what: str):
        raise ValueError(f"{caller}() got {what}; it takes {IMAGES_ACCEPTED}")

    def checked(image, rank: int, name: str):
        if not hasattr(image, "shape") or not hasattr(image, "dtype"):
            refuse(f"{name} an object of type {type(image).__name__}")
        shape = tuple(None if size is None else int(size) for size in image.shape)
        try:
            dtype = keras.backend.standardize_dtype(image.dtype)
        except ValueError:  # strings, objects
            dtype = str(image.dtype)
        if not dtype.startswith(("float", "int", "uint", "bfloat")):
            refuse(f"{name} of dtype {dtype}")
        if len(shape) != rank or shape[-1] not in (3, None):
            refuse(f"{name} of shape {shape}")
        if 0 in shape:
            refuse(f"{name} of shape {shape}, which holds no pixels")
        return image, shape

    if isinstance(images, (list, tuple)):
        if not images:
            refuse(f"an empty {type(images).__name__}")
        items = [checked(image, 3, f"a list whose item {i} is") for i, image in enumerate(images)]
        if any(_is_symbolic(image) for image, _ in items):  # sizes unknown until run: one image a batch
            return [(np.array([i]), ops.expand_dims(image, 0)) for i, (image, _) in enumerate(items)], False
        by_size: dict = {}
        for i, (_, shape) in enumerate(items):
            by_size.setdefault(shape, []).append(i)
        return [
            (np.array(indices), np.stack([np.asarray(items[i][0]) for i in indices]))
            for indices in by_size.values()
        ], False
    if not hasattr(images, "shape") or not hasattr(images, "dtype"):
        refuse(f"an object of type {type(images).__name__}")
    if len(images.shape) == 3:
        image, _ = checked(images, 3, "an array")
        batch = image[None] if isinstance(image, np.ndarray) else ops.expand_dims(image, 0)
        return [(np.array([0]), batch)], True
    image, shape = checked(images, 4, "an array")  # the message names the rank it got
    return [(np.arange(shape[0] or 1), image)], False
