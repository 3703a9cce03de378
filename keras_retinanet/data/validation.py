"""Bad-input checks shared by every reader: clear errors by default, or skip-and-report.

A *record* is the smallest unit a reader can drop: an image (with its boxes) or a single box. With
``skip_bad=False`` the first problem raises :class:`DataError` naming the file, the record and the problem; with
``skip_bad=True`` the record is dropped and counted in a :class:`SkipReport`.

Box rules (absolute xyxy pixels, 0-based continuous: a whole W x H image is ``(0, 0, W, H)``): not finite,
inverted or zero-area: bad; outside the image or overhanging by more than ``OVERHANG_TOLERANCE`` of the side:
bad (``box_outside_image``); overhanging by less: clipped and kept (counted as ``clipped``).
"""

from __future__ import annotations

import collections
import dataclasses

import numpy as np

from keras_retinanet.boxes import clip_boxes

# Overhang (as a fraction of the image side) up to which a box is clipped rather than rejected.
OVERHANG_TOLERANCE = 0.1


class DataError(ValueError):
    """A dataset problem: names the file, the record and the problem, in one line."""


def printable(text: object) -> str:
    """``str(text)`` with control characters (line breaks, tabs, NUL) escaped as in ``repr``: a name read from a
    file must not break a one-line message."""
    text = str(text)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


@dataclasses.dataclass
class Problem:
    """One bad record. ``level`` is ``"image"`` (the whole image was dropped) or ``"box"``."""

    reason: str
    source: str
    record: str
    detail: str
    level: str = "image"

    def __str__(self) -> str:
        return printable(f"{self.source}: {self.record}: {self.detail}")


class SkipReport:
    """What a reader skipped: ``problems`` (every :class:`Problem`, in reading order), and ``clipped`` (the number of
    boxes clipped to the image)."""

    def __init__(self, skip_bad: bool = False):
        self.skip_bad = skip_bad
        self.problems: list[Problem] = []
        self.clipped = 0

    def bad(self, reason: str, source: str, record: str, detail: str, level: str = "image") -> None:
        """Records a problem; raises :class:`DataError` unless skipping bad records."""
        problem = Problem(reason, str(source), record, detail, level)
        if not self.skip_bad:
            raise DataError(f"{problem}. Pass skip_bad=True (CLI: --skip-bad) to skip such records.")
        self.problems.append(problem)

    @property
    def images_skipped(self) -> int:
        return sum(p.level == "image" for p in self.problems)

    @property
    def boxes_skipped(self) -> int:
        return sum(p.level == "box" for p in self.problems)

    def counts(self) -> dict[str, int]:
        """``{reason: count}`` over all skipped records."""
        return dict(collections.Counter(p.reason for p in self.problems))

    def __len__(self) -> int:
        return len(self.problems)

    def summary(self, examples_per_reason: int = 3) -> str:
        """Human-readable report: totals, counts per reason and a few examples of each."""
        lines = [
            f"skipped {self.images_skipped} image(s) and {self.boxes_skipped} box(es); "
            f"clipped {self.clipped} box(es) overhanging the image edge"
        ]
        by_reason = collections.defaultdict(list)
        for p in self.problems:
            by_reason[p.reason].append(p)
        for reason, problems in sorted(by_reason.items()):
            lines.append(f"  {reason}: {len(problems)}")
            lines.extend(f"    {p}" for p in problems[:examples_per_reason])
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (
            f"SkipReport(images_skipped={self.images_skipped}, boxes_skipped={self.boxes_skipped}, "
            f"clipped={self.clipped}, counts={self.counts()})"
        )


def check_boxes(
    boxes: np.ndarray,
    width: int,
    height: int,
    report: SkipReport,
    source: str,
    records: list[str],
) -> tuple[np.ndarray, np.ndarray]:
    """Validates one image's boxes (M, 4) absolute xyxy pixels; clips small overhangs.

    Args:
        report: where problems go (raises unless it skips bad records).
        source: file named in messages (annotation file); ``records``: M record names (``"object 3 (RBC)"``).
    Returns:
        ``(boxes (K, 4) float32 clipped, keep (M,) bool)``: the kept boxes and which input boxes they are.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    keep = np.ones(len(boxes), dtype=bool)
    tol_x, tol_y = OVERHANG_TOLERANCE * width, OVERHANG_TOLERANCE * height
    for i, (x1, y1, x2, y2) in enumerate(boxes):
        coords = f"({x1:g}, {y1:g}, {x2:g}, {y2:g})"
        problem = None
        if not np.all(np.isfinite(boxes[i])):
            problem = ("box_not_finite", f"box {coords} has a non-finite coordinate")
        elif x2 < x1 or y2 < y1:
            problem = ("box_inverted", f"box {coords} has x2 < x1 or y2 < y1 (xyxy expected)")
        elif x2 == x1 or y2 == y1:
            problem = ("box_zero_area", f"box {coords} has zero width or height")
        elif x1 >= width or y1 >= height or x2 <= 0 or y2 <= 0:
            problem = ("box_outside_image", f"box {coords} lies outside the {width}x{height} image")
        elif x1 < -tol_x or y1 < -tol_y or x2 > width + tol_x or y2 > height + tol_y:
            problem = (
                "box_outside_image",
                f"box {coords} overhangs the {width}x{height} image by more than "
                f"{OVERHANG_TOLERANCE:.0%} (wrong coordinates or image size?)",
            )
        if problem is not None:
            report.bad(problem[0], source, records[i], problem[1], level="box")
            keep[i] = False
    kept = boxes[keep]
    clipped = clip_boxes(kept, height, width) if len(kept) else kept
    report.clipped += int(np.sum(np.any(clipped != kept, axis=-1))) if len(kept) else 0
    return clipped.astype(np.float32).reshape(-1, 4), keep
