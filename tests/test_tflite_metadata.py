"""TFLite Model Metadata (keras_retinanet.export.metadata): every field read back with the schema's own classes,
the network unchanged in LiteRT, and MediaPipe Tasks' ObjectDetector giving LiteRT's detections.

The metadata schema classes ship in the mediapipe wheel. Without mediapipe these tests skip, except in CI
(``CI`` set), where they fail: CI installs it (see ``_require``).
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from retinanet_testing import require_mediapipe

from keras_retinanet.detectors.tflite_file import MetadataError, read_detection_metadata
from keras_retinanet.export.metadata import add_detection_metadata
from keras_retinanet.imaging import stretch

BOXES, CLASSES, SCORES, COUNT = range(4)  # TFLite_Detection_PostProcess output positions


@pytest.fixture(scope="module")
def schema():
    return require_mediapipe("mediapipe.tasks.metadata.metadata_schema_py_generated")


@pytest.fixture(scope="module")
def mediapipe():
    """MediaPipe Tasks' vision API (needs the wheel's native library, not only its schema classes)."""
    return require_mediapipe("mediapipe.tasks.python.vision")


@pytest.fixture(scope="module")
def files(detector_like) -> dict:
    """The detector-like model as float32, float16 and int8 .tflite bytes (no metadata), its labels and canvases;
    and ``one_op``: a float32 file whose outputs are one TFLite_Detection_PostProcess op's own tensors (as exported
    before the thread-safe merge, and as other exporters write them)."""
    from ai_edge_litert.interpreter import Interpreter

    from keras_retinanet.detectors import load_retinanet
    from keras_retinanet.export import convert_tflite
    from keras_retinanet.export import tflite as tflite_export
    from keras_retinanet.imaging import letterbox, read_image

    model = load_retinanet(detector_like["keras"])
    data = {"float32": Path(detector_like["tflite"]).read_bytes()}
    size = tuple(
        int(s) for s in Interpreter(model_content=data["float32"]).get_input_details()[0]["shape"][1:3]
    )
    canvases = [letterbox(read_image(p), size)[0] for p in detector_like["images"]]
    data["float16"] = convert_tflite(model, "float16", size)
    data["int8"] = convert_tflite(model, "int8", size, representative_images=lambda: canvases)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tflite_export, "_per_class_postprocess", tflite_export._detection_postprocess)
        data["one_op"] = convert_tflite(model, "float32", size)
    return {"data": data, "labels": list(detector_like["class_names"]), "canvases": canvases, "size": size}


def _add(data: bytes, labels, **kwargs) -> bytes:
    options = dict(name="RetinaNet test", description="A test detector.", version="0.1.0")
    options.update(kwargs)
    return add_detection_metadata(data, labels=labels, **options)


def _tflite_model(data: bytes):
    from ai_edge_litert import schema_py_generated as tfl

    return tfl.ModelT.InitFromObj(tfl.Model.GetRootAsModel(data, 0))


def _pack(model) -> bytes:
    import flatbuffers

    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), b"TFL3")
    return bytes(builder.Output())


def _metadata_object(data: bytes, schema):
    """The ModelMetadataT of a file, found through the TFLite schema as MediaPipe's extractor does."""
    model = _tflite_model(data)
    entries = [m for m in model.metadata if m.name == b"TFLITE_METADATA"]
    assert len(entries) == 1
    raw = bytes(bytearray(model.buffers[entries[0].buffer].data))
    assert schema.ModelMetadata.ModelMetadataBufferHasIdentifier(raw, 0)  # "M001"
    return schema.ModelMetadataT.InitFromObj(schema.ModelMetadata.GetRootAs(raw, 0))


def _op_roles(data: bytes) -> list[int]:
    """For each model output, which TFLite_Detection_PostProcess output it carries (0 boxes, 1 classes, 2 scores,
    3 count), found from the data flow, independently of the metadata writer.

    An output that is an op's own tensor carries that output. In the merged graph (one op per pair of classes,
    keras_retinanet.export.tflite) the boxes are gathered from the ops' boxes in the order of their scores and
    masked by their counts (sources 0, 2, 3), the classes likewise from their classes (1, 2, 3), the scores from
    their scores (2, 3), and the count from their counts alone (3): the lowest source names the output.
    """
    model = _tflite_model(data)
    subgraph = model.subgraphs[0]
    producer = {int(t): op for op in subgraph.operators for t in op.outputs}

    def is_postprocess(op) -> bool:
        return model.operatorCodes[op.opcodeIndex].customCode == b"TFLite_Detection_PostProcess"

    roles = []
    for output in subgraph.outputs:
        sources, stack, seen = set(), [int(output)], set()
        while stack:
            tensor = stack.pop()
            if tensor in seen or tensor not in producer:  # seen, or a graph input or constant
                continue
            seen.add(tensor)
            op = producer[tensor]
            if is_postprocess(op):
                sources.add([int(t) for t in op.outputs].index(tensor))
            else:
                stack.extend(int(t) for t in op.inputs if int(t) >= 0)
        assert sources, f"output {subgraph.tensors[int(output)].name} does not come from the op"
        roles.append(min(sources))
    return roles


