"""A small RetinaNet must be able to memorise two real BCCD images: the end-to-end check of the model core."""

import xml.etree.ElementTree as ET

import keras
import numpy as np
import tensorflow as tf
from retinanet_testing import tiny_retinanet

from keras_retinanet.backbones.batchnorm import recompute_batchnorm_statistics
from keras_retinanet.boxes import pairwise_iou

CLASSES = ["RBC", "WBC", "Platelets"]
SCALE = 0.5  # 640x480 -> 320x240


def _load(root, image_id):
    image = tf.io.decode_jpeg(tf.io.read_file(str(root / "JPEGImages" / f"{image_id}.jpg")), channels=3)
    image = tf.image.resize(image, (240, 320))
    boxes, classes = [], []
    for obj in ET.parse(root / "Annotations" / f"{image_id}.xml").findall("object"):
        box = obj.find("bndbox")
        coords = [float(box.find(k).text) for k in ("xmin", "ymin", "xmax", "ymax")]
        boxes.append([c * SCALE for c in coords])
        classes.append(CLASSES.index(obj.find("name").text))
    return image.numpy(), np.array(boxes, "float32"), np.array(classes, "int32")


def test_overfits_two_bccd_images(bccd_subset):
    keras.utils.set_random_seed(0)
    root = bccd_subset(["BloodImage_00000", "BloodImage_00001"])
    samples = [_load(root, i) for i in ("BloodImage_00000", "BloodImage_00001")]
    model = tiny_retinanet(num_classes=3, fpn_channels=64, head_depth=2)
    encoder = model.label_encoder()
    images = np.stack([s[0] for s in samples])
    targets = [encoder.encode((256, 320), np.pad(s[1], [[0, 0], [0, 0]]), s[2]) for s in samples]
    # Pad the images to the 256 x 320 network input the targets were encoded for.
    images = np.pad(images, [[0, 0], [0, 16], [0, 0], [0, 0]])
    batch = {k: np.stack([np.asarray(t[k]) for t in targets]) for k in targets[0]}

    model.compile(optimizer=keras.optimizers.Adam(1e-3, clipnorm=10.0))
    losses = [model.train_on_batch(images, batch, return_dict=True)["loss"] for _ in range(60)]
    assert losses[-1] < losses[0] / 5, f"loss went from {losses[0]:.3f} to {losses[-1]:.3f}"

    # 60 steps leave BatchNorm's moving averages far behind the weights: recompute them (PreciseBN).
    assert recompute_batchnorm_statistics(model, [images] * 4) == 4

    detections = model.predict(images, verbose=0)
    for index, (_, gt_boxes, gt_classes) in enumerate(samples):
        top = detections["boxes"][index, :10]
        assert detections["num_detections"][index] >= 10
        iou = np.asarray(pairwise_iou(top, gt_boxes))
        best = iou.argmax(axis=1)
        # Every one of the 10 highest-scoring detections lies on a ground-truth cell of the same class.
        assert np.all(iou.max(axis=1) >= 0.5), iou.max(axis=1)
        np.testing.assert_array_equal(detections["classes"][index, :10], gt_classes[best])
