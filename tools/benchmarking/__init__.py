"""Speed benchmark of keras_retinanet against its peers (the R50-512 protocol of docs/benchmark.md).

One job per module; ``tools/benchmark.py`` is the command that strings them together:

- ``timing``: ``time_runs`` (median / min wall time of a callable), peak-RSS helpers, ``run_phase``. Standard
  library only: ``tools/peer_benchmarks.py`` imports it inside the peers' Python environment.
- ``latency``: full-inference latency of a detector, and of a ``.tflite`` file's interpreter (on ``time_runs``).
- ``machine``: CPU model, vendor, cores, clock, the CPU features that decide speed (AVX2, AVX-512, VNNI,
  AVX512-BF16, AMX), FP32 peak FLOP/s, and ``bf16_support`` (the check behind ``--precision bf16``).
- ``flops``: analytic FLOP count of a traced graph (convolutions and matmuls), achieved fraction of peak.
- ``project``: this project's measurements (forward, inference, decode, encode, training step, TFLite).
- ``runtimes``: the ONNX and OpenVINO (float32, int8) files of the export, timed in their runtimes.
- ``pipeline``: input-pipeline throughput (images/s).
- ``peers``: runs ``tools/peer_benchmarks.py`` in the peers' own Python and reads its JSON.
- ``report``: the report dict, peer ratios, and the Markdown tables the README pastes.

This ``__init__`` imports nothing, so that importing ``keras_retinanet.detectors.timing`` stays free of numpy,
TensorFlow and Keras.
"""
