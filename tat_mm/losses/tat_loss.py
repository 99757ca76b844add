"""Target-aware Transformer loss (Lin et al., CVPR 2022, Eq. 7): every teacher pixel is rebuilt from all
student pixels, then matched with MSE."""
from typing import Optional

import torch
from mmengine.registry import MODELS

from .feature_loss_utils import BaseFeatureLoss, weighted_mse
from .loss_statistics import SCALAR_TERM, ReportsStatistics
from .tat_attention import build_tat_embeddings, check_temperature, tat_attention


def flatten_hw(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, H*W, C)."""
    return x.flatten(2).transpose(1, 2)


@MODELS.register_module()
class TaTLoss(ReportsStatistics, BaseFeatureLoss):
    """Parametric Target-aware Transformer loss over the full map.

    With ``f_s``, ``f_t`` the (B, N, C) flattened features (N = H*W) and gamma / theta / phi the query /
    key / value embeddings, the reconfigured student is (Eq. 7)::

        f_s' = softmax(gamma(f_s) @ theta(f_t)^T) @ phi(f_s)          # (B, N, Ct), softmax on last axis

    and the loss is ``MSE(f_s', f_t)`` against the detached teacher, one head, scale 1 (no 1/sqrt(C)).
    Row ``i`` of ``f_s'`` is ``sum_j softmax_j(gamma(s_i) . theta(t_j)) phi(s_j)``: the student pixel
    ``i`` queries the teacher pixels, and the weights it gets mix the student values.

    ``transposed=True`` is the per-pixel reading of Eq. 5-6: teacher pixel ``i`` is rebuilt from the
    student pixels it resembles::

        f_s'_i = sum_j softmax_j(theta(t_i) . gamma(s_j)) phi(s_j)
        f_s'   = softmax(theta(f_t) @ gamma(f_s)^T) @ phi(f_s)

    i.e. the logit matrix of Eq. 7 transposed, with the softmax over the *student* axis. The embeddings
    keep their roles (gamma on the student, theta on the teacher, phi the values); only which side is
    the attention query changes. Non-parametric TaT is all three embeddings ``'identity'`` (Cs == Ct).

    The N x N matrix is never materialised (see :func:`tat_attention`). With
    ``record_statistics`` on, ``last_statistics`` holds the attention's ``attn_max`` and
    ``attn_entropy`` (:func:`attention_statistics`; see :mod:`tat_mm.losses.loss_statistics`).

    ``weight`` (B, 1, H, W) weights each position of the MSE:
    ``sum(w * d^2) / (Ct * sum(w))`` over all positions and channels, so all-ones weight equals the
    plain mean and all-zero weight gives 0. It only confines the loss, not the attention.

    Args:
        student_channels (int): student width Cs.
        teacher_channels (int): teacher width Ct.
        query_embed (str): gamma, student -> query: ``'identity'``, ``'conv1x1'`` or ``'conv3x3'``
            (conv without bias + BN). Defaults to ``'conv3x3'`` (authors' ImageNet choice).
        key_embed (str): theta, teacher -> key. Defaults to ``'identity'`` (best in Tables 4 and 6).
        value_embed (str): phi, student -> value. Defaults to ``'conv3x3'``.
        transposed (bool): use the per-pixel form of Eq. 5-6 described above. Defaults to False (Eq. 7).
        temperature (float): attention softmax temperature T, ``softmax(q k^T / T)``. Defaults to
            1.0 (the paper). Not in the paper: on trained features the T = 1 attention is nearly
            one-hot (docs/evidence.md), a larger T keeps it soft.
        loss_weight (float): multiplier of the loss. Defaults to 1.0.
    """

    def __init__(self,
                 student_channels: int,
                 teacher_channels: int,
                 query_embed: str = 'conv3x3',
                 key_embed: str = 'identity',
                 value_embed: str = 'conv3x3',
                 transposed: bool = False,
                 temperature: float = 1.0,
                 loss_weight: float = 1.0):
        super().__init__(student_channels, teacher_channels, loss_weight)
        self.temperature = check_temperature(type(self).__name__, temperature)
        self.query_embed, self.key_embed, self.value_embed = build_tat_embeddings(
            student_channels, teacher_channels, query_embed, key_embed, value_embed)
        self.transposed = transposed

    def compute_loss(self, student_feat: torch.Tensor, teacher_feat: torch.Tensor,
                     weight: Optional[torch.Tensor]) -> torch.Tensor:
        query = flatten_hw(self.query_embed(student_feat))
        key = flatten_hw(self.key_embed(teacher_feat))
        value = flatten_hw(self.value_embed(student_feat))
        if self.transposed:
            query, key = key, query
        statistics = {} if self.record_statistics else None
        rebuilt = tat_attention(query, key, value, temperature=self.temperature,
                                statistics=statistics)
        if statistics is not None:
            self._keep_statistics({SCALAR_TERM: statistics})
        return weighted_mse(rebuilt, flatten_hw(teacher_feat),
                            None if weight is None else flatten_hw(weight))
