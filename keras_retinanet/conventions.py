"""Values and names that every layer shares, each defined here once.

Standard library only: the configuration (``model_config.py``, ``training/config.py``) and the commands import
it without TensorFlow.
"""

from __future__ import annotations

from collections.abc import Sequence

# The network input side of a model that does not say otherwise: ``ModelConfig.image_size``'s default, the size
# of a model that does not record one (``RetinaNet.input_size``), and the data pipeline's and tools' default.
DEFAULT_IMAGE_SIZE = 512

# The score from which a detection is shown to a person: ``retinanet predict``'s default threshold, the
# evaluation report's confusion matrix and worst images, TensorBoard's prediction images, the parity check of
# exported files. (The decoder's own threshold, 0.05, keeps the low scores that AP needs.)
DISPLAY_SCORE_THRESHOLD = 0.3

# The class names of an exported model, one a line (line i = class id i): in the export folder, the
# SavedModel's assets and packed into a .tflite's metadata.
LABELS_FILE = "labels.txt"


def class_name(class_id: int, class_names: Sequence[str] | None = None) -> str:
    """``class_names[class_id]``, or the id as text (``"3"``) where there is no such name.

    The one spelling of a class without a name: a model built without class names calls its classes
    ``"0"``, ``"1"``, ... (:func:`fallback_class_names`), and a detection whose id is past the names gets the
    same text.
    """
    if class_names is not None and 0 <= class_id < len(class_names):
        return str(class_names[class_id])
    return str(class_id)


def fallback_class_names(num_classes: int) -> list[str]:
    """The names of ``num_classes`` classes without names: ``["0", "1", ..., str(num_classes - 1)]``."""
    return [class_name(i) for i in range(int(num_classes))]
