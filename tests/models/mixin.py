"""A reusable model test mixin: forward/backward, odd sizes, state_dict round trip, seeding.

A test class sets ``sizes`` and implements ``make_model()`` (seeded inside) and ``outputs(model, x)``
returning the tensors to compare; the mixin supplies the tests.
"""

from __future__ import annotations

import torch
from torch import nn


class ModelTestMixin:
    sizes: tuple[tuple[int, int], ...] = ((32, 32), (29, 47))
    batch: int = 2

    def make_model(self) -> nn.Module:  # pragma: no cover - overridden
        raise NotImplementedError

    def outputs(self, model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:  # pragma: no cover
        raise NotImplementedError

    def make_input(self, h: int, w: int, seed: int = 0) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        return torch.rand(self.batch, 3, h, w, generator=g)

    def test_forward_backward_all_sizes(self):
        model = self.make_model()
        for h, w in self.sizes:
            out = self.outputs(model, self.make_input(h, w))
            loss = sum(v.float().square().mean() for v in out.values() if v.is_floating_point())
            model.zero_grad()
            loss.backward()
            grads = [p.grad for p in model.parameters() if p.requires_grad]
            assert grads
            assert all(g is not None and torch.isfinite(g).all() for g in grads)

    def test_state_dict_round_trip(self, tmp_path):
        model = self.make_model().eval()
        path = tmp_path / "model.pt"
        torch.save(model.state_dict(), path)
        torch.manual_seed(1234)  # a different init, overwritten by the load
        other = type(self).make_model(self).eval()
        other.load_state_dict(torch.load(path, weights_only=True))
        x = self.make_input(*self.sizes[-1])
        with torch.no_grad():
            a, b = self.outputs(model, x), self.outputs(other, x)
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)

    def test_same_seed_same_numbers(self):
        x = self.make_input(*self.sizes[0])
        with torch.no_grad():
            a = self.outputs(self.make_model().eval(), x)
            b = self.outputs(self.make_model().eval(), x)
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
