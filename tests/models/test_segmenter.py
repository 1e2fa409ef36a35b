"""Segmenter and its parts: shapes, k selection, explicit prototypes, valid mask, smoothing, labels."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from segcore.config import Config
from segcore.models import (
    FastSmoothing,
    MonolithicSegmenter,
    Refiner,
    SoftKMeansHead,
    StudentEmbeddingNet,
    TinyReconDecoder,
    build_decoder,
    build_segmenter,
    create_model,
    upsample_labels,
)
from segcore.models.cluster_head import farthest_point_init, sample_stride
from tests.models.mixin import ModelTestMixin


def small_segmenter(refiner: bool = False, proj: bool = False, max_k: int = 4) -> MonolithicSegmenter:
    torch.manual_seed(0)
    student = StudentEmbeddingNet(width=8, embed_dim=12, depth=1, groups=4)
    return MonolithicSegmenter(
        student,
        SoftKMeansHead(max_k=max_k, temperature=0.5, iters=2),
        smoothing=FastSmoothing(2, 0.5),
        refiner=Refiner(embed_dim=10 if proj else 12) if refiner else None,
        proj=torch.nn.Conv2d(12, 10, 1) if proj else None,
    )


class TestSegmenterMixin(ModelTestMixin):
    sizes = ((32, 32), (29, 47))

    def make_model(self):
        return small_segmenter(refiner=True, proj=True)

    def outputs(self, model, x):
        return model(x)


@pytest.mark.parametrize(("h", "w"), [(256, 256), (512, 512), (203, 317)])
def test_default_segmenter_shapes(h, w):
    model = build_segmenter(Config())
    with torch.no_grad():
        out = model(torch.rand(1, 3, h, w))
    hh, ww = -(-h // 4), -(-w // 4)
    assert out["embed"].shape == (1, 96, hh, ww)
    assert out["logits"].shape == out["probs"].shape == (1, 16, hh, ww)
    assert out["prototypes"].shape == (1, 16, 96)
    assert out["labels"].shape == (1, h, w)
    assert out["labels"].dtype == torch.int64
    torch.testing.assert_close(out["embed"].norm(dim=1), torch.ones(1, hh, ww))
    torch.testing.assert_close(out["probs"].sum(1), torch.ones(1, hh, ww))


def test_k_selectable_at_inference():
    model = small_segmenter(max_k=5).eval()
    x = torch.rand(1, 3, 32, 32)
    for k in (2, 3, 5):
        out = model(x, k=k)
        assert out["probs"].shape[1] == k
        assert int(out["labels"].max()) < k
    with pytest.raises(ValueError, match="max_k=5"):
        model(x, k=6)


def test_explicit_prototypes_are_used_as_given():
    model = small_segmenter().eval()
    x = torch.rand(2, 3, 24, 24)
    fitted = model(x[:1])["prototypes"]  # (1, K, E) fitted on image 0
    out = model(x, prototypes=fitted)
    torch.testing.assert_close(out["prototypes"], fitted.expand(2, -1, -1))
    cos = torch.einsum("beh w,bke->bkhw".replace(" ", ""), out["embed"], out["prototypes"])
    torch.testing.assert_close(out["logits"], cos / 0.5)
    # image 0 assigned to its own fitted prototypes reproduces the plain forward
    torch.testing.assert_close(out["logits"][:1], model(x[:1])["logits"])


def test_soft_kmeans_hand_example():
    # 4 pixels, 2 well separated directions; FPS picks pixel nearest the mean, then the farthest.
    z = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [0.6, 0.8]]).T.reshape(1, 2, 2, 2)
    head = SoftKMeansHead(max_k=2, temperature=0.1, iters=0)
    out = head(z)
    # mean = (2.4, 2.4): cosines 0.707, 0.99, 0.707, 0.99 -> pixel 1 first; farthest from it: pixel 2
    torch.testing.assert_close(out["prototypes"][0], torch.tensor([[0.8, 0.6], [0.0, 1.0]]))
    expected = (z.flatten(2).transpose(1, 2) @ out["prototypes"].transpose(1, 2) / 0.1).transpose(1, 2)
    torch.testing.assert_close(out["logits"].flatten(2), expected)
    # one refinement step with a cold temperature moves each prototype to its members' mean direction:
    # pixel 3 (0.6, 0.8) has cosine 0.96 to (0.8, 0.6) and 0.8 to (0, 1), so it joins prototype 0
    head1 = SoftKMeansHead(max_k=2, temperature=1e-3, iters=1)
    p = head1(z)["prototypes"][0]
    torch.testing.assert_close(p[0], F.normalize(torch.tensor([2.4, 1.4]), dim=0))
    torch.testing.assert_close(p[1], torch.tensor([0.0, 1.0]))


def test_valid_mask_keeps_invalid_pixels_out_of_prototypes():
    z = F.normalize(torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [-1.0, 0.2]]).T.reshape(1, 2, 2, 2), dim=1)
    valid = torch.tensor([[[True, True], [True, False]]])
    protos = SoftKMeansHead(max_k=3, temperature=0.5, iters=2)(z, valid=valid)["prototypes"][0]
    outlier = z[0, :, 1, 1]
    assert (protos @ outlier).max() < 0.5  # no prototype sits on the invalid pixel
    # a full-resolution (4x) mask is reduced by taking pixel [4i, 4j]
    full = valid.repeat_interleave(4, 1).repeat_interleave(4, 2)
    protos_full = SoftKMeansHead(max_k=3, temperature=0.5, iters=2)(z, valid=full)["prototypes"][0]
    torch.testing.assert_close(protos, protos_full)


def test_sample_stride_and_fps_ties():
    assert sample_stride(64, 64, 1024) == 2
    assert sample_stride(32, 32, 1024) == 1
    assert sample_stride(51, 80, 1024) == 3
    s = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    assert farthest_point_init(s, torch.tensor([True, True, True]), 3).tolist() == [0, 2, 0]
    assert farthest_point_init(s, torch.tensor([False, True, True]), 2).tolist() == [1, 2]


def test_fast_smoothing_hand_values():
    p = torch.zeros(1, 2, 3, 3)
    p[0, 0, 1, 1] = 1.0
    p[0, 1] = 1.0 - p[0, 0]
    out = FastSmoothing(iters=1, alpha=0.5)(p)
    # centre: 0.5 * 1 + 0.5 * (1/9); corner (0,0): replicate pad -> neighbourhood holds the centre once
    assert out[0, 0, 1, 1].item() == pytest.approx(0.5 + 0.5 / 9)
    assert out[0, 0, 0, 0].item() == pytest.approx(0.5 / 9)
    torch.testing.assert_close(out.sum(1), torch.ones(1, 3, 3))
    assert FastSmoothing(iters=0)(p) is p


def test_upsample_labels_by_four_then_crop():
    probs = torch.zeros(1, 2, 1, 2)
    probs[0, 0, 0, 0] = probs[0, 1, 0, 1] = 1.0
    probs[0, 1, 0, 0] = probs[0, 0, 0, 1] = 0.0
    labels = upsample_labels(probs, 3, 7)
    # source x = (j + 0.5)/4 - 0.5: columns 0..3 lean to cell 0, 4..7 to cell 1
    assert labels.tolist() == [[[0, 0, 0, 0, 1, 1, 1]] * 3]


def test_refiner_is_cluster_permutation_equivariant():
    torch.manual_seed(0)
    ref = Refiner(embed_dim=6)
    torch.nn.init.normal_(ref.conv2.weight, std=0.3)
    logits, embed = torch.randn(1, 3, 5, 5), torch.randn(1, 6, 5, 5)
    perm = torch.tensor([2, 0, 1])
    torch.testing.assert_close(ref(logits[:, perm], embed), ref(logits, embed)[:, perm])


def test_factory_and_decoder():
    cfg = Config().replace(**{"model.embed_dim": 32, "model.refiner": True, "model.smoothing": False})
    model = build_segmenter(cfg)
    assert model.proj is not None
    assert model.refiner is not None
    assert model.smoothing is None
    assert model.embed_dim == 32
    assert model.head.iters == cfg.distill.cluster_iters
    dec = build_decoder(cfg)
    rgb = dec(torch.randn(2, 32, 7, 9))
    assert isinstance(dec, TinyReconDecoder)
    assert rgb.shape == (2, 3, 7, 9)
    assert ((rgb > 0) & (rgb < 1)).all()
    with pytest.raises(KeyError, match="recon_decoder, refiner, segmenter"):
        create_model("unet")


def test_gradients_reach_student_proj_refiner():
    model = small_segmenter(refiner=True, proj=True)
    out = model(torch.rand(2, 3, 20, 20))
    (out["probs"].square().sum() + out["embed"].sum()).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert p.grad.abs().sum() > 0, name


def test_bf16_autocast_forward_backward():
    model = small_segmenter(refiner=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(torch.rand(2, 3, 28, 36))
        loss = -(out["probs"].float().clamp_min(1e-6).log() * out["probs"].float()).sum(1).mean()
    loss.backward()
    assert out["labels"].shape == (2, 28, 36)
    assert all(p.grad is not None for p in model.parameters())


def test_refine_temperature_is_separate_from_output_temperature():
    cfg = Config()
    head = build_segmenter(cfg).head
    assert head.temperature == cfg.model.temperature
    assert head.refine_temperature == cfg.model.refine_temperature
    z = F.normalize(torch.randn(1, 8, 6, 6, generator=torch.Generator().manual_seed(0)), dim=1)
    soft = SoftKMeansHead(max_k=3, temperature=0.8, iters=3)(z)["prototypes"]
    sharp = SoftKMeansHead(max_k=3, temperature=0.8, iters=3, refine_temperature=0.1)(z)["prototypes"]
    # soft updates drag all prototypes toward the mean direction; sharp ones keep them apart
    spread = lambda p: (p[0] @ p[0].T).triu(1).sum()  # noqa: E731
    assert spread(sharp) < spread(soft)
