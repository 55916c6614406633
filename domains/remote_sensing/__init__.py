"""Remote sensing: multilingual RS-M-CLIP on GeoTIFF imagery, with retrieval-based semantic experts."""

from pathlib import Path

from domainvlm.core.registry import DomainPlugin, lazy
from domainvlm.domains.remote_sensing.knowledge import LANGUAGES

RS = "domainvlm.domains.remote_sensing"
RASTER_READER = lazy(f"{RS}.rasters:RASTER_READER")

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
    write_sample=lazy(f"{RS}.sample:write_sample"),
    knowledge_source=lazy(f"{RS}.knowledge:knowledge_records"),
    knowledge_queries=lazy(f"{RS}.knowledge:knowledge_queries"),
    image_readers={".tif": RASTER_READER, ".tiff": RASTER_READER},
    zeroshot_data=lazy(f"{RS}.evaluation_data:zeroshot_data"),
    retrieval_data=lazy(f"{RS}.evaluation_data:retrieval_data"),
    templates=lazy(f"{RS}.templates:templates"),
    vqa_data=lazy(f"{RS}.vqa:vqa_data"),
    answer_questions=lazy(f"{RS}.vqa:answer_questions"),
    rank_answers=lazy(f"{RS}.vqa:rank_answers"),
    languages=LANGUAGES,
)
