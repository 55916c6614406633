"""Comics (LoCU layers 1, 3 and 4): pages, panels and dialogue from Manga109, CoMix, COMICS and
ComicsPAP; a panel↔text dual encoder with character identity and a closure sequence scorer."""

from pathlib import Path

from domainvlm.core.registry import DomainPlugin
from domainvlm.domains.comics.closure import EVALUATION as CLOSURE
from domainvlm.domains.comics.evaluation_data import retrieval_data, zeroshot_data
from domainvlm.domains.comics.knowledge import collection_records
from domainvlm.domains.comics.sample import write_sample
from domainvlm.domains.comics.templates import templates

PLUGIN = DomainPlugin(
    name="comics",
    description="panel-text CLIP with character identity and closure scoring for comics and manga (LoCU)",
    modalities=("image", "text"),
    input_format="page images (JPEG/PNG) + Manga109 XML (+ Manga109Dialog), CoMix COCO, COMICS panels/OCR CSV/folds, ComicsPAP JSON",
    channels="RGB (greyscale pages repeated to RGB)",
    data_licence=(
        "sample: synthetic (generated here); Manga109, CoMix, COMICS and ComicsPAP are read from "
        "your own copy under their own licences (comic images are never redistributable)"
    ),
    configs_dir=Path(__file__).resolve().parents[2] / "configs" / "comics",
    write_sample=write_sample,
    knowledge_from_data=collection_records,
    zeroshot_data=zeroshot_data,
    retrieval_data=retrieval_data,
    templates=templates,
    evaluations={"closure": CLOSURE},
)
