"""``load_dataset(spec)``: the reader a spec names, its examples checked, as one :class:`Dataset`."""

from __future__ import annotations

from collections.abc import Sequence

from keras_retinanet.data.dataset import Dataset
from keras_retinanet.data.spec import DatasetSpec, parse_spec
from keras_retinanet.data.validation import DataError, SkipReport


def load_dataset(
    spec: str | DatasetSpec,
    skip_bad: bool = False,
    class_names: Sequence[str] | None = None,
    data_dir: str | None = None,
    verify: str = "header",
    exif_orientation: bool = True,
    allow_outside_paths: bool = False,
) -> Dataset:
    """Loads and validates a dataset named by a spec string.

    Args:
        spec: see :mod:`keras_retinanet.data.spec`.
        skip_bad: skip bad records and report them in ``dataset.skipped`` instead of raising ``DataError``.
        class_names: fix the class list and order (e.g. a trained model's). Default: the dataset's own.
        data_dir: TFDS data directory (ignored by the file formats).
        verify: ``"header"`` (format, size and truncation from the file header), ``"decode"`` (also fully
            decodes every image) or ``"none"``.
        exif_orientation: apply EXIF orientation to images whose annotation uses the displayed size.
        allow_outside_paths: read COCO images whose ``file_name`` leads outside the image folder.
    Returns:
        :class:`Dataset` with at least one class and one image.
    Raises:
        DataError: the first bad record (unless ``skip_bad``); a file that cannot be read at all (not JSON, not
            a COCO file, a bad classes file); no classes; no images (none listed, or every one skipped).
        FileNotFoundError: no annotation file or directory.
        ValueError: a malformed spec.
    """
    spec = parse_spec(spec)
    report = SkipReport(skip_bad)
    options = {"verify": verify, "exif_orientation": exif_orientation}
    encoded = None
    if spec.format == "coco":
        from keras_retinanet.data.coco import read_coco

        options["allow_outside_paths"] = allow_outside_paths
        examples, names = read_coco(spec.path, spec.extra, report, class_names, **options)
    elif spec.format == "tfds":
        from keras_retinanet.data.tfds_reader import read_tfds

        examples, names, encoded = read_tfds(
            spec.path, spec.extra or "train", report, class_names, data_dir=data_dir, verify=verify
        )
    else:
        from keras_retinanet.data.csv_reader import read_csv
        from keras_retinanet.data.voc import read_voc
        from keras_retinanet.data.yolo import read_yolo

        reader = {"voc": read_voc, "csv": read_csv, "yolo": read_yolo}[spec.format]
        examples, names = reader(spec.path, spec.extra, report, class_names, **options)
    _require_content(spec, names, examples, report)
    return Dataset(examples, list(names), report, str(spec), encoded)


def _require_content(
    spec: DatasetSpec, class_names: Sequence[str], examples: list, report: SkipReport
) -> None:
    """An empty dataset is an error here, in words, rather than a Keras one later ("Received filters=0")."""
    if not examples and not report.problems:
        raise DataError(f"{spec}: no images (the split, 'images' list or annotation file is empty)")
    if not examples:
        counts = ", ".join(f"{reason} {count}" for reason, count in sorted(report.counts().items()))
        raise DataError(
            f"{spec}: no images left: every image was skipped ({counts}; first: {report.problems[0]})"
        )
    if not class_names:
        where = {
            "voc": "no <object><name> in any Annotations/*.xml",
            "coco": "'categories' is empty or holds only parent categories without annotations",
            "csv": "the classes file lists none",
            "yolo": "'names' is empty",
            "tfds": "its objects/label feature has no names",
        }[spec.format]
        raise DataError(f"{spec}: no classes ({where})")
