"""Choosing a ``tf.distribute`` strategy and the matching mixed-precision policy."""

from __future__ import annotations

import json
import os

import tensorflow as tf

STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker", "tpu")


def get_strategy(name: str = "auto", tpu_address: str | None = None) -> tf.distribute.Strategy:
    """The strategy to train under. ``auto``: ``multi_worker`` for a cluster in ``TF_CONFIG``, ``mirrored``
    with several GPUs, ``one_device`` with one, the default strategy on a CPU. ``tpu`` connects to
    ``tpu_address`` (None: the Cloud TPU VM's)."""
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; choose from {', '.join(STRATEGIES)}")
    # Physical, not logical: listing logical devices initialises TensorFlow's context, after which
    # MultiWorkerMirroredStrategy fails ("Collective ops must be configured at program startup").
    gpus = tf.config.list_physical_devices("GPU")
    if name == "auto":
        cluster = json.loads(os.environ.get("TF_CONFIG", "{}")).get("cluster", {})
        if sum(len(tasks) for tasks in cluster.values()) > 1:
            name = "multi_worker"
        elif len(gpus) > 1:
            name = "mirrored"
        elif len(gpus) == 1:
            name = "one_device"
        else:
            return tf.distribute.get_strategy()
    if name == "one_device":
        return tf.distribute.OneDeviceStrategy("/gpu:0" if gpus else "/cpu:0")
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        if "TF_CONFIG" not in os.environ:
            raise ValueError(
                "strategy 'multi_worker' needs the cluster in the TF_CONFIG environment variable"
            )
        return tf.distribute.MultiWorkerMirroredStrategy()
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu_address or "local")
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)


def mixed_precision_policy(strategy: tf.distribute.Strategy) -> str:
    """``mixed_bfloat16`` on TPUs and CPUs (their native half type), ``mixed_float16`` on GPUs."""
    if isinstance(strategy, tf.distribute.TPUStrategy) or not tf.config.list_logical_devices("GPU"):
        return "mixed_bfloat16"
    return "mixed_float16"
