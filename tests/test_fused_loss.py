"""The fused output layer + cross-entropy gives the plain path's loss and gradients (tied weights, μP readout)."""

from __future__ import annotations

import pytest
import torch

from scaling_lab.model.config import ModelConfig
from scaling_lab.model.fused_loss import linear_cross_entropy
from scaling_lab.model.gpt import GPT


def _grads(model: GPT, x, y, chunk_rows):
    model.zero_grad(set_to_none=True)
    loss = model.loss(x, y, chunk_rows=chunk_rows)
    loss.backward()
    return loss.detach(), {name: p.grad.clone() for name, p in model.named_parameters()}


@pytest.mark.parametrize("parametrization", ["standard", "mup"])
@pytest.mark.parametrize("chunk_rows", [7, 64, 10_000])  # uneven chunks, even chunks, one chunk
def test_fused_loss_matches_plain_cross_entropy_in_value_and_every_gradient(parametrization, chunk_rows):
    torch.manual_seed(0)
    cfg = ModelConfig(n_layer=2, d_model=32, n_head=2, vocab_size=97, block_size=16, parametrization=parametrization,
                      mup_base_width=8 if parametrization == "mup" else None)
    model = GPT(cfg)
    assert model.lm_head.weight is model.tok_emb.weight and (model.output_mult != 1.0) == (parametrization == "mup")
    x, y = torch.randint(97, (4, 16)), torch.randint(97, (4, 16))
    plain_loss, plain = _grads(model, x, y, None)
    fused_loss, fused = _grads(model, x, y, chunk_rows)
    assert fused_loss.item() == pytest.approx(plain_loss.item(), rel=1e-6)
    assert plain.keys() == fused.keys() and "tok_emb.weight" in fused  # the tied weight: one gradient, both uses
    for name in plain:
        torch.testing.assert_close(fused[name], plain[name], rtol=1e-5, atol=1e-7, msg=name)


def test_fused_loss_in_fp32_and_without_grad():
    torch.manual_seed(1)
    hidden = torch.randn(50, 16, requires_grad=True)
    weight = torch.randn(300, 16, requires_grad=True)
    targets = torch.randint(300, (50,))
    loss = linear_cross_entropy(hidden, weight, targets, 0.5, chunk_rows=8)
    loss.backward()
    ref_h, ref_w = hidden.detach().clone().requires_grad_(), weight.detach().clone().requires_grad_()
    ref = torch.nn.functional.cross_entropy(ref_h @ ref_w.t() * 0.5, targets)
    ref.backward()
    torch.testing.assert_close(loss, ref, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(hidden.grad, ref_h.grad, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(weight.grad, ref_w.grad, rtol=1e-5, atol=1e-7)
    with torch.no_grad():  # validation: the loss alone, chunked
        torch.testing.assert_close(linear_cross_entropy(hidden, weight, targets, 0.5, chunk_rows=8), ref.detach())
