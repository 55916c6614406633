"""Surgical video: SurgVLP clip-level video-transcript pretraining, zero-shot phase and tool
recognition, and text → moment search over a video collection."""

from pathlib import Path

from domainvlm.core.registry import DomainPlugin
from domainvlm.domains.surgical.evaluation_data import retrieval_data, zeroshot_data
from domainvlm.domains.surgical.knowledge import moment_queries, moment_records
from domainvlm.domains.surgical.probe import PROBE
from domainvlm.domains.surgical.sample import write_sample
from domainvlm.domains.surgical.tasks import PHASES, TOOLS
from domainvlm.domains.surgical.templates import templates

PLUGIN = DomainPlugin(
    name="surgical",
    description="SurgVLP video-clip / two-transcript pretraining; zero-shot phases and tools; moment search",
    modalities=("video", "text"),
    input_format=(
        "mp4 (any FFmpeg codec; seek-decoded) or pre-extracted frame folders; SVL narration CSV, "
        "SRT/WebVTT; Cholec80 phase/tool txt, AutoLaparo task-1 labels, CholecT50 JSON"
    ),
    channels="RGB frames",
    data_licence=(
        "sample: synthetic (generated here); Cholec80, AutoLaparo, CholecT50 and lecture videos "
        "are read from your own copy under their own licences"
    ),
    configs_dir=Path(__file__).resolve().parents[2] / "configs" / "surgical",
    write_sample=write_sample,
    knowledge_from_data=moment_records,
    knowledge_queries=moment_queries,
    zeroshot_data=zeroshot_data,
    retrieval_data=retrieval_data,
    templates=templates,
    evaluations={"phases": PHASES, "tools": TOOLS, "probe": PROBE},
)
