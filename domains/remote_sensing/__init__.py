"""Remote sensing: multilingual RS-M-CLIP on GeoTIFF imagery, with retrieval-based semantic experts."""

from pathlib import Path

from domainvlm.core.registry import DomainPlugin
from domainvlm.domains.remote_sensing.evaluation_data import retrieval_data, zeroshot_data
from domainvlm.domains.remote_sensing.knowledge import (
    LANGUAGES,
    knowledge_queries,
    knowledge_records,
)
from domainvlm.domains.remote_sensing.rasters import RASTER_READER
from domainvlm.domains.remote_sensing.sample import write_sample
from domainvlm.domains.remote_sensing.templates import templates
from domainvlm.domains.remote_sensing.vqa import answer_questions, rank_answers, vqa_data

PLUGIN = DomainPlugin(
    name="remote_sensing",
    description="multilingual CLIP for aerial/satellite imagery (RS-M-CLIP) + semantic experts",
    modalities=("image", "text"),
    input_format="GeoTIFF/COG (any bands, dtype), PNG/JPEG; Karpathy caption JSON; class folders; RSVQA JSON",
    channels="configurable band list, e.g. Sentinel-2 B4,B3,B2 (RGB), RGB+NIR, or all 13 bands",
    data_licence=(
        "sample: synthetic (generated here); RSICD, RSITMD, UCM, EuroSAT, RESISC45, AID and RSVQA "
        "are read from your own copy under their own licences"
    ),
    configs_dir=Path(__file__).resolve().parents[2] / "configs" / "remote_sensing",
    write_sample=write_sample,
    knowledge_source=knowledge_records,
    knowledge_queries=knowledge_queries,
    image_readers={".tif": RASTER_READER, ".tiff": RASTER_READER},
    zeroshot_data=zeroshot_data,
    retrieval_data=retrieval_data,
    templates=templates,
    vqa_data=vqa_data,
    answer_questions=answer_questions,
    rank_answers=rank_answers,
    languages=LANGUAGES,
)
