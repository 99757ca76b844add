"""Logit standardization (Sun et al., "Logit Standardization in Knowledge Distillation", CVPR 2024):
z-score every sample's logits over the classes before the temperature softmax."""
import torch

#: Added to the standard deviation, as in the authors' ``normalize``
#: (``sunshangquan/logit-standardization-KD``: ``mdistiller/distillers/KD.py`` and ``DKD.py``).
STD_EPS = 1e-7


def standardize_logits(logits: torch.Tensor, eps: float = STD_EPS) -> torch.Tensor:
    """``(z - mean(z)) / (eps + std(z))`` over the classes (dim 1) of each row of (N, K) logits.

    ``std`` is the Bessel-corrected (unbiased, ``N - 1``) standard deviation, torch's default and
    the authors' ``logit.std(dim=-1)``; ``eps = 1e-7`` is added to it, not to the variance. The
    statistics stay in the graph (the authors' code differentiates through them on the student).

    Args:
        logits (torch.Tensor): (N, K) logits, K >= 2.
        eps (float): Added to the standard deviation. Defaults to 1e-7.

    Returns:
        torch.Tensor: (N, K) standardized logits, each row of zero mean and (nearly) unit std.
    """
    if logits.dim() != 2 or logits.shape[1] < 2:
        raise ValueError('standardize_logits: expected (N, K) logits with K >= 2 classes (the '
                         f'standard deviation needs two values), got {tuple(logits.shape)}')
    mean = logits.mean(dim=1, keepdim=True)
    std = logits.std(dim=1, keepdim=True)
    return (logits - mean) / (std + eps)
