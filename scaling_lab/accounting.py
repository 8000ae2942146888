"""Parameter and FLOP accounting: the one place that counts N and C.

The model (scaling_lab/model/gpt.py) is a pre-norm GPT without biases: token embedding tied to the output
layer, learned position embedding, per layer LN -> attention (qkv + out projection) and LN -> MLP (d -> 4d -> d),
then a final LN. tests/test_accounting.py pins these counts to the instantiated module.

A shape here is any object with ModelConfig's numbers (n_layer, d_model, n_head, vocab_size, block_size,
mlp_ratio): the fit counts N from a W&B config's numbers and must not import the model package.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from scaling_lab.model.config import ModelConfig

CONVENTIONS = ("6N", "6N_non_embedding", "6N_attention", "chinchilla", "deepseek_M")
DEFAULT_CONVENTION = "6N"


def embedding_params(cfg: ModelConfig) -> int:
    return cfg.vocab_size * cfg.d_model + cfg.block_size * cfg.d_model


def layer_params(cfg: ModelConfig) -> int:
    d = cfg.d_model
    attention = 4 * d * d  # q, k, v and output projections
    mlp = 2 * cfg.mlp_ratio * d * d
    norms = 2 * d
    return attention + mlp + norms


def params_non_embedding(cfg: ModelConfig) -> int:
    """Kaplan et al. 2020 (Sec. 2.1) N: everything but the token and position embeddings."""
    return cfg.n_layer * layer_params(cfg) + cfg.d_model  # + final LayerNorm


def params_total(cfg: ModelConfig) -> int:
    """Every trainable parameter; the tied output layer shares the token embedding and is counted once."""
    return params_non_embedding(cfg) + embedding_params(cfg)


def chinchilla_forward_flops_per_token(cfg: ModelConfig) -> float:
    """Hoffmann et al. 2022, Appendix F: embeddings, attention (incl. logits, softmax, reduction), dense, output.

    Per sequence of length T the paper counts 2*T*V*d for the embeddings, per layer 2*3*T*d*d (qkv),
    2*T*T*d (logits), 3*h*T*T (softmax), 2*T*T*d (reduction), 2*T*d*d (projection), 2*T*2*d*d_ff (MLP),
    and 2*T*d*V for the output logits; here divided by T.
    """
    d, T, V, h = cfg.d_model, cfg.block_size, cfg.vocab_size, cfg.n_head
    d_ff = cfg.mlp_ratio * d
    attention = 6 * d * d + 2 * T * d + 3 * h * T + 2 * T * d + 2 * d * d
    dense = 4 * d * d_ff
    return 2 * V * d + cfg.n_layer * (attention + dense) + 2 * d * V


def train_flops_per_token(cfg: ModelConfig, convention: str = DEFAULT_CONVENTION) -> float:
    """Training FLOPs per token (forward + backward = 3x forward) under a named convention.

    6N                 Hoffmann et al. 2022 (Sec. 3): C = 6 N D with N all parameters.
    6N_non_embedding   Kaplan et al. 2020 (Sec. 2.1): C = 6 N D with N non-embedding parameters.
    6N_attention       6N' + 12 * n_layer * d_model * context (Chowdhery et al. 2022, PaLM App. B), N' = N less
                       the position embedding, as nanoGPT's get_num_params() counts it: the convention of
                       nanoGPT's MFU and of this project's GPU yardstick (issue 5's table: 6.8M at 2 x 128).
    chinchilla         3x the full forward count of Hoffmann et al. 2022, Appendix F.
    deepseek_M         M = 72 n_layer d^2 + 12 n_layer d l_seq, non-embedding FLOPs per token with
                       attention (Bi et al. 2024, DeepSeek LLM, Sec. 3.1, Eq. 2; its Table 3 has 6N1/M = 0.43 at
                       8 layers, d 512, l_seq 4096); its LR/batch rule uses C = M D.
    """
    if convention == "6N":
        return 6.0 * params_total(cfg)
    if convention == "6N_non_embedding":
        return 6.0 * params_non_embedding(cfg)
    if convention == "6N_attention":
        without_positions = params_total(cfg) - cfg.block_size * cfg.d_model
        return 6.0 * without_positions + 12.0 * cfg.n_layer * cfg.d_model * cfg.block_size
    if convention == "chinchilla":
        return 3.0 * chinchilla_forward_flops_per_token(cfg)
    if convention == "deepseek_M":
        # 72 d^2 = 6 x (4 + 2 x 4) d^2: attention plus MLP matrices at mlp_ratio 4, generalised here
        matrices = (4 + 2 * cfg.mlp_ratio) * cfg.d_model**2
        return 6.0 * cfg.n_layer * matrices + 12.0 * cfg.n_layer * cfg.d_model * cfg.block_size
    raise ValueError(f"flops convention {convention!r} is not one of {CONVENTIONS}")


def train_flops(cfg: ModelConfig, tokens: int, convention: str = DEFAULT_CONVENTION) -> float:
    return train_flops_per_token(cfg, convention) * tokens


def flops_by_convention(cfg: ModelConfig, tokens: int) -> dict[str, float]:
    return {c: train_flops(cfg, tokens, c) for c in CONVENTIONS}


def train_sequences(tokens: float, block_size: int) -> int:
    """The whole sequences a budget of `tokens` trains (at least one): a record's D is what was really trained."""
    return max(1, round(tokens / block_size))


def compute_from_tokens(params: float, tokens: float) -> float:
    """C = 6 N D, the 6N convention from the numbers alone (Hoffmann et al. 2022, Sec. 3): inputs without a shape."""
    return 6.0 * params * tokens


def tokens_from_compute(flops: float, params: float) -> float:
    """D = C / (6 N), the inverse of compute_from_tokens (Hoffmann et al. 2022; Epoch AI's reconstruction)."""
    return flops / (6.0 * params)
