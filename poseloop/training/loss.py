"""DeepLabCut's loss: sigmoid cross-entropy on scoremaps + weighted Huber on locref."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def pose_loss(
    logits: torch.Tensor,
    locref: torch.Tensor,
    target_score: torch.Tensor,
    target_locref: torch.Tensor,
    weights: torch.Tensor,
    locref_weight: float = 0.05,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(total, scoremap loss, locref loss) for a batch.

    logits/target_score: N x K x h x w; locref/target_locref: N x 2K x h x w;
    weights: N x K, 0 for unlabeled bodyparts, which are masked out of both terms.
    The scoremap term is the mean cross-entropy over labeled maps; the locref term the
    mean Huber loss over the positive cells of labeled maps.
    """
    if logits.shape != target_score.shape or locref.shape != target_locref.shape:
        raise ValueError(
            f"network output {tuple(logits.shape)}/{tuple(locref.shape)} does not match "
            f"targets {tuple(target_score.shape)}/{tuple(target_locref.shape)}"
        )
    ce = F.binary_cross_entropy_with_logits(logits, target_score, reduction="none")
    ce = ce.mean(dim=(2, 3))
    score_loss = (ce * weights).sum() / weights.sum().clamp(min=1.0)
    mask = (target_score * weights[:, :, None, None]).repeat_interleave(2, dim=1)
    huber = F.huber_loss(locref, target_locref, reduction="none", delta=1.0)
    locref_loss = (huber * mask).sum() / mask.sum().clamp(min=1.0)
    return score_loss + locref_weight * locref_loss, score_loss, locref_loss


def paf_loss(paf: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Squared error of the part affinity fields, per labeled edge, summed over the map and
    divided by the cells on a limb (so thin limbs on a large map still count).

    paf/target: N x 2E x h x w; weights: N x E (0 for edges not labeled in that image).
    """
    mask = weights.repeat_interleave(2, dim=1)[:, :, None, None]
    err = ((paf - target) ** 2 * mask).sum()
    on_limb = ((target != 0) & (mask > 0)).sum()
    return err / on_limb.clamp(min=1)


def identity_loss(logits: torch.Tensor, owner: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the identity head at cells near a labeled bodypart.

    logits: N x individuals x h x w; owner: N x h x w individual index, -1 = ignored.
    """
    if not (owner >= 0).any():
        return logits.sum() * 0.0
    return F.cross_entropy(logits, owner, ignore_index=-1)
