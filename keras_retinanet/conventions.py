"""Values and names that every layer shares, each defined here once (standard library only)."""

from __future__ import annotations

from collections.abc import Sequence

# The network input side of a model that does not say otherwise (``ModelConfig``, ``RetinaNet.image_size``).
DEFAULT_IMAGE_SIZE = 512

# The score from which a detection is shown to a person (predict, reports, TensorBoard images, parity); the
# decoder's own threshold, 0.05, keeps the low scores that AP needs.
DISPLAY_SCORE_THRESHOLD = 0.3

# The class names of an exported model, one a line (line i = class id i): in the export folder, the
# SavedModel's assets and packed into a .tflite's metadata.
LABELS_FILE = "labels.txt"


def class_name(class_id: int, class_names: Sequence[str] | None = None) -> str:
    """``class_names[class_id]``, or the id as text (``"3"``) where there is no such name."""
    if class_names is not None and 0 <= class_id < len(class_names):
        return str(class_names[class_id])
    return str(class_id)


def fallback_class_names(num_classes: int) -> list[str]:
    """The names of ``num_classes`` classes without names: ``["0", "1", ..., str(num_classes - 1)]``."""
    return [class_name(i) for i in range(int(num_classes))]
