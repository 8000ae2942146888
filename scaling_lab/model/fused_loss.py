"""Output layer and cross-entropy in one pass over row chunks: the (tokens x vocab) logits never exist at once.

The plain loss materialises logits for every token (65,536 tokens x 50,304 words = 13 GB in fp32) and keeps them
for the backward pass. Here each chunk of rows computes its logits, its loss and, at once, its gradients w.r.t. the
hidden states and the output weight (softmax minus one-hot, times the readout's multiplier); the logits are then
dropped. Memory for the loss is one chunk's logits instead of all of them. The method: Wijmans et al. 2024, "Cut
Your Losses in Large-Vocabulary Language Models" (Sec. 3), and Liger Kernel's fused linear cross entropy (Hsu et
al. 2024, Sec. 3.3), which also computes the gradients in the forward pass over chunks.
"""

from __future__ import annotations

import torch


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, scale: float,
                         chunk_rows: int) -> torch.Tensor:
    """mean_i CE(scale * hidden_i @ weight.T, targets_i) for hidden (N, d), weight (V, d), targets (N,)."""
    if torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad):
        return _LinearCrossEntropy.apply(hidden, weight, targets, scale, chunk_rows)
    total = hidden.new_zeros((), dtype=torch.float32)
    for start in range(0, hidden.shape[0], chunk_rows):
        logits = _logits(hidden[start:start + chunk_rows], weight, scale)
        total = total + _summed_loss(logits, targets[start:start + chunk_rows])
    return total / hidden.shape[0]


def _logits(hidden: torch.Tensor, weight: torch.Tensor, scale: float) -> torch.Tensor:
    # under autocast the matmul runs in bf16 (as the plain path's lm_head does); the softmax always in fp32
    logits = (hidden @ weight.t()).float()
    return logits if scale == 1.0 else logits * scale


def _summed_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return (torch.logsumexp(logits, dim=1) - logits.gather(1, targets[:, None]).squeeze(1)).sum()


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, targets, scale, chunk_rows):
        n = hidden.shape[0]
        total = hidden.new_zeros((), dtype=torch.float32)
        grad_hidden = torch.empty_like(hidden)
        grad_weight = torch.zeros_like(weight, dtype=torch.float32)
        for start in range(0, n, chunk_rows):
            h, t = hidden[start:start + chunk_rows], targets[start:start + chunk_rows]
            logits = _logits(h, weight, scale)
            lse = torch.logsumexp(logits, dim=1)
            total = total + (lse - logits.gather(1, t[:, None]).squeeze(1)).sum()
            # d(mean CE)/d(logits) = (softmax - onehot) / n; the chain through `scale` folds in here
            g = torch.exp_(logits.sub_(lse[:, None]))
            g.scatter_add_(1, t[:, None], torch.full_like(g[:, :1], -1.0))
            g = g.mul_(scale / n).to(h.dtype)  # under autocast the matmuls below cast it to bf16
            grad_hidden[start:start + chunk_rows] = g @ weight
            grad_weight += g.t() @ h
        ctx.save_for_backward(grad_hidden, grad_weight.to(weight.dtype))
        return total / n

    @staticmethod
    def backward(ctx, grad_loss):
        grad_hidden, grad_weight = ctx.saved_tensors
        return grad_hidden * grad_loss, grad_weight * grad_loss, None, None, None
