"""The accounting module's counts against the instantiated model, and the FLOP conventions' relations."""

import pytest
import torch

from scaling_lab import accounting
from scaling_lab.model.config import SHAPES, ModelConfig, ShapeError
from scaling_lab.model.gpt import GPT


def real_param_count(cfg: ModelConfig) -> int:
    model = GPT(cfg)
    return sum(p.numel() for p in model.parameters())  # parameters() yields the tied weight once


@pytest.mark.parametrize("name", ["tiny-1", "tiny-3", "tiny-5", "gpt-7m"])
def test_total_params_match_module(name):
    cfg = ModelConfig.resolve(name, vocab_size=257, block_size=128)
    assert accounting.params_total(cfg) == real_param_count(cfg)


def test_non_embedding_excludes_exactly_the_embeddings():
    cfg = ModelConfig(n_layer=3, d_model=96, n_head=4, vocab_size=1000, block_size=64)
    model = GPT(cfg)
    non_embedding = sum(p.numel() for n, p in model.named_parameters() if "emb" not in n)
    assert accounting.params_non_embedding(cfg) == non_embedding


def test_gpt2_small_shape_is_the_well_known_124m():
    # GPT-2 small with nanoGPT's padded vocabulary: 124.4M parameters incl. position embeddings, no biases
    cfg = ModelConfig.resolve("gpt-124m", vocab_size=50304, block_size=1024)
    assert accounting.params_total(cfg) == 124_373_760  # nanoGPT (bias=False) reports 123.59M + 0.79M wpe


def test_flop_conventions():
    cfg = ModelConfig.resolve("gpt-124m", vocab_size=50304, block_size=1024)
    n = accounting.params_total(cfg)
    assert accounting.train_flops(cfg, 1000, "6N") == 6 * n * 1000
    assert accounting.train_flops_per_token(cfg, "6N_non_embedding") < accounting.train_flops_per_token(cfg, "6N")
    # nanoGPT's MFU: 6 x its get_num_params() (no position embedding: 123.59M) + the attention term
    assert accounting.train_flops_per_token(cfg, "6N_attention") == 6 * 123_587_328 + 12 * 12 * 768 * 1024
    assert n - 1024 * 768 == 123_587_328
    # DeepSeek's M counts the 12 d^2 matrices per layer plus causal attention, no embeddings
    assert accounting.train_flops_per_token(cfg, "deepseek_M") == 72 * 12 * 768**2 + 12 * 12 * 768 * 1024
    # DeepSeek LLM Table 3: 6 N1 / M = 0.43 at 8 layers, d_model 512, sequence 4096 (N1 = 12 n_layer d^2)
    table_3 = ModelConfig.resolve("gpt-51m", vocab_size=50304, block_size=4096)
    assert 72 * 8 * 512**2 / accounting.train_flops_per_token(table_3, "deepseek_M") == pytest.approx(0.43, abs=0.005)
    assert set(accounting.flops_by_convention(cfg, 10)) == set(accounting.CONVENTIONS)
    with pytest.raises(ValueError, match="convention"):
        accounting.train_flops_per_token(cfg, "5N")


def test_chinchilla_appendix_f_by_hand():
    # d=4, T=2, V=3, h=2, d_ff=16, one layer; Hoffmann et al. 2022 App. F term by term, per token:
    # embeddings 2Vd=24; qkv 6d^2=96, logits 2Td=16, softmax 3hT=12, reduction 2Td=16, projection 2d^2=32;
    # MLP 4 d d_ff=256; output 2dV=24. Forward 476, training 3x.
    cfg = ModelConfig(n_layer=1, d_model=4, n_head=2, vocab_size=3, block_size=2)
    assert accounting.train_flops_per_token(cfg, "chinchilla") == 3 * 476


def test_tokens_from_compute_inverts_6n():
    assert accounting.tokens_from_compute(6 * 1e9 * 2e10, 1e9) == pytest.approx(2e10)
    assert accounting.compute_from_tokens(1e9, 2e10) == 6 * 1e9 * 2e10
    assert accounting.tokens_from_compute(accounting.compute_from_tokens(3e7, 4e8), 3e7) == pytest.approx(4e8)
    cfg = ModelConfig.resolve("tiny-3", vocab_size=257, block_size=128)
    assert accounting.compute_from_tokens(accounting.params_total(cfg), 1000) == accounting.train_flops(cfg, 1000, "6N")


def test_every_named_shape_is_valid():
    for name in SHAPES:
        ModelConfig.resolve(name, vocab_size=257, block_size=128)


@pytest.mark.parametrize(
    "shape, key",
    [(dict(n_layer=2, d_model=65, n_head=4), "model.d_model=65 is not divisible by model.n_head=4"),
     (dict(n_layer=0, d_model=64, n_head=4), "model.n_layer"),
     (dict(n_layer=2, d_model=64, n_head=-1), "model.n_head")],
)
def test_bad_shapes_name_the_key(shape, key):
    with pytest.raises(ShapeError, match=key):
        ModelConfig(vocab_size=257, block_size=128, **shape)
    with pytest.raises(ShapeError, match="not a known shape"):
        ModelConfig.resolve("tiny-99", vocab_size=257, block_size=128)


def test_forward_shapes():
    cfg = ModelConfig(n_layer=1, d_model=32, n_head=2, vocab_size=50, block_size=16)
    logits = GPT(cfg)(torch.zeros(3, 16, dtype=torch.long))
    assert logits.shape == (3, 16, 50)
