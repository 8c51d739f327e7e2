"""Detection backends: configuration errors, the shipped person model on real photos, YOLO decoding.

The photos (tests/data/photos/README.md) are public-domain or CC0 pictures taken
from PyPI packages; the expected person regions were read off the pictures by
eye and are deliberately loose (IoU >= 0.6 with the box found).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

np = pytest.importorskip("numpy")

from agents.detectors.base import Detector, create_detector, detector_types  # noqa: E402
from agents.detectors.boxes import iou, nms  # noqa: E402
from agents.detectors.frames import as_bgr  # noqa: E402
from agents.detectors.plugins.yolo import names_from_metadata  # noqa: E402
from agents.detectors.yolo_decode import Letterbox, decode  # noqa: E402
from schemas.errors import ConfigError  # noqa: E402

PHOTOS = Path(__file__).parent / "data" / "photos"

#: Where the person is in each people photo, normalised (x1, y1, x2, y2), read off the image.
PEOPLE = {
    "astronaut.jpg": (0.04, 0.05, 0.72, 1.0),  # Eileen Collins, head to the bottom edge, helmet excluded
    "cameraman.jpg": (0.0, 0.12, 0.62, 1.0),  # leaning in from the left edge; the tripod is not him
    "grace_hopper.jpg": (0.02, 0.03, 1.0, 1.0),  # portrait filling the frame
}
NO_PEOPLE = ["coffee.jpg", "chelsea_cat.jpg", "rocket.jpg"]


def box_iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    return float(iou(np.asarray(a, dtype=np.float64), np.asarray([b], dtype=np.float64))[0])


def read_photo(name: str) -> Any:
    cv2 = pytest.importorskip("cv2")
    frame = cv2.imread(str(PHOTOS / name), cv2.IMREAD_COLOR)
    assert frame is not None, f"cannot read {name}"
    return frame


@pytest.fixture(scope="module")
def ssdlite() -> Iterator[Detector]:
    pytest.importorskip("cv2")
    pytest.importorskip("onnxruntime")
    detector = create_detector({"type": "ssdlite"})
    yield detector
    detector.close()


# --- registry and configuration --------------------------------------------------------------


def test_builtin_backends_are_registered() -> None:
    assert {"ssdlite", "yolo"} <= set(detector_types())


def test_missing_and_unknown_type_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="needs a type"):
        create_detector({})
    with pytest.raises(ConfigError, match=r"'hog'.*ssdlite"):
        create_detector({"type": "hog"})


@pytest.mark.parametrize(("key", "value"), [("threshold", 1.5), ("threshold", "high"), ("threshold", True),
                                            ("iou", 0.0), ("threads", 0), ("threads", 2.5),
                                            ("max_detections", -1)])
def test_bad_values_name_the_key(key: str, value: object) -> None:
    with pytest.raises(ConfigError, match=key):
        create_detector({"type": "ssdlite", key: value})


def test_missing_model_file_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.onnx"
    with pytest.raises(ConfigError, match=r"nope.onnx.*no such file"):
        create_detector({"type": "ssdlite", "model": str(missing)})
    with pytest.raises(ConfigError, match="model is required"):
        create_detector({"type": "yolo"})


def test_corrupt_model_file_is_a_config_error(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"this is not a protobuf" * 10)
    with pytest.raises(ConfigError, match="cannot load model") as caught:
        create_detector({"type": "ssdlite", "model": str(corrupt)})
    assert caught.value.__cause__ is not None
    with pytest.raises(ConfigError, match="cannot load model"):
        create_detector({"type": "yolo", "model": str(corrupt)})


def test_importing_the_registry_loads_no_inference_library() -> None:
    code = ("import sys, agents.detectors.base as b; b.detector_types(); "
            "print(sorted(m for m in ('onnxruntime', 'cv2', 'ultralytics', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).parent.parent)
    assert out.stdout.strip() == "[]"


# --- the shipped SSDLite person model on real photographs ------------------------------------


@pytest.mark.parametrize("name", sorted(PEOPLE))
def test_ssdlite_finds_the_person(ssdlite: Detector, name: str) -> None:
    found = ssdlite.detect(read_photo(name))
    assert found, f"no person found in {name}"
    assert all(d.label == "person" and 0.5 <= d.confidence <= 1.0 and d.track_id is None for d in found)
    best = max(box_iou(d.box, PEOPLE[name]) for d in found)
    assert best >= 0.6, f"{name}: boxes {[d.box for d in found]} miss the person (best IoU {best:.2f})"


@pytest.mark.parametrize("name", NO_PEOPLE)
def test_ssdlite_sees_no_person_where_there_is_none(ssdlite: Detector, name: str) -> None:
    assert ssdlite.detect(read_photo(name)) == []


def test_ssdlite_finds_people_in_their_own_quadrants(ssdlite: Detector) -> None:
    cv2 = pytest.importorskip("cv2")

    def tile(name: str) -> Any:
        return cv2.resize(read_photo(name), (320, 320), interpolation=cv2.INTER_AREA)

    # cameraman top right, Grace Hopper bottom right, coffee bottom left, empty sky top left.
    sky = np.full((320, 320, 3), (235, 206, 135), dtype=np.uint8)
    grid = np.vstack([np.hstack([sky, tile("cameraman.jpg")]),
                      np.hstack([tile("coffee.jpg"), tile("grace_hopper.jpg")])])
    found = ssdlite.detect(grid)
    centres = [((d.box[0] + d.box[2]) / 2, (d.box[1] + d.box[3]) / 2) for d in found]
    quadrants = sorted((int(x >= 0.5), int(y >= 0.5)) for x, y in centres)
    assert quadrants == [(1, 0), (1, 1)], [d.box for d in found]


def test_ssdlite_threshold_and_grey_frames(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    cv2 = pytest.importorskip("cv2")
    grey = cv2.imread(str(PHOTOS / "cameraman.jpg"), cv2.IMREAD_GRAYSCALE)
    assert grey.ndim == 2
    strict = create_detector({"type": "ssdlite", "threshold": 0.999, "threads": 1})
    lenient = create_detector({"type": "ssdlite", "threshold": 0.3})
    assert strict.labels == ("person",)
    assert strict.detect(grey) == []
    (person,) = lenient.detect(grey)
    assert box_iou(person.box, PEOPLE["cameraman.jpg"]) >= 0.6


def test_as_bgr_accepts_camera_formats_and_refuses_others() -> None:
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4)
    bgr = as_bgr(grey)
    assert bgr.shape == (3, 4, 3) and (bgr[:, :, 2] == grey).all()
    bgra = np.zeros((3, 4, 4), dtype=np.uint8)
    bgra[:, :, 3] = 255
    assert as_bgr(bgra).shape == (3, 4, 3) and not as_bgr(bgra).any()
    with pytest.raises(ValueError, match="uint8"):
        as_bgr(np.zeros((3, 4, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="shape"):
        as_bgr(np.zeros((3, 4, 2), dtype=np.uint8))


# --- NMS and YOLO decoding on made-up tensors ------------------------------------------------


def test_nms_suppresses_overlaps_within_a_class_only() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60], [0, 0, 10, 9.5]], dtype=np.float64)
    scores = np.array([0.6, 0.9, 0.5, 0.8])
    assert nms(boxes, scores, 0.5).tolist() == [1, 2]
    assert nms(boxes, scores, 0.5, classes=np.array([0, 0, 0, 1])).tolist() == [1, 3, 2]
    assert nms(boxes, scores, 0.5, limit=1).tolist() == [1]
    assert nms(boxes[:0], scores[:0], 0.5).tolist() == []


def test_letterbox_scales_pads_and_converts_to_rgb() -> None:
    pytest.importorskip("cv2")
    from agents.detectors.yolo_decode import letterbox

    frame = np.zeros((100, 200, 3), dtype=np.uint8)
    frame[:, :, 0] = 255  # pure blue in BGR
    tensor, placement = letterbox(frame, 64, 64)
    assert tensor.shape == (1, 3, 64, 64) and tensor.dtype == np.float32
    assert placement == Letterbox(scale=0.32, pad_x=0, pad_y=16, frame_width=200, frame_height=100)
    image = tensor[0]
    assert np.allclose(image[:, :16, :], 114 / 255) and np.allclose(image[:, 48:, :], 114 / 255)
    assert np.allclose(image[2, 16:48, :], 1.0) and np.allclose(image[:2, 16:48, :], 0.0)  # blue is RGB[2]


def yolo_output(rows: list[tuple[float, float, float, float, int, float]], classes: int,
                anchors: int = 8) -> Any:
    """A (1, 4 + classes, anchors) tensor as Ultralytics exports it; unused anchors score 0."""
    out = np.zeros((1, 4 + classes, anchors), dtype=np.float32)
    for i, (cx, cy, w, h, cls, score) in enumerate(rows):
        out[0, :4, i] = (cx, cy, w, h)
        out[0, 4 + cls, i] = score
    return out


# A 128 x 64 frame letterboxed into 64 x 64: scale 0.5, 16 rows of padding above and below.
PLACEMENT = Letterbox(scale=0.5, pad_x=0, pad_y=16, frame_width=128, frame_height=64)
ROWS = [
    (32.0, 32.0, 20.0, 10.0, 2, 0.90),  # frame px x 44..84, y 22..42 -> (0.34375, 0.34375, 0.65625, 0.65625)
    (33.0, 32.0, 20.0, 10.0, 2, 0.80),  # same object, same class, weaker: suppressed
    (33.0, 32.0, 20.0, 10.0, 0, 0.70),  # same place, other class: kept
    (10.0, 20.0, 8.0, 8.0, 1, 0.30),  # below the threshold
    (60.0, 40.0, 20.0, 10.0, 1, 0.60),  # pokes out to the right: clipped to 1.0
]


@pytest.mark.parametrize("transposed", [False, True])
def test_yolo_decode_unmaps_thresholds_and_suppresses(transposed: bool) -> None:
    out = yolo_output(ROWS, classes=3)
    if transposed:
        out = out.transpose(0, 2, 1)
    found = decode(out, PLACEMENT, classes=3, threshold=0.5, iou=0.5, limit=10)
    assert found.classes.tolist() == [2, 0, 1]
    assert np.allclose(found.scores, [0.9, 0.7, 0.6])
    assert np.allclose(found.boxes[0], [0.34375, 0.34375, 0.65625, 0.65625])
    assert np.allclose(found.boxes[2], [100 / 128, 38 / 64, 1.0, 58 / 64])  # x2 was 140 / 128


def test_yolo_decode_refuses_an_output_that_does_not_fit_the_labels() -> None:
    with pytest.raises(ValueError, match="4 box values"):
        decode(yolo_output(ROWS, classes=3), PLACEMENT, classes=80, threshold=0.5, iou=0.5, limit=10)


def test_names_from_ultralytics_metadata() -> None:
    assert names_from_metadata({"names": "{0: 'cat', 1: 'dog'}"}) == ("cat", "dog")
    assert names_from_metadata({"names": "['a', 'b']"}) == ("a", "b")
    assert names_from_metadata({}) is None
    assert names_from_metadata({"names": "{0: 'a', 2: 'c'}"}) is None
    assert names_from_metadata({"names": "not python"}) is None


# --- YOLO ONNX end to end, on a tiny graph built here ----------------------------------------


def tiny_yolo(path: Path, *, names: str | None, size: int | str = 64, classes: int = 3) -> Path:
    """An ONNX file shaped like an Ultralytics export whose output is ROWS whatever the image."""
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper, numpy_helper

    raw = yolo_output(ROWS, classes=classes, anchors=8)
    nodes = [
        helper.make_node("ReduceMean", ["images"], ["mean"], keepdims=0),
        helper.make_node("Mul", ["mean", "zero"], ["nothing"]),  # ties the output to the input
        helper.make_node("Add", ["raw", "nothing"], ["output0"]),
    ]
    graph = helper.make_graph(
        nodes, "tiny_yolo",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 4 + classes, 8])],
        initializer=[numpy_helper.from_array(raw, "raw"),
                     numpy_helper.from_array(np.zeros((), dtype=np.float32), "zero")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    if names is not None:
        model.metadata_props.add(key="names", value=names)
    onnx.save(model, str(path))
    return path


def test_yolo_onnx_end_to_end_with_names_from_metadata(tmp_path: Path) -> None:
    pytest.importorskip("cv2")
    model = tiny_yolo(tmp_path / "tiny.onnx", names="{0: 'cat', 1: 'dog', 2: 'person'}")
    detector = create_detector({"type": "yolo", "model": str(model), "threads": 1})
    assert detector.labels == ("cat", "dog", "person")
    found = detector.detect(np.zeros((64, 128, 3), dtype=np.uint8))
    assert [(d.label, round(d.confidence, 2)) for d in found] == [("person", 0.9), ("cat", 0.7), ("dog", 0.6)]
    assert found[0].box == pytest.approx((0.34375, 0.34375, 0.65625, 0.65625))
    assert all(d.track_id is None for d in found)
    detector.close()


def test_yolo_labels_option_and_coco_default(tmp_path: Path) -> None:
    model = tiny_yolo(tmp_path / "tiny.onnx", names=None)
    mine = create_detector({"type": "yolo", "model": str(model), "labels": ["a", "b", "c"]})
    assert mine.labels == ("a", "b", "c")
    with pytest.raises(ConfigError, match="set labels"):
        create_detector({"type": "yolo", "model": str(model)})  # 80 COCO names do not fit 3 classes
    coco = tiny_yolo(tmp_path / "coco.onnx", names=None, classes=80)
    assert create_detector({"type": "yolo", "model": str(coco)}).labels[:3] == ("person", "bicycle", "car")


def test_yolo_input_size(tmp_path: Path) -> None:
    fixed = tiny_yolo(tmp_path / "fixed.onnx", names="['a', 'b', 'c']")
    with pytest.raises(ConfigError, match=r"input_size = 320.*64x64"):
        create_detector({"type": "yolo", "model": str(fixed), "input_size": 320})
    with pytest.raises(ConfigError, match="multiple of 32"):
        create_detector({"type": "yolo", "model": str(fixed), "input_size": 100})
    dynamic = tiny_yolo(tmp_path / "dynamic.onnx", names="['a', 'b', 'c']", size="side")
    detector = create_detector({"type": "yolo", "model": str(dynamic), "input_size": 64})
    found = detector.detect(np.zeros((64, 128, 3), dtype=np.uint8))
    assert found[0].box == pytest.approx((0.34375, 0.34375, 0.65625, 0.65625))


def test_yolo_pt_without_ultralytics_says_what_to_install(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    weights = tmp_path / "yolov8n.pt"
    weights.write_bytes(b"not really weights")
    monkeypatch.setitem(sys.modules, "ultralytics", None)  # makes `import ultralytics` fail
    with pytest.raises(ConfigError, match=r"pip install 'edgebus\[yolo\]'") as caught:
        create_detector({"type": "yolo", "model": str(weights)})
    assert isinstance(caught.value.__cause__, ImportError)
    assert "format=onnx" in str(caught.value)
