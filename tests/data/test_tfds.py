"""TFDS reader on a tiny local builder prepared in a tmp data_dir (no network): the real tfds code path."""

from __future__ import annotations

import numpy as np
import pytest

tfds = pytest.importorskip("tensorflow_datasets")
import tensorflow as tf  # noqa: E402

from keras_retinanet.data import DataError, load_dataset  # noqa: E402
from keras_retinanet.data.pipeline import make_inference_dataset  # noqa: E402

HEIGHT, WIDTH = 40, 80


def _image(i: int) -> np.ndarray:
    return np.full((HEIGHT, WIDTH, 3), 20 * i, np.uint8)


class TinyDetection(tfds.core.GeneratorBasedBuilder):
    """Three PNG images 80x40; example 1 has a zero-area box (a bad record) and a difficult one."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(None, None, 3), encoding_format="png"),
                    "image/filename": tfds.features.Text(),
                    "objects": tfds.features.Sequence(
                        {
                            "bbox": tfds.features.BBoxFeature(),
                            "label": tfds.features.ClassLabel(names=["cat", "dog"]),
                            "is_difficult": np.bool_,
                        }
                    ),
                }
            ),
        )

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        objects = [
            [(tfds.features.BBox(0.25, 0.5, 0.75, 1.0), 1, False)],
            [
                (tfds.features.BBox(0.1, 0.1, 0.1, 0.4), 0, False),
                (tfds.features.BBox(0.0, 0.0, 0.5, 0.5), 0, True),
            ],
            [],
        ]
        for i, objs in enumerate(objects):
            yield (
                i,
                {
                    "image": _image(i),
                    "image/filename": f"img{i}.png",
                    "objects": {
                        "bbox": [o[0] for o in objs],
                        "label": [o[1] for o in objs],
                        "is_difficult": [o[2] for o in objs],
                    },
                },
            )


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tfds")
    TinyDetection(data_dir=str(directory)).download_and_prepare()
    return str(directory)


def test_tfds_reader_boxes_classes_ignore(data_dir):
    with pytest.raises(
        DataError, match=r"tfds:tiny_detection/train\[1\] \(img1\.png\): object 0 \(cat\): .*zero"
    ):
        load_dataset("tfds:tiny_detection:train", data_dir=data_dir)
    data = load_dataset("tfds:tiny_detection", data_dir=data_dir, skip_bad=True)
    assert data.class_names == ["cat", "dog"]
    assert data.skipped.counts() == {"box_zero_area": 1}
    ex0, ex1, ex2 = data.examples
    assert (ex0["width"], ex0["height"]) == (WIDTH, HEIGHT)
    # Normalised (ymin, xmin, ymax, xmax) = (0.25, 0.5, 0.75, 1.0) -> xyxy pixels (40, 10, 80, 30).
    np.testing.assert_allclose(ex0["boxes"], [[40, 10, 80, 30]])
    assert ex0["classes"].tolist() == [1]
    assert ex1["ignore"].tolist() == [True] and ex1["classes"].tolist() == [0]
    assert len(ex2["boxes"]) == 0


def test_tfds_images_stream_in_example_order(data_dir):
    data = load_dataset("tfds:tiny_detection:train[1:]", data_dir=data_dir, skip_bad=True)
    assert len(data) == 2
    batches = list(make_inference_dataset(data, image_size=(HEIGHT, WIDTH), batch_size=2))
    images = batches[0][0].numpy()
    np.testing.assert_array_equal(images[0], _image(1).astype(np.float32))
    np.testing.assert_array_equal(images[1], _image(2).astype(np.float32))
    encoded = list(data.encoded_images())
    assert len(encoded) == 2 and tf.io.decode_png(encoded[1]).shape == (HEIGHT, WIDTH, 3)


def test_tfds_unknown_dataset_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="no_such_dataset_xyz"):
        load_dataset("tfds:no_such_dataset_xyz", data_dir=str(tmp_path))
