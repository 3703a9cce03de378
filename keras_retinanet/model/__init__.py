"""The RetinaNet model (``retinanet.py``), what to build (``config.py``, ``presets.py``) and its parts."""
