"""RS-M-CLIP: multilingual CLIP fine-tuning for remote sensing with DINO self-distillation.

``L = L_clip + λ·L_sd``: the symmetric InfoNCE between images and captions (any of the ten
languages per step) plus DINO self-distillation, where the student image tower sees global and
local crops and an EMA teacher sees the global crops only (docs/remote_sensing.md).

As in DINO, the teacher moves once per optimiser step (not per micro-batch) and the DINO head's
last layer gets no update during the first ``freeze_last_layer`` epochs. ``clip_views`` says which
views the CLIP loss reads: the first global crop, or every global crop as SILC does
(docs/paper_configs.md says which one the paper config uses).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from domainvlm.core.ema import EMATeacher
from domainvlm.core.encoder import Encoder
from domainvlm.core.errors import DomainVLMError
from domainvlm.core.images import read_image
from domainvlm.core.init_from import load_init_from
from domainvlm.core.losses import DINOLoss, LogitScale, clip_loss
from domainvlm.core.model_input import InputAdjustment, ModelInput, fit_to_model
from domainvlm.core.system import BaseSystem
from domainvlm.core.tokenizers import build_tokenizer
from domainvlm.core.towers.clip import build_clip
from domainvlm.core.towers.heads import ClassifierHead, DINOHead
from domainvlm.core.towers.tokens import encode_with_patch_tokens
from domainvlm.core.towers.vit_sizes import encode_any_size
from domainvlm.core.transforms import ImageTransform
from domainvlm.core.zeroshot import ZeroShotClassifier
from domainvlm.domains.remote_sensing.evaluation_data import localised_class_name
from domainvlm.domains.remote_sensing.knowledge import knowledge_records, load_concepts
from domainvlm.domains.remote_sensing.model import SemanticExperts
from domainvlm.domains.remote_sensing.open_vocabulary import LOGIT_SCALE, mention_vectors
from domainvlm.domains.remote_sensing.rasters import RASTER_READER
from domainvlm.domains.remote_sensing.templates import templates
from domainvlm.retrieval_db import KnowledgeBase
from torch import Tensor, nn


class DistillationTower(nn.Module):
    """Image tower + DINO head: the part of the student the EMA teacher mirrors."""

    def __init__(self, visual: nn.Module, head: DINOHead) -> None:
        super().__init__()
        self.visual = visual
        self.head = head

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        embedding = encode_any_size(self.visual, images)
        return embedding, self.head(embedding)


class RSMCLIP(BaseSystem):
    def __init__(
        self,
        model_name: str = "dvlm-tiny",
        pretrained: str | None = None,
        hf_text_dir: str | None = None,
        tokenizer: str = "multilingual",
        context_length: int = 96,
        in_chans: int = 3,
        distill_weight: float = 1.0,
        dino_out_dim: int = 1024,
        dino_hidden: int = 512,
        dino_bottleneck: int = 128,
        student_temp: float = 0.1,
        teacher_temp: float = 0.07,
        warmup_teacher_temp: float = 0.04,
        warmup_teacher_temp_epochs: int = 1,
        center_momentum: float = 0.9,
        ema_momentum: float = 0.996,
        ema_final_momentum: float = 1.0,
        freeze_last_layer: int = 1,
        clip_views: Literal["first", "global"] = "first",
        **kwargs: Any,
    ) -> None:
        """
        Args:
            model_name: open_clip or domainvlm model config (``dvlm-tiny``, ``xlm-roberta-base-ViT-B-32``).
            pretrained: OpenCLIP tag, local weights file, or none (train from scratch).
            hf_text_dir: local Hugging Face folder for an HF text tower (offline use).
            tokenizer: ``multilingual`` (offline byte-level), ``openclip:<model>`` or ``hf:<dir>``.
            context_length: text tokens per caption.
            in_chans: image bands (3 = RGB; 4 = RGB + NIR; 13 = all Sentinel-2 bands).
            distill_weight: λ, the weight of self-distillation (0 turns it off).
            dino_out_dim: DINO prototypes.
            dino_hidden: DINO head hidden width.
            dino_bottleneck: DINO head bottleneck width.
            student_temp: τ_s.
            teacher_temp: τ_t after warmup.
            warmup_teacher_temp: τ_t at the start.
            warmup_teacher_temp_epochs: epochs of linear τ_t warmup.
            center_momentum: momentum of the teacher centre.
            ema_momentum: EMA momentum of the teacher at the start (cosine ramp to the final value).
            ema_final_momentum: EMA momentum at the end of training.
            freeze_last_layer: epochs during which the DINO head's last layer gets no update (its
                gradients are dropped after clipping, as DINO does; DINO's default is 1).
            clip_views: the views the CLIP loss reads in training: ``first`` (the first global
                crop) or ``global`` (every global crop against the same captions, averaged; SILC:
                each view the teacher distils from is also aligned with text). Validation always
                reads the one evaluation view.
        """
        super().__init__(**kwargs)
        if clip_views not in ("first", "global"):
            raise ValueError(f"clip_views must be 'first' or 'global', got {clip_views!r}")
        if freeze_last_layer < 0:
            raise ValueError(f"freeze_last_layer must be >= 0 epochs, got {freeze_last_layer}")
        self.model, model_preprocessing = build_clip(
            model_name, pretrained, in_chans=in_chans, hf_text_dir=hf_text_dir
        )
        self.preprocessing = {**model_preprocessing, **self.preprocessing}
        self.tokenizer = build_tokenizer(tokenizer, context_length)
        # Our scale (clamped after each step) replaces open_clip's; it starts from its value.
        self.logit_scale = LogitScale(float(self.model.logit_scale.detach().exp()))
        self.model.logit_scale.requires_grad_(False)
        self.distill_weight = distill_weight
        if distill_weight > 0:
            head = DINOHead(
                self.model.visual.output_dim, dino_out_dim, dino_hidden, dino_bottleneck
            )
            self.student = DistillationTower(self.model.visual, head)
            self.teacher = EMATeacher(self.student, ema_momentum, ema_final_momentum)
            self.dino_loss = DINOLoss(
                dino_out_dim,
                student_temp,
                teacher_temp,
                warmup_teacher_temp,
                warmup_teacher_temp_epochs,
                center_momentum,
            )

    def encode_image(self, images: Tensor) -> Tensor:
        return self.model.encode_image(images)

    def encode_text(self, texts: list[str]) -> Tensor:
        return self.model.encode_text(self.tokenizer(texts).to(self.device))

    def setup(self, stage: str) -> None:
        super().setup(stage)
        check_input_channels(self.hparams.in_chans, self.preprocessing)

    def compute_losses(self, batch: dict, stage: str) -> dict[str, Tensor]:
        views = batch["image"] if isinstance(batch["image"], list) else [batch["image"]]
        text = F.normalize(self.encode_text(batch["text"]), dim=-1)
        distill = self.distill_weight > 0 and stage == "train" and len(views) > 1
        n_global = self.preprocessing.get("n_global_crops", 2)
        n_clip = n_global if self.hparams.clip_views == "global" and stage == "train" else 1
        if distill:
            student = [self.student(view) for view in views]
            embeddings = [out[0] for out in student[:n_clip]]
        else:
            embeddings = [self.encode_image(view) for view in views[:n_clip]]
        scale = self.logit_scale()
        per_view = [clip_loss(F.normalize(e, dim=-1), text, scale) for e in embeddings]
        losses = {"clip": torch.stack(per_view).mean()}
        if distill:
            teacher = [self.teacher(view)[1] for view in views[:n_global]]
            losses["self_distillation"] = self.dino_loss(
                [out[1] for out in student], teacher, self.current_epoch
            )
            losses["loss"] = losses["clip"] + self.distill_weight * losses["self_distillation"]
        else:
            losses["loss"] = losses["clip"]
        losses["logit_scale"] = self.logit_scale().detach()
        return losses

    def after_optimizer_step(self) -> None:
        super().after_optimizer_step()
        if self.distill_weight > 0:
            total = int(self.trainer.estimated_stepping_batches)
            self.teacher.update(self.student, self.global_step, total)

    def configure_gradient_clipping(
        self,
        optimizer: torch.optim.Optimizer,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        # DINO clips, then drops the last layer's gradients: AdamW then leaves it untouched.
        super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)
        if self.distill_weight > 0 and self.current_epoch < self.hparams.freeze_last_layer:
            self.student.head.last_layer.zero_grad(set_to_none=True)

    def encoder(self, adjustment: InputAdjustment | None = None) -> Encoder:
        """Images load through ``core.images.read_image`` (capped, GeoTIFF/PNG/JPEG only) and are
        checked against the training files' bands and pixel type, unless ``adjustment`` says how
        a different file maps onto them."""
        return Encoder(
            name=f"remote_sensing:{self.hparams.model_name}",
            image_fn=self.encode_image,
            text_fn=self.encode_text,
            load_image=raster_loader(self.preprocessing, adjustment),
            modules=[self.model],
            preprocessing=dict(self.preprocessing),
        )


class InputChannelError(DomainVLMError):
    """The data's bands do not fit the model's first layer."""


def check_input_channels(in_chans: int, preprocessing: dict) -> None:
    """Before the first batch: a band count the model cannot take fails here, saying which
    option to change, not inside the first convolution."""
    bands, file_bands = preprocessing.get("bands"), preprocessing.get("file_bands")
    channels = len(bands) if bands else file_bands
    if channels is None or channels == in_chans:
        return
    given = f"--data.bands {list(bands)}" if bands else f"every band of the files ({file_bands})"
    raise InputChannelError(
        f"the model takes {in_chans} input bands (model.in_chans) but the data gives {channels} "
        f"from {given}: set --data.bands to {in_chans} 1-based band numbers in the model's "
        f"channel order, or --model.in_chans {channels} for a model that is not loaded from a "
        "checkpoint of another band count"
    )


def raster_loader(
    preprocessing: dict, adjustment: InputAdjustment | None = None
) -> Callable[[str | Path], Tensor]:
    """File → model input with a system's training preprocessing, through ``read_image``."""
    transform = ImageTransform(
        preprocessing["image_size"],
        preprocessing["mean"],
        preprocessing["std"],
        max_pixel_value=preprocessing.get("max_pixel_value", 255.0),
    )
    model_input = ModelInput.from_preprocessing(preprocessing)

    def load_image(path: str | Path) -> Tensor:
        array = read_image(path, reader=RASTER_READER)
        return transform(fit_to_model(array, path, model_input, adjustment))

    return load_image


