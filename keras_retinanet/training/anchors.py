"""``--anchors auto|given|FILE``: the anchor shapes a training run uses, decided before the model is built.

``given``: the anchor options as given. ``auto``: like YOLOv5's AutoAnchor, when a class has under
:data:`MIN_CLASS_COVERAGE` of its boxes covered at the training size, the shapes are fitted
(:func:`~keras_retinanet.data.anchor_stats.optimize_anchors`) and kept if they cover better. ``FILE``: the
``"anchors"`` mapping of a ``retinanet data check --json`` file or a run's ``anchors.json``. The shapes go into
``config.yaml``; a resumed run reuses them.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

from keras_retinanet.training.config import TrainConfig

# Under this share of a class's boxes with a positive anchor, ``auto`` fits the anchors.
MIN_CLASS_COVERAGE = 0.95
# The stride of P3: boxes much smaller than it would need a P2 level, which this model does not have.
P3_STRIDE = 8


def read_anchor_file(path: str) -> dict:
    """``{"sizes", "scales", "aspect_ratios"}`` from ``path``'s ``"anchors"`` mapping."""
    try:
        with open(path) as file:
            values = json.load(file)
    except FileNotFoundError:
        raise ValueError(
            f"--anchors {path}: no such file (expected auto, given, or a JSON file from "
            "`retinanet data check --json`)"
        ) from None
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"--anchors {path}: cannot read it as JSON ({error})") from None
    anchors = values.get("anchors") if isinstance(values, dict) else None
    if not isinstance(anchors, dict):
        raise ValueError(
            f'--anchors {path}: no "anchors" mapping (sizes, scales, aspect_ratios) in the file; '
            "`retinanet data check SPEC --json FILE` writes one"
        )
    missing = [key for key in ("sizes", "scales", "aspect_ratios") if key not in anchors]
    if missing:
        raise ValueError(f'--anchors {path}: "anchors" lacks {", ".join(missing)}')
    return {key: anchors[key] for key in ("sizes", "scales", "aspect_ratios")}


def _with_shapes(config: TrainConfig, shapes: dict) -> TrainConfig:
    return config.update(
        {
            "anchor_sizes": tuple(float(v) for v in shapes["sizes"]),
            "anchor_scales": tuple(float(v) for v in shapes["scales"]),
            "anchor_aspect_ratios": tuple(float(v) for v in shapes["aspect_ratios"]),
        }
    )


def _shapes(config: TrainConfig) -> dict:
    return {
        "sizes": list(config.model.anchor_sizes),
        "scales": list(config.model.anchor_scales),
        "aspect_ratios": list(config.model.anchor_aspect_ratios),
    }


def fit_to_data(config: TrainConfig, dataset, seed: int = 0) -> tuple[dict, dict]:
    """The ``auto`` decision for a loaded training set: ``(shapes, report)``, the report JSON-able with
    ``before`` / ``after`` coverage, ``fitted`` and ``reason``."""
    from keras_retinanet.data import anchor_stats as st
    from keras_retinanet.imaging import parse_image_size

    size = parse_image_size(config.model.image_size)
    generator = config.model.build_anchor_generator()
    threshold = config.model.positive_threshold
    boxes, classes = st.network_boxes(dataset, size)

    def coverage(anchors) -> st.Coverage:
        return st.coverage(
            st.best_anchor_iou(boxes, anchors, size), classes, boxes, dataset.class_names, threshold
        )

    before = coverage(generator)
    given = _shapes(config)
    report = {"image_size": list(size), "positive_threshold": threshold, "given": given, "before": before}

    def keep_given(reason: str) -> tuple[dict, dict]:
        report.update(anchors=given, after=None, fitted=False, reason=reason)
        return given, _jsonable(report)

    under = {
        name: value
        for name, value in before.per_class.items()
        if before.counts_per_class[name] and value < MIN_CLASS_COVERAGE
    }
    if not under:
        return keep_given(f"every class has at least {MIN_CLASS_COVERAGE:.0%} of its boxes covered")
    found = st.optimize_anchors(boxes, classes, dataset.class_names, generator, size, threshold, seed=seed)
    after = coverage(found.generator(generator))
    listing = ", ".join(f"{name} {value:.1%}" for name, value in under.items())
    if after.objective() <= before.objective():
        return keep_given(f"under-covered ({listing}) but no better anchors found")
    shapes = dataclasses.asdict(found)
    report.update(anchors=shapes, after=after, fitted=True, reason=f"under-covered: {listing}")
    smallest = min(found.sizes) * min(found.scales)
    if smallest < P3_STRIDE:
        report["warning"] = (
            f"the smallest fitted anchor is {smallest:.1f} px, under the {P3_STRIDE} px stride of P3: objects this "
            "small would need a P2 level, which this model does not have"
        )
    return shapes, _jsonable(report)


def _jsonable(report: dict) -> dict:
    return {
        key: dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value
        for key, value in report.items()
    }


def resolve_anchors(
    config: TrainConfig, dataset, previous: TrainConfig | None = None
) -> tuple[TrainConfig, dict | None]:
    """``config`` with the anchor shapes that ``config.anchors`` asks for, and the report (None for ``given``).
    ``previous``: the configuration of the run folder being resumed, whose shapes are reused."""
    mode = config.anchors
    if mode == "given" or (mode == "auto" and config.init):
        return config, None  # with --init, auto means the init model's anchors: its box head learned them
    if config.init:
        raise ValueError(
            f"--anchors {mode} with --init {config.init}: the init model keeps its own anchors (the box head was "
            "trained for them); remove --anchors"
        )
    if previous is not None and previous.anchors == mode:
        shapes = _shapes(previous)
        # "resumed": the run folder's anchors.json (the fit's report) is kept.
        return _with_shapes(config, shapes), {
            "anchors": shapes,
            "reason": "the run folder's",
            "resumed": True,
        }
    if mode == "auto":
        shapes, report = fit_to_data(config, dataset, seed=config.seed)
    else:
        shapes = read_anchor_file(mode)
        report = {"anchors": shapes, "reason": f"read from {mode}"}
    return _with_shapes(config, shapes), report


def describe(report: dict) -> str:
    """The lines training prints about its anchors (before / after coverage per class)."""
    lines = [f"anchors ({report['reason']}):"]
    before, after = report.get("before"), report.get("after")
    if before:
        lines.append(
            f"  {'coverage at ' + 'x'.join(map(str, report['image_size'])):<28}{'given':>8}{'fitted':>9}"
        )
        for name, value in before["per_class"].items():
            fitted = after["per_class"][name] if after else math.nan
            lines.append(
                f"  {'class ' + name:<28}{_percent(value):>8}{_percent(fitted):>9}"
                f"  ({before['counts_per_class'][name]} boxes)"
            )
    shapes = report["anchors"]
    lines.append(f"  using {shapes_text(shapes['sizes'], shapes['scales'], shapes['aspect_ratios'])}")
    if "warning" in report:
        lines.append(f"  warning: {report['warning']}")
    return "\n".join(lines)


def shapes_text(sizes, scales, ratios) -> str:
    """``sizes [32.0, ...], scales [1.0, ...], ratios [0.5, ...]``, rounded."""
    return (
        f"sizes {[round(s, 1) for s in sizes]}, scales {[round(s, 3) for s in scales]}, "
        f"ratios {[round(r, 3) for r in ratios]}"
    )


def _percent(value: float) -> str:
    return "-" if value != value else f"{100 * value:.1f}%"


def write_report(report: dict, output: Path) -> None:
    from keras_retinanet import atomic

    atomic.write_json(Path(output) / "anchors.json", report)
