"""Medical: radiology images (DICOM) and reports; M3AE masked multimodal pretraining and VQA."""

from pathlib import Path

from domainvlm.core.registry import DomainPlugin
from domainvlm.domains.medical.dicom import IMAGE_READER
from domainvlm.domains.medical.evaluation_data import (
    answer_questions,
    rank_answers,
    retrieval_data,
    vqa_data,
    zeroshot_data,
)
from domainvlm.domains.medical.knowledge import image_queries, report_records
from domainvlm.domains.medical.sample import write_sample
from domainvlm.domains.medical.templates import templates

PLUGIN = DomainPlugin(
    name="medical",
    description="M3AE masked multimodal pretraining on radiology images (DICOM) and reports; medical VQA",
    modalities=("image", "text"),
    input_format="DICOM (all pydicom transfer syntaxes with pylibjpeg), PNG/JPEG; ROCO captions.txt, MedICaT JSONL, VQA-RAD/SLAKE JSON",
    channels="grayscale after modality + VOI LUT (windowing), RGB/YBR as RGB",
    data_licence=(
        "sample: synthetic (generated here, fake identifiers only); ROCO, MedICaT, VQA-RAD and "
        "SLAKE are read from your own copy under their own licences"
    ),
    configs_dir=Path(__file__).resolve().parents[2] / "configs" / "medical",
    write_sample=write_sample,
    image_readers={suffix: IMAGE_READER for suffix in (".dcm", ".dicom")},
    knowledge_from_data=report_records,
    knowledge_queries=image_queries,
    zeroshot_data=zeroshot_data,
    retrieval_data=retrieval_data,
    vqa_data=vqa_data,
    answer_questions=answer_questions,
    rank_answers=rank_answers,
    templates=templates,
)
