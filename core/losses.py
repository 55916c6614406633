"""Training objectives shared by the domains, each correct on one process or many.

Contrastive losses follow open_clip's ``local_loss=True, gather_with_grad=True`` scheme: each rank
scores its own rows against the batch gathered from all ranks (labels offset by rank), so memory is
``B x N`` rather than ``N x N``. A rank's value is its share of the full-batch loss; the mean over
ranks (what ``sync_dist`` logs) equals the single-process loss on the concatenated batch, and the
gradients after DDP's averaging equal the single-process gradients.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from domainvlm.core import distributed
from torch import Tensor, nn

MAX_LOGIT_SCALE = 100.0


class LogitScale(nn.Module):
    """CLIP's learnable temperature, stored as a log so it stays positive.

    Kept in [1, 100] as CLIP and open_clip do, by clamping the parameter in place after each
    optimiser step (``clamp_``, called by ``BaseSystem``), never inside ``forward``: a clamp in the
    graph has a zero gradient at the cap, so a scale that reached 100 (where LAION checkpoints sit)
    could never come back down. Optimiser set-ups find it by the name ``logit_scale`` to exempt it
    from weight decay.
    """

    def __init__(self, init_value: float = 1 / 0.07) -> None:
        super().__init__()
        if not init_value > 0:
            raise ValueError(f"the logit scale must start positive, got {init_value}")
        start = min(max(init_value, 1.0), MAX_LOGIT_SCALE)
        self.log_scale = nn.Parameter(torch.tensor(math.log(start)))

    def forward(self) -> Tensor:
        return self.log_scale.exp()

    @torch.no_grad()
    def clamp_(self) -> None:
        """Bring the parameter back into [ln 1, ln 100] (open_clip does this after every step)."""
        self.log_scale.clamp_(0.0, math.log(MAX_LOGIT_SCALE))


def _check_pair(name_a: str, a: Tensor, name_b: str, b: Tensor) -> None:
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError(
            f"{name_a} and {name_b} must both be [batch, dim] with the same shape, "
            f"got {tuple(a.shape)} and {tuple(b.shape)}"
        )


def _check_temperature(temperature: float) -> None:
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")


def _local_vs_gathered_ce(queries: Tensor, gathered_keys: Tensor, scale: Tensor | float) -> Tensor:
    """Cross-entropy of this rank's queries against every rank's keys; positives on the diagonal."""
    logits = scale * queries @ gathered_keys.T
    offset = distributed.rank() * queries.shape[0]
    labels = torch.arange(queries.shape[0], device=queries.device) + offset
    return F.cross_entropy(logits, labels)


def clip_loss(image_features: Tensor, text_features: Tensor, logit_scale: Tensor) -> Tensor:
    """Symmetric InfoNCE of CLIP. Features must already be L2-normalised by the caller."""
    _check_pair("image_features", image_features, "text_features", text_features)
    all_images = distributed.gather_with_grad(image_features)
    all_texts = distributed.gather_with_grad(text_features)
    image_to_text = _local_vs_gathered_ce(image_features, all_texts, logit_scale)
    text_to_image = _local_vs_gathered_ce(text_features, all_images, logit_scale)
    return (image_to_text + text_to_image) / 2


def nt_xent_loss(a: Tensor, b: Tensor, temperature: float, weight: float = 0.5) -> Tensor:
    """Cross-view NT-Xent ``weight·L(a→b) + (1−weight)·L(b→a)`` on cosine similarities.

    The weight lets one direction dominate when the two views are not interchangeable (for example
    an anchor transcript versus a noisier second transcript).
    """
    _check_pair("a", a, "b", b)
    _check_temperature(temperature)
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"weight must be in [0, 1], got {weight}")
    a = F.normalize(a, dim=-1)
    b = F.normalize(b, dim=-1)
    a_to_b = _local_vs_gathered_ce(a, distributed.gather_with_grad(b), 1.0 / temperature)
    b_to_a = _local_vs_gathered_ce(b, distributed.gather_with_grad(a), 1.0 / temperature)
    return weight * a_to_b + (1.0 - weight) * b_to_a


def mil_nce_loss(video: Tensor, texts: Tensor, bag_mask: Tensor, temperature: float) -> Tensor:
    """MIL-NCE (Miech et al., CVPR 2020): a clip matches a *bag* of candidate sentences.

    ``video`` [B, D], ``texts`` [B, K, D], ``bag_mask`` [B, K] (True = real sentence of the clip's
    bag; padding slots are False). Features are used as given (normalise them first if cosine
    scores are wanted). As in the authors' reference code, the numerator is the log-sum-exp over
    the clip's bag and the denominator the log-sum-exp over the clip against every sentence of
    the gathered batch *and* every gathered clip against the clip's own bag.
    """
    if video.ndim != 2 or texts.ndim != 3 or texts.shape[0] != video.shape[0]:
        raise ValueError(
            f"video must be [B, D] and texts [B, K, D] with the same B and D, "
            f"got {tuple(video.shape)} and {tuple(texts.shape)}"
        )
    if texts.shape[2] != video.shape[1] or bag_mask.shape != texts.shape[:2]:
        raise ValueError(
            f"texts must be [B, K, D] matching video [B, D] and bag_mask [B, K], got texts "
            f"{tuple(texts.shape)}, video {tuple(video.shape)}, bag_mask {tuple(bag_mask.shape)}"
        )
    _check_temperature(temperature)
    bag_mask = bag_mask.bool()
    if not bool(bag_mask.any(dim=1).all()):
        raise ValueError("every clip needs at least one positive sentence: a bag_mask row is empty")
    all_videos = distributed.gather_with_grad(video)
    all_texts = distributed.gather_with_grad(texts)
    all_mask = distributed.gather(bag_mask)
    batch = video.shape[0]
    own = torch.arange(batch, device=video.device) + distributed.rank() * batch
    # clip i against every gathered sentence: [B, N, K]
    clip_to_sentences = torch.einsum("bd,nkd->bnk", video, all_texts) / temperature
    clip_to_sentences = clip_to_sentences.masked_fill(~all_mask.unsqueeze(0), float("-inf"))
    # every gathered clip against clip i's own bag: [B, N, K]
    clips_to_bag = torch.einsum("nd,bkd->bnk", all_videos, texts) / temperature
    clips_to_bag = clips_to_bag.masked_fill(~bag_mask.unsqueeze(1), float("-inf"))
    positives = clip_to_sentences[torch.arange(batch, device=video.device), own]
    numerator = torch.logsumexp(positives, dim=1)
    denominator = torch.logsumexp(
        torch.cat([clip_to_sentences.flatten(1), clips_to_bag.flatten(1)], dim=1), dim=1
    )
    return (denominator - numerator).mean()


class DINOLoss(nn.Module):
    """DINO self-distillation: the student matches the centred, sharpened teacher across views.

    ``P_t = softmax((g_t − c)/τ_t)``, ``P_s = softmax(g_s/τ_s)``, loss = mean over pairs (teacher
    global view t, student view s ≠ t) of ``H(P_t, P_s)``. Centring stops one dimension from
    dominating, sharpening (τ_t < τ_s) stops the uniform collapse; τ_t warms up linearly from
    ``warmup_teacher_temp`` over ``warmup_epochs``. Student views must list the global crops first,
    in the same order as the teacher's.
    """

    center: Tensor

    def __init__(
        self,
        out_dim: int,
        student_temp: float = 0.1,
        teacher_temp: float = 0.04,
        warmup_teacher_temp: float | None = None,
        warmup_epochs: int = 0,
        center_momentum: float = 0.9,
    ) -> None:
        super().__init__()
        for name, value in (("student_temp", student_temp), ("teacher_temp", teacher_temp)):
            if not value > 0:
                raise ValueError(f"{name} must be positive, got {value}")
        if warmup_teacher_temp is not None and not warmup_teacher_temp > 0:
            raise ValueError(f"warmup_teacher_temp must be positive, got {warmup_teacher_temp}")
        if not 0.0 <= center_momentum < 1.0:
            raise ValueError(f"center_momentum must be in [0, 1), got {center_momentum}")
        self.out_dim = out_dim
        self.student_temp = student_temp
        self.teacher_temp = teacher_temp
        self.warmup_teacher_temp = warmup_teacher_temp
        self.warmup_epochs = warmup_epochs
        self.center_momentum = center_momentum
        self.register_buffer("center", torch.zeros(1, out_dim))

    def teacher_temperature(self, epoch: int) -> float:
        if self.warmup_teacher_temp is None or epoch >= self.warmup_epochs:
            return self.teacher_temp
        if self.warmup_epochs == 1:
            return self.warmup_teacher_temp
        progress = epoch / (self.warmup_epochs - 1)
        return self.warmup_teacher_temp + progress * (self.teacher_temp - self.warmup_teacher_temp)

    def forward(
        self, student_out: list[Tensor], teacher_out: list[Tensor], epoch: int = 0
    ) -> Tensor:
        self._check_views(student_out, teacher_out)
        teacher_temp = self.teacher_temperature(epoch)
        student_log_probs = [F.log_softmax(s / self.student_temp, dim=-1) for s in student_out]
        total = student_out[0].new_zeros(())
        pairs = 0
        for t, teacher in enumerate(teacher_out):
            teacher_probs = F.softmax((teacher.detach() - self.center) / teacher_temp, dim=-1)
            for s, log_probs in enumerate(student_log_probs):
                if s == t:
                    continue
                total = total + (-teacher_probs * log_probs).sum(dim=-1).mean()
                pairs += 1
        self.update_center(teacher_out)
        return total / pairs

    @torch.no_grad()
    def update_center(self, teacher_out: list[Tensor]) -> None:
        """EMA of the teacher's batch mean over every view of every rank."""
        stacked = torch.cat([t.detach().to(self.center.dtype) for t in teacher_out], dim=0)
        count = stacked.new_full((1, 1), float(stacked.shape[0]))
        # one collective for both the sum and the row count
        totals = distributed.all_reduce_sum(torch.cat([stacked.sum(dim=0, keepdim=True), count], 1))
        batch_center = totals[:, :-1] / totals[:, -1:]
        momentum = self.center_momentum
        self.center.mul_(momentum).add_(batch_center, alpha=1 - momentum)

    def _check_views(self, student_out: list[Tensor], teacher_out: list[Tensor]) -> None:
        if not teacher_out or len(student_out) < 2 or len(teacher_out) > len(student_out):
            raise ValueError(
                "DINOLoss needs at least one teacher (global) view and two student views, with the "
                f"global views first; got {len(student_out)} student and {len(teacher_out)} "
                "teacher views"
            )
        batch = teacher_out[0].shape[0]
        for kind, views in (("student", student_out), ("teacher", teacher_out)):
            for i, view in enumerate(views):
                if view.ndim != 2 or view.shape != (batch, self.out_dim):
                    raise ValueError(
                        f"{kind} view {i} must be [{batch}, {self.out_dim}], got {tuple(view.shape)}"
                    )


