"""BatchNorm folding must not change what any of the three networks computes."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from embedder.detector_net import FaceDetectorNet
from embedder.fuse import fuse_batchnorms
from embedder.landmark_net import LandmarkNet
from embedder.model import EmbeddingNet


def _randomise_batchnorms(model: nn.Module) -> None:
    """Non-trivial running statistics, so a wrong fold shows up (fresh ones are the identity)."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)


@pytest.mark.parametrize("make, shape", [
    (EmbeddingNet, (3, 3, 112, 112)),
    (FaceDetectorNet, (1, 3, 96, 128)),
    (LandmarkNet, (4, 3, 64, 64)),
], ids=["embedder", "detector", "landmarks"])
def test_folding_keeps_outputs_and_removes_batchnorms(make, shape) -> None:
    torch.manual_seed(0)
    model = make()
    _randomise_batchnorms(model)
    model.eval()
    x = torch.rand(shape)
    with torch.no_grad():
        before = model(x)
        fuse_batchnorms(model)
        after = model(x)
    for b, a in zip(before if isinstance(before, list) else [before], after if isinstance(after, list) else [after]):
        assert torch.allclose(b, a, atol=1e-4), float((b - a).abs().max())
    convs_followed_by_bn = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert convs_followed_by_bn <= 1  # only the embedder head's BatchNorm2d (after the last block) remains


def test_folding_refuses_a_training_model() -> None:
    with pytest.raises(ValueError):
        fuse_batchnorms(EmbeddingNet().train())
