"""One worker of a 2-worker MultiWorkerMirroredStrategy run (TF_CONFIG set by the test). Trains a tiny model
for a few steps and saves its final weights to ARGV[2]."""

import sys

import tensorflow as tf

strategy = tf.distribute.MultiWorkerMirroredStrategy()

import keras  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, sys.argv[1])
from retinanet_testing import tiny_retinanet  # noqa: E402

with strategy.scope():
    keras.utils.set_random_seed(0)
    model = tiny_retinanet()
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9))

encoder = model.label_encoder()
rng = np.random.default_rng(0)
images = rng.uniform(0, 255, (8, 64, 64, 3)).astype("float32")
targets = encoder.encode(
    (64, 64), np.tile(np.array([[[8, 8, 40, 40]]], "float32"), (8, 1, 1)), np.zeros((8, 1), "int32")
)
dataset = tf.data.Dataset.from_tensor_slices((images, targets)).batch(4).repeat()
options = tf.data.Options()
options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
history = model.fit(dataset.with_options(options), epochs=1, steps_per_epoch=3, verbose=0)
# Trainable weights only: BatchNorm moving statistics are per worker (each sees its own data; no SyncBN).
np.savez(sys.argv[2], *[w.numpy() for w in model.trainable_weights], loss=history.history["loss"])
