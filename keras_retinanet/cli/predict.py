"""``retinanet predict MODEL INPUT... --out DIR``: detect objects in images, folders, globs, videos, webcams.

Writes into DIR:

- an annotated copy of every image (same file name; ``name_1.jpg`` when two inputs share a name),
- ``VIDEO_STEM_detections.mp4`` for every video (``camera0_detections.mp4`` for webcam 0),
- ``detections.json``: COCO-style results, one entry per detection: ``image_id`` (running index of the
  image or frame), ``file_name``, ``frame`` (videos), ``category_id`` (the model's 0-based class id),
  ``category_name``, ``bbox`` ``[x, y, width, height]`` in original pixels, ``score``.

Unreadable inputs are reported and skipped (exit code 1 at the end).
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import itertools
import json
import os
import sys
from collections.abc import Sequence

from keras_retinanet import atomic
from keras_retinanet.atomic import locked_folder
from keras_retinanet.cli.detector_options import add_detector_arguments, load_detector_from_args
from keras_retinanet.conventions import DISPLAY_SCORE_THRESHOLD

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")
GLOB_CHARS = "*?["
WRITABLE = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")  # extensions OpenCV writes
LOCK = ".predict.lock"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_detector_arguments(parser, score_threshold=DISPLAY_SCORE_THRESHOLD)
    parser.add_argument(
        "inputs",
        metavar="INPUT",
        nargs="+",
        help="image files, folders, globs (quote them), video files, or a webcam index (0)",
    )
    parser.add_argument(
        "--out",
        required=True,
        metavar="DIR",
        help="output folder: created, or an empty one (see --overwrite)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="write into a folder that already holds files (a previous run's): files of the same names are "
        "replaced",
    )
    parser.add_argument(
        "--recursive", action="store_true", help="also look into sub-folders of folder inputs"
    )
    parser.add_argument(
        "--max-frames", type=int, default=None, help="stop each video / webcam after this many frames"
    )
    parser.add_argument("--no-draw", action="store_true", help="only write detections.json")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


@dataclasses.dataclass
class Source:
    """One input: ``kind`` is ``"image"``, ``"video"``, ``"camera"`` or ``"missing"``."""

    kind: str
    path: str
    camera_index: int | None = None


def collect_inputs(inputs: Sequence[str], recursive: bool = False) -> list[Source]:
    """INPUT arguments as sources, in order: a folder gives its image files (sorted), a glob its matches, a bare
    integer that is not a file a webcam; any other file is an image unless its extension is a video's."""
    from keras_retinanet.detectors.running import IMAGE_EXTENSIONS

    sources: list[Source] = []
    for item in inputs:
        if os.path.isdir(item):
            if recursive:
                found = [os.path.join(root, name) for root, _, names in os.walk(item) for name in names]
            else:
                found = [os.path.join(item, name) for name in os.listdir(item)]
            found = [p for p in sorted(found) if os.path.isfile(p) and p.lower().endswith(IMAGE_EXTENSIONS)]
            sources += [Source("image", p) for p in found]
        elif os.path.isfile(item) or any(c in item for c in GLOB_CHARS):
            matches = [item] if os.path.isfile(item) else sorted(glob.glob(item, recursive=True))
            matches = [p for p in matches if os.path.isfile(p)]
            kinds = ["video" if p.lower().endswith(VIDEO_EXTENSIONS) else "image" for p in matches]
            sources += [Source(kind, p) for kind, p in zip(kinds, matches)] or [Source("missing", item)]
        elif item.isdigit():
            sources.append(Source("camera", item, camera_index=int(item)))
        else:
            sources.append(Source("missing", item))
    return sources


def _unique_name(used: set[str], stem: str, extension: str) -> str:
    """``a.jpg``, then ``a_1.jpg``, ...: a name not in ``used`` (lower-cased), added to it."""
    name, k = f"{stem}{extension}", 0
    while name.lower() in used:
        k += 1
        name = f"{stem}_{k}{extension}"
    used.add(name.lower())
    return name


class _Results:
    """Collects COCO-style results; ``image_id`` runs over images and frames."""

    def __init__(self):
        self.items: list[dict] = []
        self.next_id = 0

    def add(self, detections, file_name: str, frame: int | None = None) -> None:
        from keras_retinanet.evaluation import detections_to_coco_results

        entries = detections_to_coco_results(
            [detections], [self.next_id], category_offset=0, file_names=[file_name]
        )
        for entry, name in zip(entries, detections.names, strict=True):
            entry["category_name"] = name
            if frame is not None:
                entry["frame"] = frame
        self.items += entries
        self.next_id += 1


def run(args: argparse.Namespace) -> int:
    """Predicts; returns 0, or 1 when some inputs failed (each reported). Bad arguments raise."""
    sources = collect_inputs(args.inputs, recursive=args.recursive)
    if not sources:
        raise ValueError("no images or videos found in the inputs")
    # Before the model loads (seconds): a file where the folder should be is the user's to move.
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise ValueError(f"--out {args.out} is a file, not a folder; name a folder (it is created)")
    _check_out_is_free(args)
    # One run per folder: a second one would interleave its images and replace detections.json.
    with (
        load_detector_from_args(args) as detector,
        locked_folder(args.out, LOCK, "another retinanet predict"),
    ):
        _check_out_is_free(args)
        # Written beside --out and renamed into place: a killed run leaves --out as it was.
        with atomic.staged_folder(args.out) as staging:
            return _predict(args, sources, detector, staging)


