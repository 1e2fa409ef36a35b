import math

import torch

from segcore.augment import apply_geom
from segcore.losses.descriptor_affinity import descriptor_affinity
from segcore.losses.descriptors import NUM_DESCRIPTORS, region_descriptors

IDENTITY = torch.zeros(1, 3, dtype=torch.int64)


def test_shapes_and_a_flat_grey_image():
    d = region_descriptors(torch.full((2, 3, 30, 41), 0.4))
    assert d.shape == (2, NUM_DESCRIPTORS, 8, 11)
    torch.testing.assert_close(d[:, 0], torch.full((2, 8, 11), 0.4))  # luminance
    torch.testing.assert_close(d[:, 1:3], torch.full((2, 2, 8, 11), 1 / 3))  # chroma of grey
    torch.testing.assert_close(d[:, 3:], torch.zeros(2, 3, 8, 11))  # no texture, no direction


def test_stripes_are_coherent_and_noise_is_not():
    yy, xx = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    stripes = (0.5 + 0.2 * torch.sin(2 * math.pi * (xx + 0.5 * yy) / 7)).expand(1, 3, 64, 64)
    noise = 0.5 + 0.2 * (torch.rand(1, 1, 64, 64, generator=torch.Generator().manual_seed(0)) - 0.5)
    ds = region_descriptors(stripes)[0, :, 4:-4, 4:-4]
    dn = region_descriptors(noise.expand(1, 3, 64, 64))[0, :, 4:-4, 4:-4]
    assert float(ds[4].mean()) > 0.95  # one dominant direction
    assert float(dn[4].mean()) < 0.5
    assert float(ds[3].mean()) > 0.05
    assert float(dn[5].mean()) > float(ds[5].mean())  # noise is finer


def test_chroma_ignores_illumination():
    image = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 0.5 + 0.2
    a, b = region_descriptors(image), region_descriptors(image * 0.7)
    torch.testing.assert_close(a[:, 1:3], b[:, 1:3])
    torch.testing.assert_close(b[:, 0], a[:, 0] * 0.7)


def two_by_three(vectors):
    """(1, 2, 1, 3) embeddings: one 2-vector per column (superpixels 1, 2, 3)."""
    e = torch.zeros(1, 2, 1, 3)
    for col, v in enumerate(vectors):
        e[0, :, 0, col] = torch.tensor(v)
    return e


SLIC3 = torch.tensor([[[1, 2, 3]]])
DESC3 = torch.tensor([[0.0, 0.0, 3.0], [1.0, 1.0, 1.0]]).view(1, 2, 1, 3)  # column 2 is constant


def test_descriptor_affinity_hand_value():
    # Descriptor column 0 standardises to [-1/sqrt2, -1/sqrt2, sqrt2]; column 1 is constant, so it
    # becomes 0 (std floored). Normalised rows: [-1, -1, 1] (times the unit axis): target = +-1.
    target = torch.tensor([[1.0, 1.0, -1.0], [1.0, 1.0, -1.0], [-1.0, -1.0, 1.0]])
    za = two_by_three([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
    zb = two_by_three([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    sims = torch.tensor([[1.0, 1.0, 0.0], [0.6, 0.6, 0.8], [0.0, 0.0, 1.0]])  # za_i . zb_j
    expected = (sims - target).square().mean()
    torch.testing.assert_close(descriptor_affinity(za, zb, SLIC3, IDENTITY, IDENTITY, DESC3, bandwidth=0.0),
                               expected)


def test_descriptor_affinity_is_zero_when_the_geometry_matches_and_pulls_look_alikes():
    matched = two_by_three([[1.0, 0.0], [1.0, 0.0], [-1.0, 0.0]])  # cosines equal the target exactly
    assert float(descriptor_affinity(matched, matched, SLIC3, IDENTITY, IDENTITY, DESC3, bandwidth=0.0)) < 1e-10
    za = two_by_three([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]).requires_grad_(True)
    descriptor_affinity(za, za.detach(), SLIC3, IDENTITY, IDENTITY, DESC3, bandwidth=0.0).backward()
    # Superpixels 1 and 2 look alike but are orthogonal: superpixel 2 is pulled towards +x.
    assert float(za.grad[0, 0, 0, 1]) < 0


def test_descriptor_affinity_maps_views_back_through_their_geometry():
    a = two_by_three([[1.0, 0.0], [1.0, 0.0], [-1.0, 0.0]]).expand(1, 2, 3, 3).contiguous()
    slic = SLIC3.expand(1, 3, 3).contiguous()
    desc = DESC3.expand(1, 2, 3, 3).contiguous()
    geom_b = torch.tensor([[0, 1, 0]])  # view B is view A flipped left-right
    aligned = descriptor_affinity(a, apply_geom(a, geom_b), slic, IDENTITY, geom_b, desc, bandwidth=0.0)
    assert float(aligned) < 1e-10
    assert float(descriptor_affinity(a, apply_geom(a, geom_b), slic, IDENTITY, IDENTITY, desc, bandwidth=0.0)) > 0.5


def test_descriptor_affinity_rbf_target_hand_value():
    # Standardised column 0: [-1/sqrt2, -1/sqrt2, sqrt2]; column 1 is 0. Mean squared difference
    # over the 2 columns: 0 between superpixels 1 and 2, (3/sqrt2)^2 / 2 = 2.25 to superpixel 3.
    far = math.exp(-2.25 / 1.5)
    target = torch.tensor([[1.0, 1.0, far], [1.0, 1.0, far], [far, far, 1.0]])
    za = two_by_three([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
    sims = za[0, :, 0].T @ za[0, :, 0]
    expected = (sims - target).square().mean()
    got = descriptor_affinity(za, za, SLIC3, IDENTITY, IDENTITY, DESC3, bandwidth=1.5)
    torch.testing.assert_close(got, expected)