def _with_outputs(data: bytes, order: list[int]) -> bytes:
    """The same model with its outputs listed in ``order`` (positions of the current outputs)."""
    model = _tflite_model(data)
    model.subgraphs[0].outputs = np.asarray(model.subgraphs[0].outputs)[order].copy()
    model.signatureDefs = []  # the signature would still list them in the old order
    return _pack(model)


def _with_float_input(data: bytes) -> bytes:
    """The same network with a float32 [1, H, W, 3] input (0..255): the first op is a CAST, retyped."""
    from ai_edge_litert import schema_py_generated as tfl

    model = _tflite_model(data)
    subgraph = model.subgraphs[0]
    image = int(subgraph.inputs[0])
    subgraph.tensors[image].type = tfl.TensorType.FLOAT32
    for op in subgraph.operators:
        if image in [int(i) for i in op.inputs] and hasattr(op.builtinOptions, "inDataType"):
            op.builtinOptions.inDataType = tfl.TensorType.FLOAT32
    return _pack(model)


def _tflite_ops(data: bytes, custom_code: bytes) -> list:
    model = _tflite_model(data)
    return [
        op
        for op in model.subgraphs[0].operators
        if model.operatorCodes[op.opcodeIndex].customCode == custom_code
    ]


def _run_litert(data: bytes, canvas: np.ndarray) -> list[np.ndarray]:
    """All outputs, ordered by the op's output position (boxes, classes, scores, count)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=data, num_threads=1)
    interpreter.allocate_tensors()
    detail = interpreter.get_input_details()[0]
    interpreter.set_tensor(detail["index"], canvas[None].astype(detail["dtype"]))
    interpreter.invoke()
    outputs = [interpreter.get_tensor(d["index"]) for d in interpreter.get_output_details()]
    return [outputs[r] for r in np.argsort(_op_roles(data))]


# ---------------------------------------------------------------------------------------------------------------
# The metadata itself


def test_every_field_reads_back_with_the_schema_classes(files, schema):
    labels = files["labels"]
    height, width = files["size"]
    data = _add(
        files["data"]["float32"],
        labels,
        image_size=(height, width),
        input_dtype="uint8",
        author="keras_retinanet",
        license="Apache-2.0",
    )
    md = _metadata_object(data, schema)
    assert (md.name, md.description, md.version) == (b"RetinaNet test", b"A test detector.", b"0.1.0")
    assert (md.author, md.license) == (b"keras_retinanet", b"Apache-2.0")
    # output_tensor_groups entered the schema in 1.2.0 (metadata_version.cc); readers below it must refuse.
    assert md.minParserVersion == b"1.2.0"
    assert len(md.subgraphMetadata) == 1
    subgraph = md.subgraphMetadata[0]

    (image,) = subgraph.inputTensorMetadata
    assert image.name == b"image"
    assert image.content.contentPropertiesType == schema.ContentProperties.ImageProperties
    assert image.content.contentProperties.colorSpace == schema.ColorSpaceType.RGB
    size = image.content.contentProperties.defaultSize
    assert (size.height, size.width) == (height, width)
    assert not image.processUnits  # uint8 pixels go in unchanged: no NormalizationOptions
    assert list(image.stats.min) == [0.0] and list(image.stats.max) == [255.0]

    names = [t.name.decode() for t in subgraph.outputTensorMetadata]
    expected = ["location", "category", "score", "number of detections"]
    assert names == [expected[r] for r in _op_roles(data)]  # listed in the model's output order
    by_name = dict(zip(names, subgraph.outputTensorMetadata))

    location = by_name["location"].content
    assert location.contentPropertiesType == schema.ContentProperties.BoundingBoxProperties
    box = location.contentProperties
    # index[k] = where left, top, right, bottom sit in a (ymin, xmin, ymax, xmax) row.
    assert list(box.index) == [1, 0, 3, 2]
    assert box.type == schema.BoundingBoxType.BOUNDARIES
    assert box.coordinateType == schema.CoordinateType.RATIO
    assert (location.range.min, location.range.max) == (2, 2)

    (label_file,) = by_name["category"].associatedFiles
    assert label_file.name == b"labels.txt"
    assert label_file.type == schema.AssociatedFileType.TENSOR_VALUE_LABELS
    assert list(by_name["score"].stats.min) == [0.0] and list(by_name["score"].stats.max) == [1.0]
    assert by_name["number of detections"].associatedFiles is None

    (group,) = subgraph.outputTensorGroups
    assert group.name == b"detection_result"
    assert [n.decode() for n in group.tensorNames] == ["location", "category", "score"]

    # The label map is a zip appended to the flatbuffer, where MediaPipe's extractor looks for it.
    archive = zipfile.ZipFile(io.BytesIO(data))
    assert archive.namelist() == ["labels.txt"]
    assert archive.read("labels.txt").decode().splitlines() == labels

    # The converter's own metadata entries are kept.
    before = {m.name for m in _tflite_model(files["data"]["float32"]).metadata}
    after = {m.name for m in _tflite_model(data).metadata}
    assert after == before | {b"TFLITE_METADATA"}


def test_read_detection_metadata(files, schema, tmp_path):
    data = _add(files["data"]["int8"], files["labels"], author="me")
    path = tmp_path / "model.tflite"
    path.write_bytes(data)
    info = read_detection_metadata(path)
    assert info == read_detection_metadata(data)
    assert (info["name"], info["version"], info["author"], info["license"]) == (
        "RetinaNet test",
        "0.1.0",
        "me",
        None,
    )
    assert info["input"]["size"] == files["size"]
    assert info["input"]["dtype"] == "uint8" and info["input"]["normalization"] is None
    assert info["input"]["color_space"] == "RGB"
    assert [o["name"] for o in info["outputs"]] == [
        ["location", "category", "score", "number of detections"][r] for r in _op_roles(data)
    ]
    assert (info["box_index"], info["box_type"], info["coordinate_type"]) == (
        [1, 0, 3, 2],
        "BOUNDARIES",
        "RATIO",
    )
    assert info["labels"] == files["labels"]
    assert info["associated_files"] == ["labels.txt"]


def test_a_file_without_metadata_reads_as_none(files, tmp_path):
    path = tmp_path / "old.tflite"
    path.write_bytes(files["data"]["float32"])
    assert read_detection_metadata(path) is None
    assert read_detection_metadata(files["data"]["float32"]) is None
    with pytest.raises(MetadataError, match="not-a-model.tflite: not a TFLite flatbuffer"):
        (tmp_path / "not-a-model.tflite").write_bytes(b"PK\x03\x04 something else")
        read_detection_metadata(tmp_path / "not-a-model.tflite")


@pytest.mark.parametrize("variant", ["float32", "float16", "int8"])
def test_network_unchanged_in_litert(files, schema, variant):
    plain = files["data"][variant]
    data = _add(plain, files["labels"])
    # Same flatbuffer apart from the one added buffer: every tensor buffer byte for byte.
    old, new = _tflite_model(plain), _tflite_model(data)
    assert len(new.buffers) == len(old.buffers) + 1
    for a, b in zip(old.buffers, new.buffers):
        assert (a.data is None) == (b.data is None)
        if a.data is not None:
            assert bytes(bytearray(a.data)) == bytes(bytearray(b.data))
    for canvas in files["canvases"]:
        for before, after in zip(_run_litert(plain, canvas), _run_litert(data, canvas), strict=True):
            np.testing.assert_array_equal(before, after)
    assert (
        int(_run_litert(data, files["canvases"][0])[COUNT][0]) > 0
    )  # the comparison was not of empty outputs


def test_deterministic_and_replaces_old_metadata(files, schema):
    plain = files["data"]["float32"]
    first = _add(plain, files["labels"])
    assert _add(plain, files["labels"]) == first
    assert _add(first, files["labels"]) == first  # adding again replaces, not appends
    renamed = _add(first, ["a", "b", "c"], version="2")
    assert zipfile.ZipFile(io.BytesIO(renamed)).namelist() == ["labels.txt"]
    assert read_detection_metadata(renamed)["labels"] == ["a", "b", "c"]
    assert _metadata_object(renamed, schema).version == b"2"


def test_one_op_outputs_are_named_by_the_op_not_by_position(files, schema):
    one_op = files["data"]["one_op"]
    assert len(_tflite_ops(one_op, b"TFLite_Detection_PostProcess")) == 1
    assert _op_roles(one_op) == [0, 1, 2, 3]
    reversed_data = _with_outputs(one_op, [3, 2, 1, 0])
    assert _op_roles(reversed_data) == [3, 2, 1, 0]
    info = read_detection_metadata(_add(reversed_data, files["labels"]))
    assert [o["name"] for o in info["outputs"]] == ["number of detections", "score", "category", "location"]


@pytest.mark.parametrize("order", [[3, 2, 1, 0], [0, 1, 3, 2], [0, 2, 1, 3]])
def test_merged_outputs_in_another_order_are_named_by_what_they_carry(files, schema, order):
    """The exported graph merges one op per pair of classes: its outputs are not the ops' own tensors. Listed in
    another order (classes and scores, both [1, M], swapped included), each is named by the op output it is
    computed from, never by position or shape."""
    merged = files["data"]["float32"]
    assert len(_tflite_ops(merged, b"TFLite_Detection_PostProcess")) == 2  # 3 classes: a pair and one
    assert _op_roles(merged) == [0, 1, 2, 3]
    data = _with_outputs(merged, order)
    assert _op_roles(data) == order
    info = read_detection_metadata(_add(data, files["labels"]))
    names = ["location", "category", "score", "number of detections"]
    assert [o["name"] for o in info["outputs"]] == [names[r] for r in order]


def test_float_input_gets_normalization(files, schema):
    data = _add(
        _with_float_input(files["data"]["float32"]), files["labels"], normalization=(127.5, [127.5] * 3)
    )
    (image,) = _metadata_object(data, schema).subgraphMetadata[0].inputTensorMetadata
    (unit,) = image.processUnits
    assert unit.optionsType == schema.ProcessUnitOptions.NormalizationOptions
    assert list(unit.options.mean) == [127.5] and list(unit.options.std) == [127.5]
    assert list(image.stats.min) == [-1.0] and list(image.stats.max) == [
        1.0
    ]  # (0 - 127.5) / 127.5, (255 - ...)
    assert read_detection_metadata(data)["input"]["normalization"] == (127.5, 127.5)


def test_bad_arguments_are_refused_with_a_reason(files):
    plain, labels = files["data"]["float32"], files["labels"]
    float_input = _with_float_input(plain)
    cases = [
        (dict(labels=labels[:2]), "got 2 labels but TFLite_Detection_PostProcess has num_classes=3"),
        (dict(labels=[labels[0], "", labels[2]]), "label 1 .* non-empty name on one line"),
        (dict(labels=[labels[0], "two\nlines", labels[2]]), "label 1 .* one line"),
        (dict(labels=[labels[0], labels[0], labels[2]]), "labels must be distinct"),
        (
            dict(labels=labels, image_size=(64, 64)),
            r"image_size \(64, 64\) does not match the model's input 128x128",
        ),
        (
            dict(labels=labels, input_dtype="float32"),
            "input_dtype 'float32' does not match the model's uint8 input",
        ),
        (dict(labels=labels, normalization=(0.0, 1.0)), "normalization applies to float32 input only"),
    ]
    for kwargs, message in cases:
        with pytest.raises(MetadataError, match=message):
            _add(plain, **kwargs)
    with pytest.raises(MetadataError, match="float32 input needs normalization"):
        _add(float_input, labels)
    with pytest.raises(MetadataError, match="one value for all channels"):
        _add(float_input, labels, normalization=([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]))
    with pytest.raises(MetadataError, match="not a TFLite flatbuffer"):
        _add(b"\x00" * 64, labels)
    cut = _tflite_model(plain)
    cut.subgraphs[0].outputs = cut.subgraphs[0].outputs[:3]
    with pytest.raises(MetadataError, match="outputs must be the four detection outputs"):
        _add(_pack(cut), labels)


# ---------------------------------------------------------------------------------------------------------------
# MediaPipe Tasks


def _mediapipe_pixel_boxes(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    """The op's (ymin, xmin, ymax, xmax) fractions as MediaPipe reports them: integer origin and size, each
    truncated and clamped to [0, size] (calculators/util/detection_transformation_calculator.cc)."""
    ymin, xmin, ymax, xmax = np.asarray(boxes, np.float64).T
    x0, y0 = np.clip(np.trunc(xmin * width), 0, width), np.clip(np.trunc(ymin * height), 0, height)
    w = np.clip(np.trunc((xmax - xmin) * width), 0, width)
    h = np.clip(np.trunc((ymax - ymin) * height), 0, height)
    return np.stack([x0, y0, x0 + w, y0 + h], axis=1)


def _mediapipe_detections(path: str, image: np.ndarray, labels: list[str]) -> list[tuple]:
    """(class id, score, x0, y0, x1, y1) with MediaPipe's default options, one row per (box, category)."""
    mp = require_mediapipe("mediapipe")
    vision = require_mediapipe("mediapipe.tasks.python.vision")
    base = require_mediapipe("mediapipe.tasks.python.core.base_options")
    options = vision.ObjectDetectorOptions(base_options=base.BaseOptions(model_asset_path=path))
    with vision.ObjectDetector.create_from_options(options) as detector:
        result = detector.detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(image)))
    rows = []
    for detection in result.detections:
        b = detection.bounding_box
        # Boxes of equal pixels are merged into one detection with several categories
        # (DetectionsDeduplicateCalculator); with a label map the ids are dropped, the names kept.
        for category in detection.categories:
            rows.append(
                (
                    labels.index(category.category_name),
                    category.score,
                    b.origin_x,
                    b.origin_y,
                    b.origin_x + b.width,
                    b.origin_y + b.height,
                )
            )
    return sorted(rows)


