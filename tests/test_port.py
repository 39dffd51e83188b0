"""The torch ports of the three Open Model Zoo networks against the originals.

- The converter (`train.convert_openvino`) on a tiny hand-written IR graph: no data needed, never skips.
- The shipped weights equal the IR files' constants exactly (needs ../shared/teachers).
- Each port against the `openvino` runtime on real photos (needs the teachers, the datasets and the test-only
  `openvino` package): embedder cosine ≥ 0.9999 per face, landmarks within 0.5 px, boxes within 1 px.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from embedder.detector import DETECTOR_WEIGHTS, LANDMARK_WEIGHTS, landmark_region
from embedder.layers import bgr_tensor
from tests.data import teachers, wild_rows
from train.convert_openvino import DETECTOR, EMBEDDER, LANDMARKS, port, read_constants, state_dict_from_ir

TINY_IR = """<?xml version="1.0"?>
<net name="tiny" version="11"><layers>
 <layer id="0" name="x" type="Parameter" version="opset1"><data shape="1,2,4,4" element_type="f32"/></layer>
 <layer id="1" name="w" type="Const" version="opset1"><data element_type="f16" shape="3, 2, 1, 1" offset="0" size="12"/></layer>
 <layer id="2" name="wc" type="Convert" version="opset1"/>
 <layer id="3" name="conv" type="Convolution" version="opset1"/>
 <layer id="4" name="b" type="Const" version="opset1"><data element_type="f16" shape="1, 3, 1, 1" offset="12" size="6"/></layer>
 <layer id="5" name="add" type="Add" version="opset1"/>
 <layer id="6" name="shape" type="Const" version="opset1"><data element_type="i64" shape="2" offset="18" size="16"/></layer>
 <layer id="7" name="reshape" type="Reshape" version="opset1"/>
</layers><edges>
 <edge from-layer="1" from-port="0" to-layer="2" to-port="0"/>
 <edge from-layer="0" from-port="0" to-layer="3" to-port="0"/>
 <edge from-layer="2" from-port="1" to-layer="3" to-port="1"/>
 <edge from-layer="3" from-port="2" to-layer="5" to-port="0"/>
 <edge from-layer="4" from-port="0" to-layer="5" to-port="1"/>
 <edge from-layer="5" from-port="2" to-layer="7" to-port="0"/>
 <edge from-layer="6" from-port="0" to-layer="7" to-port="1"/>
</edges></net>"""


def tiny_ir(tmp_path: Path) -> Path:
    xml = tmp_path / "tiny.xml"
    xml.write_text(TINY_IR)
    weights = np.arange(6, dtype=np.float16) / 4
    bias = np.array([1.5, -2.0, 0.25], dtype=np.float16)
    xml.with_suffix(".bin").write_bytes(weights.tobytes() + bias.tobytes() + np.array([1, -1], np.int64).tobytes())
    return xml


def test_converter_reads_learned_constants_in_graph_order_and_skips_shapes(tmp_path: Path) -> None:
    constants = read_constants(tiny_ir(tmp_path))
    assert [c.shape for c in constants] == [(3, 2, 1, 1), (1, 3, 1, 1)]       # the reshape's i64 shape is no weight
    conv = nn.Conv2d(2, 3, 1)
    state = state_dict_from_ir(conv, tmp_path / "tiny.xml")
    assert torch.equal(state["weight"].flatten(), torch.arange(6, dtype=torch.float32) / 4)
    assert torch.equal(state["bias"], torch.tensor([1.5, -2.0, 0.25]))


def test_converter_refuses_a_port_that_does_not_match_the_graph(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="shape"):
        state_dict_from_ir(nn.Conv2d(2, 4, 1), tiny_ir(tmp_path))        # 8 weights where the graph has 6
    with pytest.raises(ValueError, match="learned constants"):
        state_dict_from_ir(nn.Sequential(nn.Conv2d(2, 3, 1), nn.PReLU()), tmp_path / "tiny.xml")


@pytest.mark.parametrize("network, weights", [(DETECTOR, DETECTOR_WEIGHTS), (LANDMARKS, LANDMARK_WEIGHTS)])
def test_shipped_detector_and_landmark_weights_are_the_converted_ir(network, weights) -> None:
    converted = port(network, teachers()).state_dict()
    shipped = torch.load(weights, weights_only=True)["model"]
    assert shipped.keys() == converted.keys()
    assert all(torch.equal(shipped[k].float(), converted[k]) for k in converted)


def compiled(network) -> object:
    ov = pytest.importorskip("openvino", reason="the port check needs the test-only openvino package")
    return ov.Core().compile_model(str(network.xml(teachers())), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})


def test_embedder_port_matches_openvino_on_real_faces() -> None:
    reference = compiled(EMBEDDER)
    net = port(EMBEDDER, teachers())
    import embedder

    crops = []
    for row in wild_rows(24):
        image = embedder.load_photo(row["file"])
        crops += embedder.aligned_faces(image, embedder.detect_faces(image)[:1])
    x = bgr_tensor(np.stack([np.asarray(c) for c in crops]))
    with torch.no_grad():
        ours = nn.functional.normalize(net(x), dim=1).numpy()
    theirs = np.concatenate([reference(x[i:i + 1].numpy())[0].reshape(1, -1) for i in range(len(x))])
    theirs /= np.linalg.norm(theirs, axis=1, keepdims=True)
    assert len(crops) >= 20 and np.min(np.sum(ours * theirs, axis=1)) >= 0.9999


def test_landmark_port_matches_openvino_within_half_a_pixel() -> None:
    reference = compiled(LANDMARKS)
    net = port(LANDMARKS, teachers())
    import embedder

    worst = 0.0
    for row in wild_rows(24):
        image = embedder.load_photo(row["file"])
        box = np.array([float(row[k]) for k in ("x1", "y1", "x2", "y2")])
        region = landmark_region(box, image.size)
        crop = np.asarray(image.crop(region).resize((48, 48), Image.Resampling.BILINEAR))[None]
        x = bgr_tensor(crop)
        with torch.no_grad():
            ours = net(x).numpy().reshape(5, 2)
        theirs = reference(x.numpy())[0].reshape(5, 2)
        scale = np.array([region[2] - region[0], region[3] - region[1]])
        worst = max(worst, float(np.abs((ours - theirs) * scale).max()))
    assert worst <= 0.5


def test_detector_port_matches_openvino_within_a_pixel() -> None:
    from embedder.detector_net import decode_detections, prior_boxes

    reference = compiled(DETECTOR)
    net = port(DETECTOR, teachers())
    import embedder

    compared = 0
    for row in wild_rows(24):
        image = embedder.load_photo(row["file"])
        x = bgr_tensor(np.asarray(image.resize((300, 300), Image.Resampling.BILINEAR))[None])
        with torch.no_grad():
            loc, prob = net(x)
        boxes, scores = decode_detections(loc[0], prob[0], prior_boxes(), 0.5)
        out = reference(x.numpy())[0][0, 0]
        out = out[out[:, 2] >= 0.5]
        assert len(out) == len(boxes)
        if len(boxes) == 0:
            continue
        size = np.array(image.size * 2, dtype=np.float64)
        theirs = out[np.argsort(-out[:, 2])]
        assert np.allclose(scores.numpy(), theirs[:, 2], atol=1e-4)
        assert np.abs((boxes.numpy() - theirs[:, 3:7]) * size).max() <= 1.0
        compared += len(boxes)
    assert compared >= 20