def mae_loss(pred: Tensor, target: Tensor, mask: Tensor, norm_pix: bool = True) -> Tensor:
    """MAE reconstruction: per-patch MSE averaged over masked patches only (mask 1 = masked).

    With ``norm_pix`` the target patch is normalised by its own mean and (unbiased) variance, as in
    MAE, which sharpens the learned representation.
    """
    if pred.shape != target.shape or pred.ndim != 3 or mask.shape != pred.shape[:2]:
        raise ValueError(
            f"pred and target must be [B, N, P] and mask [B, N]; got pred {tuple(pred.shape)}, "
            f"target {tuple(target.shape)}, mask {tuple(mask.shape)}"
        )
    if norm_pix:
        mean = target.mean(dim=-1, keepdim=True)
        var = target.var(dim=-1, keepdim=True)
        target = (target - mean) / (var + 1e-6).sqrt()
    per_patch = ((pred - target) ** 2).mean(dim=-1)
    mask = mask.to(per_patch.dtype)
    masked = mask.sum()
    if not bool(masked > 0):
        raise ValueError("mae_loss needs at least one masked patch; the mask is all zeros")
    return (per_patch * mask).sum() / masked


def mlm_loss(logits: Tensor, labels: Tensor, ignore_index: int = -100) -> Tensor:
    """Masked-token cross-entropy over labelled positions; 0 (not NaN) when none are labelled."""
    if logits.ndim != 3 or labels.shape != logits.shape[:2]:
        raise ValueError(
            f"logits must be [B, L, V] and labels [B, L]; got {tuple(logits.shape)} and "
            f"{tuple(labels.shape)}"
        )
    summed = F.cross_entropy(
        logits.flatten(0, 1),
        labels.flatten(),
        ignore_index=ignore_index,
        reduction="sum",
    )
    count = (labels != ignore_index).sum().clamp(min=1)
    return summed / count


def itm_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Image-text matching as 2-way classification (label 1 = the pair matches)."""
    if logits.ndim != 2 or logits.shape[1] != 2 or labels.shape != logits.shape[:1]:
        raise ValueError(
            f"logits must be [B, 2] and labels [B]; got {tuple(logits.shape)} and "
            f"{tuple(labels.shape)}"
        )
    return F.cross_entropy(logits, labels.long())
