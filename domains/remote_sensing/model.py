"""Semantic Augmentation Module and semantic experts (after arXiv 2506.21863), as plain modules.

Visual features query a knowledge base of remote-sensing concepts at two levels: patch tokens ask
for objects ("storage tank", "ship"), the global embedding asks for scenes ("harbor", "forest").
Each level's top-k entries become cue tokens; one expert per level cross-attends from the task
query to its own level's visual features (patch tokens for objects, the global embedding for
scenes) together with that level's cues (hard routing), and an optional learned gate mixes the
experts. With retrieval off the experts still see the visual features but no cues, so the ablation
differs only in knowledge.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

LEVELS = ("object", "scene")


class SemanticExpert(nn.Module):
    """Cross-attention from query tokens to one level's cues, then a feed-forward block."""

    def __init__(self, dim: int, heads: int = 4, mlp_ratio: float = 2.0) -> None:
        super().__init__()
        self.norm_query = nn.LayerNorm(dim)
        self.norm_cues = nn.LayerNorm(dim)
        self.cross_attention = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm_mlp = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, query: Tensor, memory: Tensor) -> Tensor:
        """``query [B, dim]`` attends to ``memory [B, M, dim]`` (visual tokens and cues) → ``[B, dim]``."""
        query = query.unsqueeze(1)
        memory = self.norm_cues(memory)
        attended, _ = self.cross_attention(self.norm_query(query), memory, memory)
        query = query + attended
        query = query + self.mlp(self.norm_mlp(query))
        return query[:, 0]


class SemanticExperts(nn.Module):
    """Cue tokens per level → one expert per level → gated (or averaged) fusion."""

    def __init__(
        self,
        joint_dim: int,
        visual_dim: int,
        dim: int = 128,
        heads: int = 4,
        levels: Sequence[str] = LEVELS,
        learned_gate: bool = True,
    ) -> None:
        super().__init__()
        self.levels = tuple(levels)
        self.cue_projection = nn.Linear(joint_dim + 1, dim)  # cue embedding + its retrieval score
        self.level_embedding = nn.Parameter(torch.zeros(len(self.levels), dim))
        self.query_projection = nn.Linear(joint_dim, dim)
        self.patch_projection = nn.Linear(visual_dim, dim)
        self.global_projection = nn.Linear(joint_dim, dim)
        self.experts = nn.ModuleDict({level: SemanticExpert(dim, heads) for level in self.levels})
        self.gate = nn.Linear(dim, len(self.levels)) if learned_gate else None
        self.out_dim = 2 * dim

    def cue_tokens(self, level: str, vectors: Tensor, scores: Tensor) -> Tensor:
        """``vectors [B, K, joint_dim]`` and ``scores [B, K]`` → cue tokens ``[B, K, dim]``."""
        tokens = self.cue_projection(torch.cat([vectors, scores.unsqueeze(-1)], dim=-1))
        return tokens + self.level_embedding[self.levels.index(level)]

    def forward(
        self,
        query: Tensor,
        global_embedding: Tensor,
        patch_tokens: Tensor,
        cues: dict[str, tuple[Tensor, Tensor]] | None,
    ) -> tuple[Tensor, Tensor]:
        """Fused features ``[B, 2·dim]`` (query+image summary, expert mixture) and gate weights.

        ``query``: the task prompt or question embedding ``[B, joint_dim]``; ``global_embedding``
        ``[B, joint_dim]``; ``patch_tokens [B, N, visual_dim]``; ``cues``: level → (vectors,
        scores), or None with retrieval off.
        """
        summary = self.query_projection(query) + self.global_projection(global_embedding)
        visual = {
            "object": self.patch_projection(patch_tokens),
            "scene": self.global_projection(global_embedding).unsqueeze(1),
        }
        outputs = []
        for level in self.levels:
            memory = visual[level]
            if cues is not None:
                memory = torch.cat([memory, self.cue_tokens(level, *cues[level])], dim=1)
            outputs.append(self.experts[level](summary, memory))
        stacked = torch.stack(outputs, dim=1)  # [B, levels, dim]
        if self.gate is not None:
            weights = self.gate(summary).softmax(dim=-1)
        else:
            weights = stacked.new_full(stacked.shape[:2], 1.0 / len(self.levels))
        mixture = (weights.unsqueeze(-1) * stacked).sum(dim=1)
        return torch.cat([summary, mixture], dim=-1), weights