def _litert_detections(data: bytes, image: np.ndarray, size) -> list[tuple]:
    boxes, classes, scores, count = _run_litert(data, stretch(image, size)[0])
    n = int(count.reshape(-1)[0])
    pixels = _mediapipe_pixel_boxes(boxes.reshape(-1, 4)[:n], *image.shape[:2])
    return sorted(
        (int(c), float(s), *(float(v) for v in box))
        for c, s, box in zip(classes.reshape(-1)[:n], scores.reshape(-1)[:n], pixels)
    )


def _assert_same_detections(mediapipe_rows, litert_rows):
    assert len(mediapipe_rows) == len(litert_rows) > 0
    for got, want in zip(mediapipe_rows, litert_rows):
        assert got[0] == want[0]
        assert abs(got[1] - want[1]) <= 1e-6
        assert max(abs(a - b) for a, b in zip(got[2:], want[2:])) <= 1  # MediaPipe's float32 projection


@pytest.fixture
def real_images(bccd_subset) -> dict:
    from keras_retinanet.imaging import read_image

    root = bccd_subset(["BloodImage_00000"])
    photo = read_image(root / "JPEGImages" / "BloodImage_00000.jpg")  # 480 x 640
    return {
        "square": np.ascontiguousarray(photo[:, 80:560]),
        "landscape": photo,
        "portrait": np.ascontiguousarray(photo[:, 100:420]),
    }


