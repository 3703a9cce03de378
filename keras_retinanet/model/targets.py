"""Turns ground-truth boxes into per-anchor training targets (the label encoder)."""

from __future__ import annotations

from collections.abc import Sequence

from keras import ops

from keras_retinanet.boxes import pairwise_iou
from keras_retinanet.model.anchors import AnchorGenerator
from keras_retinanet.model.box_coder import BoxCoder
from keras_retinanet.model.matching import IGNORED, POSITIVE, Matcher

# Values of the classification target besides class ids.
BACKGROUND = -1
IGNORE = -2
# Ground-truth class values besides class ids.
PADDING_CLASS = -1
IGNORE_CLASS = -2


class LabelEncoder:
    """Encodes padded ground truth into the targets that ``RetinaNet.fit`` expects, with the model's anchors,
    box coding and matching; Keras ops only, so it also runs inside ``tf.data.Dataset.map``."""

    def __init__(
        self,
        anchor_generator: AnchorGenerator | None = None,
        box_coder: BoxCoder | None = None,
        matcher: Matcher | None = None,
    ):
        self.anchor_generator = anchor_generator or AnchorGenerator()
        self.box_coder = box_coder or BoxCoder()
        self.matcher = matcher or Matcher()

    def encode(self, image_shape: Sequence[int], gt_boxes, gt_classes) -> dict:
        """Encodes one image's (or a batch's) ground truth.

        Args:
            image_shape: static (H, W) of the network input the boxes live in.
            gt_boxes: (M, 4) or (B, M, 4) absolute xyxy boxes in network-input pixels.
            gt_classes: (M,) or (B, M) int class ids; ``-1`` marks padding, ``-2`` an ignore box (VOC
                difficult, COCO crowd), whose anchors are ignored.
        Returns:
            ``"classification"``: (N,) or (B, N) int32, the class id of positive anchors, -1 for background,
            -2 for ignored anchors; ``"box_regression"``: (N, 5) or (B, N, 5) float32, deltas (dx, dy, dw, dh)
            (zero for non-positive anchors) and the classification target again in [..., 4] (for the loss).
        """
        gt_boxes = ops.cast(gt_boxes, "float32")
        gt_classes = ops.cast(gt_classes, "int32")
        # One always-invalid box keeps argmax defined for images without any box.
        batch_pad = [[0, 0]] * (len(gt_boxes.shape) - 2)
        gt_boxes = ops.pad(gt_boxes, batch_pad + [[0, 1], [0, 0]])
        gt_classes = ops.pad(gt_classes, batch_pad + [[0, 1]], constant_values=PADDING_CLASS)
        anchors, _, matched_index, state = self.match(image_shape, gt_boxes, gt_classes != PADDING_CLASS)

        if len(gt_boxes.shape) == 2:
            matched_boxes = ops.take(gt_boxes, matched_index, axis=0)
            matched_classes = ops.take(gt_classes, matched_index, axis=0)
        else:
            matched_boxes = ops.take_along_axis(gt_boxes, matched_index[..., None], axis=-2)
            matched_classes = ops.take_along_axis(gt_classes, matched_index, axis=-1)
        positive = state == POSITIVE
        ignored = (state == IGNORED) | (positive & (matched_classes == IGNORE_CLASS))
        positive = positive & (matched_classes >= 0)
        classification = ops.where(positive, matched_classes, ops.where(ignored, IGNORE, BACKGROUND))

        deltas = self.box_coder.encode(anchors, matched_boxes)
        deltas = ops.where(positive[..., None], deltas, 0.0)
        box_regression = ops.concatenate([deltas, ops.cast(classification, "float32")[..., None]], axis=-1)
        return {"classification": ops.cast(classification, "int32"), "box_regression": box_regression}

    def match(self, image_shape: Sequence[int], gt_boxes, valid) -> tuple:
        """The anchors of an (H, W) network input matched to its (M, 4) or (B, M, 4) xyxy boxes (M >= 1; ``valid``
        False for padding): ``(anchors (N, 4), iou (..., N, M), matched_index (..., N), state (..., N))``."""
        anchors = self.anchor_generator(image_shape=image_shape)
        iou = pairwise_iou(anchors if len(gt_boxes.shape) == 2 else anchors[None], gt_boxes)
        matched_index, state = self.matcher(
            iou,
            valid,
            anchors=anchors,
            boxes=gt_boxes,
            level_sizes=self.anchor_generator.level_sizes(image_shape),
            anchors_per_location=self.anchor_generator.num_anchors_per_location,
        )
        return anchors, iou, matched_index, state

    def __call__(self, image_shape, gt_boxes, gt_classes) -> dict:
        return self.encode(image_shape, gt_boxes, gt_classes)
