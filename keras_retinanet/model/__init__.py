"""The RetinaNet model: ``retinanet.py`` (the Keras model), ``config.py`` and ``presets.py`` (what to build),
``anchors``, ``matching``, ``box_coder``, ``targets`` (training targets), ``decode`` (detections), ``losses``,
``inference_graph`` (the decoded serving graph) and ``layers/`` (feature pyramid and heads)."""