@pytest.mark.parametrize("variant", ["float32", "float16", "int8"])
def test_mediapipe_object_detector_gives_litert_detections(mediapipe, files, real_images, tmp_path, variant):
    path = tmp_path / f"model_{variant}.tflite"
    data = _add(files["data"][variant], files["labels"])
    path.write_bytes(data)
    for image in real_images.values():
        _assert_same_detections(
            _mediapipe_detections(str(path), image, files["labels"]),
            _litert_detections(data, image, files["size"]),
        )


def test_mediapipe_finds_outputs_by_metadata_name_and_reads_float_input(
    mediapipe, files, real_images, tmp_path
):
    image = real_images["landscape"]
    # A one-op file with its outputs listed backwards: MediaPipe reads them by the metadata's names.
    one_op = files["data"]["one_op"]
    reordered = tmp_path / "reordered.tflite"
    reordered.write_bytes(_add(_with_outputs(one_op, [3, 2, 1, 0]), files["labels"]))
    _assert_same_detections(
        _mediapipe_detections(str(reordered), image, files["labels"]),
        _litert_detections(one_op, image, files["size"]),
    )
    plain = files["data"]["float32"]
    want = _litert_detections(plain, image, files["size"])
    # Float input: MediaPipe feeds (pixel - mean) / std; mean 0, std 1 gives the uint8 file's answers.
    float_input = tmp_path / "float_input.tflite"
    float_input.write_bytes(_add(_with_float_input(plain), files["labels"], normalization=(0.0, 1.0)))
    _assert_same_detections(_mediapipe_detections(str(float_input), image, files["labels"]), want)


def test_mediapipe_refuses_a_file_without_metadata(mediapipe, files, tmp_path):
    path = tmp_path / "plain.tflite"
    path.write_bytes(files["data"]["float32"])
    with pytest.raises(ValueError, match="require TFLite Model Metadata but none was found"):
        _mediapipe_detections(str(path), np.zeros((8, 8, 3), np.uint8), files["labels"])
