"""One process of the multi-worker test: ``multi_worker.py TESTS_DIR OUT.npz [single]``.

With ``TF_CONFIG`` (set by the test) it is one worker of a 2-worker ``MultiWorkerMirroredStrategy``; with
``single`` it is the reference: the same model trained on one device on the same global batches. Each
process saves its initial and final trainable weights and its loss at every step to OUT.npz.
"""

import sys

import tensorflow as tf

single = sys.argv[3:] == ["single"]
strategy = tf.distribute.get_strategy() if single else tf.distribute.MultiWorkerMirroredStrategy()

import keras  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, sys.argv[1])
from retinanet_testing import tiny_retinanet  # noqa: E402

from keras_retinanet.training import freeze_batchnorm  # noqa: E402

STEPS = 6
GLOBAL_BATCH = 4  # 2 images per worker

with strategy.scope():
    keras.utils.set_random_seed(0)
    model = tiny_retinanet()
    # BatchNorm statistics are per replica (no SyncBN): frozen, both runs compute the same function.
    freeze_batchnorm(model)
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9))
initial = [w.numpy() for w in model.trainable_weights]

encoder = model.label_encoder()
rng = np.random.default_rng(0)
images = rng.uniform(0, 255, (8, 64, 64, 3)).astype("float32")
boxes = rng.uniform(0, 24, (8, 2, 2)).astype("float32")
boxes = np.concatenate([boxes, boxes + rng.uniform(20, 40, (8, 2, 2)).astype("float32")], axis=-1)
classes = rng.integers(0, 3, (8, 2)).astype("int32")
# Different numbers of boxes per image (2, none, one), so that the per-image loss normalisers differ between the
# replicas: image 2 (worker 1's first image) has none, image 5 (worker 0's second) one (-1 marks padding).
classes[2] = -1
classes[5, 1] = -1
targets = encoder.encode((64, 64), boxes, classes)
# Global batches alternate images 0-3 and 4-7; the multi-worker run splits each into two halves of 2.
dataset = tf.data.Dataset.from_tensor_slices((images, targets)).batch(GLOBAL_BATCH).repeat()
options = tf.data.Options()
options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
# One step per epoch: Keras' logged loss is then that step's loss, not a running mean.
history = model.fit(dataset.with_options(options), epochs=STEPS, steps_per_epoch=1, verbose=0)
losses = np.array([np.asarray(value).reshape(-1)[0] for value in history.history["loss"]])
final = [w.numpy() for w in model.trainable_weights]
np.savez(
    sys.argv[2],
    **{f"initial_{i}": w for i, w in enumerate(initial)},
    **{f"final_{i}": w for i, w in enumerate(final)},
    loss=losses,
)
