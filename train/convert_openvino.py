"""Convert the Open Model Zoo networks in `../shared/teachers` (OpenVINO IR: `.xml` graph + `.bin` weights) into
the torch ports in `embedder/` and save them as the product's weights.

The IR lists its layers in topological order; every learned constant feeds one of five layer types
(Convolution, GroupConvolution, Add — a bias —, Multiply — a folded BatchNorm's scale —, PReLU). Read in that
order, they line up one to one with the parameters of our hand-written modules, which register their parameters
in the same data-flow order; shapes are checked on the way, so a port that differs from the graph fails loudly.
The graph's own structure (strides, paddings, pooling, the SSD prior boxes) is written out in the modules.

    python -m train.convert_openvino [--teachers ../shared/teachers] [--out embedder/weights]

Weights are stored as float16, exactly as the IR files hold them; the product widens them to float32 on load.
"""
from __future__ import annotations

import argparse
import hashlib
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from train.data_paths import teachers_root

LEARNED = {"Convolution", "GroupConvolution", "Add", "Multiply", "PReLU"}
DTYPES = {"f16": np.float16, "f32": np.float32, "i64": np.int64, "i32": np.int32}


@dataclass(frozen=True)
class Network:
    """One IR network and the file its port is saved to."""

    folder: str
    weights: str

    def xml(self, teachers: Path) -> Path:
        return teachers / self.folder / f"{self.folder}.xml"


DETECTOR = Network("face-detection-retail-0004", "detector.pt")
LANDMARKS = Network("landmarks-regression-retail-0009", "landmarks.pt")
EMBEDDER = Network("face-reidentification-retail-0095", "embedder.pt")


def read_constants(xml_path: Path) -> list[np.ndarray]:
    """Every learned constant of the IR graph, in the graph's (topological) layer order."""
    root = ET.parse(xml_path).getroot()
    blob = xml_path.with_suffix(".bin").read_bytes()
    layers = {layer.get("id"): layer for layer in root.find("layers")}
    inputs: dict[str, list[tuple[int, str]]] = {}
    for edge in root.find("edges"):
        inputs.setdefault(edge.get("to-layer"), []).append((int(edge.get("to-port")), edge.get("from-layer")))

    def constant_behind(layer_id: str) -> ET.Element | None:
        layer = layers[layer_id]
        while layer.get("type") == "Convert":               # FP16 constants are widened by a Convert layer
            layer = layers[inputs[layer.get("id")][0][1]]
        return layer if layer.get("type") == "Const" else None

    found = []
    for layer_id, layer in layers.items():
        if layer.get("type") not in LEARNED:
            continue
        for _, source in sorted(inputs.get(layer_id, [])):
            const = constant_behind(source)
            if const is None:
                continue
            data = const.find("data")
            dtype = DTYPES[data.get("element_type")]
            offset, size = int(data.get("offset")), int(data.get("size"))
            shape = [int(d) for d in data.get("shape").split(",") if d.strip()]
            found.append(np.frombuffer(blob, dtype=dtype, count=size // np.dtype(dtype).itemsize,
                                       offset=offset).reshape(shape))
    return found


def state_dict_from_ir(module: nn.Module, xml_path: Path) -> dict[str, torch.Tensor]:
    """The IR's constants as `module`'s state dict (float32), matched in order and checked element by element."""
    constants = read_constants(xml_path)
    params = list(module.state_dict().items())
    if len(constants) != len(params):
        raise ValueError(f"{xml_path.name}: {len(constants)} learned constants, the port has {len(params)} tensors")
    out = {}
    for (name, param), const in zip(params, constants):
        if const.size != param.numel():
            raise ValueError(f"{xml_path.name}: {name} has shape {tuple(param.shape)}, the IR's constant "
                             f"{tuple(const.shape)}")
        out[name] = torch.from_numpy(const.astype(np.float32)).reshape(param.shape)
    return out


def port(network: Network, teachers: Path) -> nn.Module:
    """The torch module of `network` with the IR's weights loaded."""
    module = new_module(network)
    module.load_state_dict(state_dict_from_ir(module, network.xml(teachers)))
    return module.eval()


def new_module(network: Network) -> nn.Module:
    from embedder.detector_net import FaceDetectorNet
    from embedder.landmark_net import LandmarkNet
    from embedder.model import FaceEmbeddingNet

    return {DETECTOR: FaceDetectorNet, LANDMARKS: LandmarkNet, EMBEDDER: FaceEmbeddingNet}[network]()


def source_note(network: Network, teachers: Path) -> dict[str, str]:
    """Where the weights came from: the IR files' names and SHA-256 (recorded beside the saved weights)."""
    xml = network.xml(teachers)
    return {"network": network.folder, "licence": "Apache-2.0", "source": "Intel Open Model Zoo (OpenVINO IR, FP16)",
            **{f"sha256_{p.suffix[1:]}": hashlib.sha256(p.read_bytes()).hexdigest() for p in
               (xml, xml.with_suffix(".bin"))}}


def save(module: nn.Module, path: Path, source: dict[str, str], config: dict | None = None) -> None:
    """float16 weights (the IR's own precision, so nothing is lost), where they came from, and the constructor's
    arguments when the network has any (what `embedder.layers.load_weights` reads back)."""
    state = {k: v.half() for k, v in module.state_dict().items()}
    torch.save({"model": state, "source": source, **({"config": config} if config else {})}, path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--teachers", type=Path, default=None, help="folder of the IR networks")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "embedder" / "weights")
    parser.add_argument("--only", choices=["detector", "landmarks", "embedder"], nargs="*")
    args = parser.parse_args(argv)
    teachers = args.teachers or teachers_root()
    if teachers is None:
        raise SystemExit("error: ../shared/teachers not found (set ONESHOT_TEACHERS or pass --teachers)")
    chosen = {"detector": DETECTOR, "landmarks": LANDMARKS, "embedder": EMBEDDER}
    for name, network in chosen.items():
        if args.only and name not in args.only:
            continue
        save(port(network, teachers), args.out / network.weights, source_note(network, teachers))
        print(f"{network.folder} -> {args.out / network.weights}")


if __name__ == "__main__":
    main()
