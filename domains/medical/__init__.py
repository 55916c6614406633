"""Medical: radiology images (DICOM) and reports; M3AE masked multimodal pretraining and VQA."""

from pathlib import Path

from domainvlm.core.registry import DomainPlugin, lazy

MED = "domainvlm.domains.medical"
IMAGE_READER = lazy(f"{MED}.dicom:IMAGE_READER")

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
    write_sample=lazy(f"{MED}.sample:write_sample"),
    image_readers={suffix: IMAGE_READER for suffix in (".dcm", ".dicom")},
    knowledge_from_data=lazy(f"{MED}.knowledge:report_records"),
    knowledge_queries=lazy(f"{MED}.knowledge:image_queries"),
    zeroshot_data=lazy(f"{MED}.evaluation_data:zeroshot_data"),
    retrieval_data=lazy(f"{MED}.evaluation_data:retrieval_data"),
    vqa_data=lazy(f"{MED}.evaluation_data:vqa_data"),
    answer_questions=lazy(f"{MED}.evaluation_data:answer_questions"),
    rank_answers=lazy(f"{MED}.evaluation_data:rank_answers"),
    templates=lazy(f"{MED}.templates:templates"),
)