def _check_out_is_free(args: argparse.Namespace) -> None:
    """--out must be new or empty unless --overwrite: its files (the user's own photos?) would be replaced."""
    if not args.overwrite:
        atomic.require_free_folder(args.out, "--out", ignore=(LOCK,))


def _predict(args: argparse.Namespace, sources: list, detector, folder: str | os.PathLike) -> int:
    """Writes the annotated images and videos and detections.json into ``folder``; messages name --out."""
    import cv2
    from tqdm.auto import tqdm

    from keras_retinanet import detectors

    names = {"detections.json"}
    results = _Results()
    failures: list[tuple[str, str]] = []
    written = 0

    def fail(name: str, reason: str) -> None:
        failures.append((name, reason))
        tqdm.write(f"error: {name}: {reason}", file=sys.stderr)

    images = [s for s in sources if s.kind == "image"]
    for source in sources:
        if source.kind == "missing":
            fail(source.path, "no such file, folder or glob match")
    if images:
        stream = detectors.iter_predictions(detector, [s.path for s in images], batch_size=args.batch_size)
        for item in tqdm(stream, total=len(images), desc="images", unit="img", disable=args.no_progress):
            if item.error is not None:
                fail(item.name, getattr(item.error, "reason", str(item.error)))
                continue
            results.add(item.detections, item.name)
            if not args.no_draw:
                stem, extension = os.path.splitext(os.path.basename(item.name))
                extension = extension.lower() if extension.lower() in WRITABLE else ".png"
                file_name = _unique_name(names, stem, extension)
                if not cv2.imwrite(
                    os.path.join(folder, file_name), _drawn(item.image, item.detections, detector)
                ):
                    fail(item.name, f"cannot write {os.path.join(args.out, file_name)}")
                    continue
                written += 1

    for source in sources:
        if source.kind not in ("video", "camera"):
            continue
        error = _run_video(source, detector, args, names, results, folder)
        if error:
            fail(source.path if source.kind == "video" else f"camera {source.camera_index}", error)

    json_path = os.path.join(args.out, "detections.json")
    atomic.write_text(os.path.join(folder, "detections.json"), json.dumps(results.items, indent=1))
    print(
        f"{results.next_id} images/frames, {len(results.items)} detections -> {json_path}"
        + (f"; {written} annotated images in {args.out}" if written else ""),
        file=sys.stderr,
    )
    if failures:
        print(f"{len(failures)} input(s) failed: " + ", ".join(name for name, _ in failures), file=sys.stderr)
        return 1
    return 0


def _drawn(image, detections, detector):
    """(H, W, 3) BGR: the RGB ``image`` with ``detections`` drawn."""
    from keras_retinanet.visualize import draw_detections, rgb_to_bgr

    d = detections
    return rgb_to_bgr(draw_detections(image, d.boxes, d.scores, d.classes, detector.class_names or None))


def _run_video(
    source: Source, detector, args, names: set[str], results: _Results, folder: str | os.PathLike
) -> str | None:
    """Annotates one video file or webcam into ``folder``; returns an error message, or None."""
    import cv2
    from tqdm.auto import tqdm

    camera = source.kind == "camera"
    capture = cv2.VideoCapture(source.camera_index if camera else source.path)
    if not capture.isOpened():
        return (
            f"cannot open {'webcam' if camera else 'video'} (missing codec, corrupt file or no such device)"
        )
    fps = capture.get(cv2.CAP_PROP_FPS) or 0.0
    fps = fps if 0 < fps < 1000 else 25.0
    total = 0 if camera else int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    if args.max_frames:
        total = min(total, args.max_frames) if total > 0 else args.max_frames
    stem = f"camera{source.camera_index}" if camera else os.path.splitext(os.path.basename(source.path))[0]
    label = stem if camera else source.path
    writer = None
    file_name = _unique_name(names, f"{stem}_detections", ".mp4")
    out_path = os.path.join(folder, file_name)
    frame_index = 0
    progress = tqdm(total=total or None, desc=stem, unit="frame", disable=args.no_progress)
    batch_size = max(1, min(args.batch_size, detector.max_batch_size or args.batch_size))

    def read():  # RGB frames, at most --max-frames
        for _ in range(args.max_frames) if args.max_frames else itertools.count():
            ok, frame = capture.read()
            if not ok:
                return
            yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)

    stream = read()
    try:
        while frames := list(itertools.islice(stream, batch_size)):
            for frame, detections in zip(frames, detector.detect(frames), strict=True):
                results.add(detections, label, frame=frame_index)
                if not args.no_draw:
                    if writer is None:
                        height, width = frame.shape[:2]
                        writer = cv2.VideoWriter(
                            out_path, cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height)
                        )
                        if not writer.isOpened():
                            return f"cannot write video {os.path.join(args.out, file_name)}"
                    writer.write(_drawn(frame, detections, detector))
                frame_index += 1
                progress.update(1)
    except KeyboardInterrupt:
        tqdm.write(f"{label}: stopped after {frame_index} frames", file=sys.stderr)
    finally:
        progress.close()
        capture.release()
        if writer is not None:
            writer.release()
    return None if frame_index else "no frame could be read"