HEADS = ("classifier", "joint")
KNOWLEDGE_PROMPTS = ("templates", "descriptions", "mentions")


class SemanticExpertsSystem(BaseSystem):
    """Knowledge-augmented scene classification or RSVQA on top of frozen RS-M-CLIP towers.

    The towers come from an ``RSMCLIP`` checkpoint (``init_from``, loaded at fit time) and stay
    frozen, so the knowledge base embedded with their text encoder stays valid while the Semantic
    Augmentation Module, the experts and the head train.

    ``head: joint`` makes retrieval on and off fair and the classifier open-vocabulary: the
    experts' output is a residual added to the image embedding in the joint space, scored against
    the zero-shot class vectors (class names in the templates). The residual layer starts at zero,
    so both arms start from, and keep, the towers' zero-shot logits as their prior (with a
    ``templates`` knowledge base the "on" arm's scene cues are those very class vectors; the "off"
    arm now has them too), and ``score`` ranks any classes, unseen ones included, by their vectors.
    ``knowledge_exclude`` leaves concepts out of the knowledge base (the evaluated classes: what
    is left is knowledge in general, not of those classes).
    """

    def __init__(
        self,
        task: str = "scene",
        classes: list[str] | None = None,
        init_from: str | None = None,
        model_name: str = "dvlm-tiny",
        tokenizer: str = "multilingual",
        context_length: int = 96,
        in_chans: int = 3,
        use_retrieval: bool = True,
        knowledge_languages: list[str] | None = None,
        knowledge_prompts: str = "templates",
        k_object: int = 8,
        k_scene: int = 4,
        dim: int = 128,
        heads: int = 4,
        learned_gate: bool = True,
        task_prompt: str = "what kind of scene is shown in this satellite image?",
        head: str = "classifier",
        knowledge_exclude: list[str] | None = None,
        direct_cues: bool = False,
        residual_norm: float | None = None,
        **kwargs: Any,
    ) -> None:
        """
        Args:
            task: ``scene`` (classification) or ``vqa`` (questions about the image).
            classes: scene class names or the answer vocabulary (default: from the DataModule).
            init_from: an RS-M-CLIP checkpoint whose towers are used (frozen).
            model_name: tower config; must match ``init_from``.
            tokenizer: tokenizer spec; must match ``init_from``.
            context_length: text tokens.
            in_chans: image bands; must match ``init_from``.
            use_retrieval: retrieve knowledge cues (off = the ablation without knowledge).
            knowledge_languages: languages of the knowledge entries (default English).
            knowledge_prompts: how an entry is embedded. ``templates``: its name in the domain's
                zero-shot templates of its language, averaged (the entry's vector is then the
                zero-shot class weight, which any CLIP tower embeds well); ``descriptions``: its
                ``"name: description"`` text, for towers pretrained on broad text (a tower trained
                on the sample captions alone has never seen the description words); ``mentions``: the
                mean template vector of the concepts its description names ("a highway crossing a
                river": highway and river), which gives a concept the towers were never told
                about a meaning in words they know.
            k_object: object-level cues per image.
            k_scene: scene-level cues per image.
            dim: width of the augmentation module and experts.
            heads: attention heads of each expert.
            learned_gate: mix the experts with a learned gate (else average them).
            task_prompt: the query text for scene classification (VQA uses each question).
            head: ``classifier`` (an MLP over the experts' features, a closed class set) or
                ``joint`` (scene only: the features move the image embedding, which is scored
                against the class names' zero-shot vectors; see the class docstring).
            knowledge_exclude: concept ids (``concepts.json``) whose entries the knowledge base
                leaves out.
            direct_cues: ``joint`` head with retrieval: each level's retrieved entry vectors
                (score-weighted mean) are also added to the image embedding as they are, with a
                learned weight per level starting at 0. The experts reach the joint space only
                through a layer trained on seen classes; this path lets knowledge of a concept
                never trained on move the image towards that concept's own vector.
            residual_norm: ``joint`` head: the experts' residual is shortened to at most this
                length (the image embedding has length 1), so the zero-shot prior keeps a say on
                images of classes the experts were never trained on; none = unbounded.
        """
        super().__init__(**kwargs)
        if task not in ("scene", "vqa"):
            raise ValueError(f"task must be 'scene' or 'vqa', got {task!r}")
        if knowledge_prompts not in KNOWLEDGE_PROMPTS:
            raise ValueError(
                f"knowledge_prompts must be one of {KNOWLEDGE_PROMPTS}, got {knowledge_prompts!r}"
            )
        if head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {head!r}")
        if head == "joint" and task != "scene":
            raise ValueError("head 'joint' scores scene class names: use it with task 'scene'")
        if (direct_cues or residual_norm is not None) and head != "joint":
            raise ValueError("direct_cues and residual_norm act in the joint space: head 'joint'")
        excluded = set(knowledge_exclude or ())
        unknown = sorted(excluded - {concept.id for concept in load_concepts()})
        if unknown:
            raise ValueError(f"knowledge_exclude names unknown concept ids {unknown}")
        self.clip, _ = build_clip(model_name, None, in_chans=in_chans)
        self.clip.requires_grad_(False)
        self.tokenizer = build_tokenizer(tokenizer, context_length)
        languages = knowledge_languages or ["en"]
        self.records = [
            {key: r[key] for key in ("concept", "level", "lang", "name", "text")}
            for r in knowledge_records(languages)
            if r["concept"] not in excluded
        ]
        joint_dim = self.clip.visual.output_dim
        self.register_buffer("knowledge_vectors", torch.zeros(len(self.records), joint_dim))
        self.experts = SemanticExperts(
            joint_dim, self.clip.visual.transformer.width, dim, heads, learned_gate=learned_gate
        )
        self.cue_weights = (
            nn.Parameter(torch.zeros(len(self.experts.levels))) if direct_cues else None
        )
        self.head: nn.Module | None = None
        if classes:
            self._build_head(len(classes))
        self._knowledge_base: KnowledgeBase | None = None

    # -- set-up: frozen towers, knowledge vectors, head size ------------------------------------
    def setup(self, stage: str) -> None:
        super().setup(stage)
        check_input_channels(self.hparams.in_chans, self.preprocessing)
        if stage == "fit" and self.hparams.init_from:
            self._load_towers(self.hparams.init_from)
            self._embed_knowledge()
        if self.head is None:
            classes = self.trainer.datamodule.classes()
            self.hparams["classes"] = classes
            self._build_head(len(classes))
        if stage == "fit" and self.hparams.init_from and self.hparams.head == "joint":
            self._embed_classes()

    def _build_head(self, n_classes: int) -> None:
        if self.hparams.head == "classifier":
            self.head = ClassifierHead(self.experts.out_dim, n_classes).to(self.device)
            return
        joint_dim = self.clip.visual.output_dim
        self.head = nn.Linear(self.experts.out_dim, joint_dim).to(self.device)
        nn.init.zeros_(self.head.weight)  # starts as the towers' zero-shot classifier
        nn.init.zeros_(self.head.bias)
        self.register_buffer("class_vectors", torch.zeros(n_classes, joint_dim, device=self.device))

    def _load_towers(self, path: str) -> None:
        keys = ("model_name", "tokenizer", "in_chans", "context_length")
        load_init_from(path, self.clip, "model.", {key: self.hparams[key] for key in keys})

    @torch.no_grad()
    def _embed_knowledge(self) -> None:
        classifier = ZeroShotClassifier(self._text_encoder(), batch_size=256)
        if self.hparams.knowledge_prompts == "mentions":
            vectors = mention_vectors(self._text_encoder(), self.records)
        elif self.hparams.knowledge_prompts == "descriptions":
            texts = [record["text"] for record in self.records]
            vectors = classifier.class_weights(texts, ["{}"])
        else:
            vectors = torch.empty_like(self.knowledge_vectors)
            for lang in {record["lang"] for record in self.records}:
                rows = [i for i, record in enumerate(self.records) if record["lang"] == lang]
                names = [self.records[i]["name"] for i in rows]
                vectors[rows] = classifier.class_weights(names, templates(lang)).to(vectors)
        self.knowledge_vectors.copy_(vectors)
        self._knowledge_base = None

    @torch.no_grad()
    def _embed_classes(self) -> None:
        self.class_vectors.copy_(self.class_name_vectors(self.hparams.classes))

    @torch.no_grad()
    def class_name_vectors(self, classes: list[str], lang: str = "en") -> Tensor:
        """Zero-shot class vectors: each class's concept name (its folder name when it is no
        known concept) in the domain's templates of ``lang``, averaged."""
        names = [localised_class_name(name, lang) for name in classes]
        classifier = ZeroShotClassifier(self._text_encoder(), batch_size=256)
        return classifier.class_weights(names, templates(lang)).to(self.device)

    def knowledge_base(self) -> KnowledgeBase:
        """The cue store (built lazily from the knowledge vectors, which checkpoints carry)."""
        if self._knowledge_base is None:
            if not self.knowledge_vectors.any():  # neither embedded at fit nor loaded
                self._embed_knowledge()
            self._knowledge_base = KnowledgeBase.from_vectors(
                self.knowledge_vectors.cpu().numpy(), self.records, encoder=self._identity()
            )
        return self._knowledge_base

    def _text_encoder(self) -> Encoder:
        return Encoder("rs-text", self.encode_text, self.encode_text, str, [self.clip])

    def _identity(self) -> dict:
        return self._text_encoder().identity()

    # -- forward ------------------------------------------------------------------------------
    def encode_text(self, texts: list[str]) -> Tensor:
        return self.clip.encode_text(self.tokenizer(texts).to(self.device))

    def retrieve(
        self, queries: Tensor, level: str, k: int, per_image: int
    ) -> tuple[Tensor, Tensor]:
        """Top-``k`` entries of ``level`` for each query row, merged per image (max score)."""
        knowledge_base = self.knowledge_base()
        hits = knowledge_base.search(
            F.normalize(queries.float(), dim=-1).detach().cpu().numpy(),  # bf16 under autocast
            k,
            encoder=knowledge_base.encoder,
            where={"level": level},
        )
        ids, scores = [], []
        for image in range(len(hits) // per_image):
            best: dict[int, float] = {}
            for row in hits[image * per_image : (image + 1) * per_image]:
                for hit in row:
                    best[hit.id] = max(hit.score, best.get(hit.id, -1.0))
            top = sorted(best.items(), key=lambda item: -item[1])[:k]
            ids.append([i for i, _ in top])
            scores.append([s for _, s in top])
        ids_tensor = torch.tensor(ids, device=self.device)
        return self.knowledge_vectors[ids_tensor], torch.tensor(scores, device=self.device)

    def forward(self, images: Tensor, queries: list[str]) -> tuple[Tensor, Tensor]:
        """Logits over the classes (or answers) and the experts' gate weights."""
        features, gate, anchor = self.fuse(images, queries)
        if self.hparams.head == "joint":
            if not self.class_vectors.any():  # neither embedded at fit nor loaded
                self._embed_classes()
            return self.joint_logits(features, anchor, self.class_vectors), gate
        return self.head(features), gate

    def joint_logits(self, features: Tensor, anchor: Tensor, class_vectors: Tensor) -> Tensor:
        """``100·cos(anchor + head(features), class)``: the zero-shot logits while the head and
        the direct cue weights are zero (``anchor`` is ``fuse``'s)."""
        residual = self.head(features)
        if self.hparams.residual_norm is not None:
            length = residual.norm(dim=-1, keepdim=True).clamp(min=1e-12)
            residual = residual * (self.hparams.residual_norm / length).clamp(max=1.0)
        image = F.normalize(anchor + residual, dim=-1)
        return LOGIT_SCALE * image @ class_vectors.T

    @torch.no_grad()
    def score(self, images: Tensor, class_vectors: Tensor) -> Tensor:
        """Open-vocabulary scene logits of a ``head: joint`` system against any class vectors
        (unit rows in the towers' joint space: ``class_name_vectors`` or knowledge entries)."""
        if self.hparams.head != "joint":
            raise ValueError("score needs head 'joint'; a classifier head knows its classes only")
        features, _, anchor = self.fuse(images, [self.hparams.task_prompt] * len(images))
        return self.joint_logits(features, anchor, class_vectors.to(features))

    def fuse(self, images: Tensor, queries: list[str]) -> tuple[Tensor, Tensor, Tensor]:
        """The experts' features, gate weights and the anchor of the joint head: the unit image
        embedding, plus the weighted retrieved entries with ``direct_cues``."""
        with torch.no_grad():
            embedding, patch_tokens = encode_with_patch_tokens(self.clip.visual, images)
            unique = sorted(set(queries))  # a scene batch repeats one task prompt
            encoded = self.encode_text(unique)
            query = encoded[[unique.index(text) for text in queries]]
        cues = None
        if self.hparams.use_retrieval:
            patches = patch_tokens @ self.clip.visual.proj
            cues = {
                "object": self.retrieve(
                    patches.flatten(0, 1), "object", self.hparams.k_object, patches.shape[1]
                ),
                "scene": self.retrieve(embedding, "scene", self.hparams.k_scene, 1),
            }
        features, gate = self.experts(query, embedding, patch_tokens, cues)
        anchor = F.normalize(embedding, dim=-1)
        if self.cue_weights is not None and cues is not None:
            for weight, level in zip(self.cue_weights, self.experts.levels):
                vectors, scores = cues[level]
                scores = scores.clamp(min=0).unsqueeze(-1)
                mean = (scores * vectors).sum(1) / scores.sum(1).clamp(min=1e-6)
                anchor = anchor + weight * mean
        return features, gate, anchor

    def compute_losses(self, batch: dict, stage: str) -> dict[str, Tensor]:
        needed = "question" if self.hparams.task == "vqa" else "label"
        if needed not in batch:
            raise DomainVLMError(
                f"this SemanticExpertsSystem has task={self.hparams.task!r} but the data gives no "
                f"{needed!r}: pair task 'vqa' with RSVQADataModule and 'scene' with "
                "RSSceneDataModule (and test a checkpoint with the config it was trained with)"
            )
        if self.hparams.task == "vqa":
            queries, targets = batch["question"], batch["answer_index"]
        else:
            queries, targets = [self.hparams.task_prompt] * len(batch["label"]), batch["label"]
        logits, gate = self(batch["image"], queries)
        known = targets >= 0
        loss = F.cross_entropy(logits[known], targets[known])
        accuracy = (logits.argmax(-1) == targets).float().mean()
        losses = {"loss": loss, "acc": accuracy}
        if "type" in batch:
            self._log_accuracy_by_type(logits.argmax(-1) == targets, batch["type"], stage)
        for index, level in enumerate(self.experts.levels):
            losses[f"gate_{level}"] = gate[:, index].mean().detach()
        return losses

    def _log_accuracy_by_type(self, correct: Tensor, types: list[str], stage: str) -> None:
        """RSVQA reports accuracy per question type; weighting each batch by its count of that
        type makes the epoch value exact (correct / asked) rather than a mean of batch means."""
        for kind in sorted(set(types)):
            mask = torch.tensor([t == kind for t in types], device=correct.device)
            self.log(
                f"{stage}/acc_{kind}",
                correct[mask].float().mean(),
                batch_size=int(mask.sum()),
                sync_dist=stage != "train",
            )

    def on_train_epoch_start(self) -> None:
        super().on_train_epoch_start()
        self.clip.eval()
