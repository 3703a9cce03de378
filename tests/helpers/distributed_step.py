"""Run in a fresh process: one training step on the same global batch, on one device and mirrored over
two logical CPUs. Prints JSON with both losses and the largest weight difference after the step."""

import json
import sys

import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, sys.argv[1])
from retinanet_testing import tiny_retinanet  # noqa: E402

from keras_retinanet.training import freeze_batchnorm  # noqa: E402


def batch():
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (4, 64, 64, 3)).astype("float32")
    encoder = tiny_retinanet().label_encoder()
    # Different numbers of boxes per image, so the per-image normalisers differ.
    boxes = [
        np.array([[4, 4, 40, 40]]),
        np.array([[10, 8, 60, 30], [0, 20, 30, 60]]),
        np.zeros((0, 4)),
        np.array([[30, 30, 62, 62], [2, 2, 20, 20], [20, 5, 50, 25]]),
    ]
    targets = [encoder.encode((64, 64), b.astype("float32"), np.arange(len(b)) % 3) for b in boxes]
    return images, {k: np.stack([np.asarray(t[k]) for t in targets]) for k in targets[0]}


def one_step(strategy, weights):
    with strategy.scope():
        keras.utils.set_random_seed(1)
        model = tiny_retinanet()
        # BatchNorm statistics are per replica (no SyncBN): freeze them so both runs compute the same function.
        freeze_batchnorm(model)
        model.set_weights(weights)
        model.compile(optimizer=keras.optimizers.SGD(0.1))
    images, targets = batch()
    dataset = tf.data.Dataset.from_tensors((images, targets))
    history = model.fit(dataset, epochs=1, verbose=0)
    return history.history["loss"][0], model.get_weights()


keras.utils.set_random_seed(1)
initial = tiny_retinanet().get_weights()
single_loss, single_weights = one_step(tf.distribute.OneDeviceStrategy("/cpu:0"), initial)
mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
mirrored_loss, mirrored_weights = one_step(mirrored, initial)
changed = max(float(np.abs(a - b).max()) for a, b in zip(initial, single_weights))
difference = max(float(np.abs(a - b).max()) for a, b in zip(single_weights, mirrored_weights))
print(
    json.dumps(
        {
            "replicas": mirrored.num_replicas_in_sync,
            "single_loss": single_loss,
            "mirrored_loss": mirrored_loss,
            "largest_update": changed,
            "largest_weight_difference": difference,
        }
    )
)
