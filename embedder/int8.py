"""The embedder in int8: the same weights, quantised, 1.5–1.7x faster on one CPU thread.

Why: issue #5 allows 15 ms per face on one thread, and the float32 network with its mirror needs ~38 ms on an
AVX2-only CPU (16–23 ms on the Intel VMs). Static int8 quantisation (per-channel weights, per-tensor activations,
BatchNorm folded, ReLU and the residual add fused into the convolutions; stem and head stay float32) runs the same
network on integer kernels (fbgemm/oneDNN, torch's "x86" engine): 1.5–1.7x faster on that CPU, with held-out
verification accuracy within 0.3 points of float32's (`benchmarks/int8.py`, side by side). The product runs it
wherever torch has those kernels (`embedder.api.product_precision`).

Static quantisation needs each activation's range. `calibrate` (run by `train.export`) records histograms of
every activation on training people's crops (never the held-out people or LFW) and keeps, per activation, the
clipping range that minimises the quantisation error (torch's HistogramObserver search, too slow to run at
every start, so it runs once at export). Those ranges ship beside the weights (a few kB); loading
rebuilds the int8 network from the float16 weights and the ranges (`quantize`), so one set of weights serves
both precisions and the model id stays the weights' digest.
"""
from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from embedder.model import EmbedderConfig, EmbeddingNet, to_input_size

if TYPE_CHECKING:
    from torch.ao.quantization import QConfigMapping

ENGINE = "x86"          # torch's int8 engine for x86 CPUs: fbgemm or oneDNN, chosen per operator
OBSERVER_PREFIX = "activation_post_process_"


def supported() -> bool:
    """Whether this torch build has the x86 int8 kernels (not on ARM builds; those run float32)."""
    return ENGINE in torch.backends.quantized.supported_engines


def ranges_path(weights: Path) -> Path:
    """Where the activation ranges of `weights` live: beside them (embedder.pt → embedder.int8.pt)."""
    return weights.with_name(weights.stem + ".int8.pt")


class _Trunk(nn.Module):
    """The traceable part of the network (`EmbeddingNet.trunk`) as a module of its own."""

    def __init__(self, net: EmbeddingNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.trunk(x)


@dataclass(frozen=True)
class Scheme:
    """How the network is quantised. The product's (`PRODUCT`): symmetric per-channel int8 weights and per-tensor
    unsigned activations at 7 bits (`reduce_range`, torch's x86 default: fbgemm's AVX2 kernels can overflow at 8),
    with the stem (3 input channels, ~0.5 % of the multiply-adds) and the head (the linear layer that makes the
    vector) left in float32. Side by side on the held-out people (benchmarks/int8.py): quantising every layer was
    faster (18.4 against 21.8 ms per face) but moved the vectors further from float32's (cosine mean 0.99843, worst
    0.9926, against 0.99906 and 0.9944) and lost a person in the end-to-end check; 8-bit activations moved them less
    on average (0.99953) but further at worst (0.9886), at the same speed."""

    keep_float: tuple[str, ...] = ("stem", "head")
    reduce_range: bool = True


PRODUCT = Scheme()


def _qconfig_mapping(activation: type, scheme: Scheme) -> "QConfigMapping":
    """`scheme` as torch's quantisation config; `activation` says how the ranges are found."""
    from torch.ao.quantization import QConfig, QConfigMapping
    from torch.ao.quantization.observer import PerChannelMinMaxObserver

    weight = PerChannelMinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_channel_symmetric)
    mapping = QConfigMapping().set_global(
        QConfig(activation=activation.with_args(reduce_range=scheme.reduce_range), weight=weight))
    for name in scheme.keep_float:
        mapping = mapping.set_module_name(f"net.{name}", None)
    return mapping


def _observed(net: EmbeddingNet, activation: type, scheme: Scheme) -> torch.fx.GraphModule:
    """The float network traced, with BatchNorm folded and an `activation` observer on every activation."""
    from torch.ao.quantization.quantize_fx import prepare_fx

    torch.backends.quantized.engine = ENGINE
    side = net.config.input_size
    # without the stack trace FX records per node for debugging: recording it symbolises a traceback per node and
    # imports much of torch, seconds of every cold start
    config, before = torch.fx.config, torch.fx.config.do_not_emit_stack_traces
    config.do_not_emit_stack_traces = True
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")     # torch's notice that FX quantisation is moving to torchao
            return prepare_fx(_Trunk(copy.deepcopy(net).eval()).eval(), _qconfig_mapping(activation, scheme),
                              (torch.rand(2, 3, side, side),))
    finally:
        config.do_not_emit_stack_traces = before


def _observers(model: nn.Module) -> dict[str, nn.Module]:
    return {name: m for name, m in model.named_modules() if name.startswith(OBSERVER_PREFIX)}


def calibrate(net: EmbeddingNet, crops: np.ndarray, scheme: Scheme = PRODUCT,
              batch: int = 64) -> dict[str, torch.Tensor]:
    """Each activation's clipping range ({observer}.min_val / .max_val) from (N, 112, 112, 3) uint8 crops and
    their mirrors, as the product feeds them."""
    from torch.ao.quantization.observer import HistogramObserver

    observed = _observed(net, HistogramObserver, scheme)
    with torch.inference_mode():
        for start in range(0, len(crops), batch):
            x = torch.from_numpy(np.array(crops[start:start + batch])).permute(0, 3, 1, 2).float() / 255
            x = to_input_size(x, net.config.input_size)
            observed(torch.cat([x, torch.flip(x, dims=[3])]))
    ranges = {}
    for name, observer in _observers(observed).items():
        low, high = observer._non_linear_param_search()     # what HistogramObserver.calculate_qparams would use
        ranges[f"{name}.min_val"], ranges[f"{name}.max_val"] = low.detach().clone(), high.detach().clone()
    return ranges


class Int8EmbeddingNet(nn.Module):
    """Drop-in for `EmbeddingNet` at inference: crops in [0, 1] → unit vectors, int8 inside."""

    def __init__(self, config: EmbedderConfig, trunk: nn.Module) -> None:
        super().__init__()
        self.config = config
        self.trunk = trunk

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.trunk(to_input_size(x, self.config.input_size)), dim=1)


def quantize(net: EmbeddingNet, ranges: dict[str, torch.Tensor], scheme: Scheme = PRODUCT) -> Int8EmbeddingNet:
    """The int8 network from float weights and the ranges `calibrate` measured for them under `scheme`."""
    from torch.ao.quantization.observer import MinMaxObserver
    from torch.ao.quantization.quantize_fx import convert_fx

    observed = _observed(net, MinMaxObserver, scheme)     # takes the stored ranges as they are
    expected = {f"{name}.{end}" for name in _observers(observed) for end in ("min_val", "max_val")}
    if set(ranges) != expected:
        raise ValueError(f"int8 ranges do not fit this network ({len(ranges)} entries, {len(expected)} expected)")
    state = observed.state_dict()
    state.update(ranges)
    observed.load_state_dict(state)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Int8EmbeddingNet(net.config, convert_fx(observed)).eval()
