"""Student encoder: shapes at several sizes, padding rule, input normalisation, FLOP count."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from segcore.models import RGB_MEAN, RGB_STD, StudentEmbeddingNet, create_model, flops_per_image
from segcore.models.student import make_norm, pad_to_multiple
from tests.models.mixin import ModelTestMixin


def small_student(**kw) -> StudentEmbeddingNet:
    torch.manual_seed(0)
    return StudentEmbeddingNet(width=kw.pop("width", 8), embed_dim=kw.pop("embed_dim", 12), depth=2, groups=4, **kw)


class TestStudentMixin(ModelTestMixin):
    sizes = ((32, 32), (29, 47))

    def make_model(self):
        return small_student()

    def outputs(self, model, x):
        return {"embed": model(x)}


@pytest.mark.parametrize(("h", "w"), [(256, 256), (512, 512), (203, 317), (5, 5), (5, 9)])
def test_output_shape_is_ceil_quarter(h, w):
    out = small_student()(torch.rand(1, 3, h, w))
    assert out.shape == (1, 12, -(-h // 4), -(-w // 4))


def test_same_weights_any_size_and_padding_is_replicate():
    model = small_student(norm="batch").eval()
    x = torch.rand(1, 3, 64, 64)
    full = model(x)
    # a 61x61 crop is padded to 64x64 by replicating its last row/column
    crop = x[:, :, :61, :61]
    padded = torch.cat([crop, crop[:, :, -1:].expand(1, 3, 3, 61)], dim=2)
    padded = torch.cat([padded, padded[:, :, :, -1:].expand(1, 3, 64, 3)], dim=3)
    torch.testing.assert_close(model(crop), model(padded))
    # sub-windows run with the same weights; their embeddings are not a crop of the full image's,
    # because the centring before the last 1x1 conv uses each window's own channel statistics
    sub = model(x[:, :, :32, :32])
    assert sub.shape == (1, 12, 8, 8)
    assert full.shape == (1, 12, 16, 16)


def test_pad_to_multiple_values():
    x = torch.arange(6.0).view(1, 1, 2, 3)
    y = pad_to_multiple(x)
    assert y.shape == (1, 1, 4, 4)
    assert y[0, 0].tolist() == [[0, 1, 2, 2], [3, 4, 5, 5], [3, 4, 5, 5], [3, 4, 5, 5]]


def test_normalisation_buffers_are_exported_constants():
    model = small_student()
    state = model.state_dict()
    assert state["mean"].flatten().tolist() == pytest.approx(RGB_MEAN)
    assert state["std"].flatten().tolist() == pytest.approx(RGB_STD)


def test_flops_hand_count_default_student():
    model = StudentEmbeddingNet()  # width 48, embed 96, depth 3
    # stem1 3->24 @128^2, stem2 24->48 @64^2, 3 blocks 48->48 @64^2, 1x1 48->96 @64^2
    macs = 128 * 128 * 24 * 3 * 9 + 64 * 64 * 48 * 24 * 9 + 3 * 64 * 64 * 48 * 48 * 9 + 64 * 64 * 96 * 48
    assert flops_per_image(model, 256, 256) == {"macs": macs, "flops": 2 * macs}
    assert 0.3e9 <= 2 * macs <= 0.8e9
    # counted MACs agree with the conv layers' actual work (checked through output numels)
    assert flops_per_image(model, 255, 253) == flops_per_image(model, 256, 256)


def test_make_norm_and_factory_errors():
    assert isinstance(make_norm("group", 24, 8), torch.nn.GroupNorm)
    assert make_norm("group", 12, 8).num_groups == 4  # gcd keeps the groups dividing the channels
    with pytest.raises(KeyError, match="group, batch"):
        make_norm("layer", 8, 4)
    with pytest.raises(KeyError, match="student"):
        create_model("resnet")


def test_bf16_autocast_forward_backward():
    model = small_student()
    x = torch.rand(2, 3, 29, 31)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
        loss = F.normalize(out.float(), dim=1).mean()
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_raw_embeddings_are_zero_mean_per_image():
    model = small_student()
    out = model(torch.rand(2, 3, 40, 36))
    torch.testing.assert_close(out.mean(dim=(2, 3)), torch.zeros(2, 12), atol=1e-5, rtol=0)
