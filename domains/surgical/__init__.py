"""Surgical video: SurgVLP clip-level video-transcript pretraining, zero-shot phase and tool
recognition, and text → moment search over a video collection."""

from pathlib import Path

from domainvlm.core.registry import DomainEvaluation, DomainPlugin, lazy

SURG = "domainvlm.domains.surgical"
PHASES = DomainEvaluation(
    help="phases: per-video zero-shot phase accuracy / macro-F1, confusion matrix, timeline",
    add_arguments=lazy(f"{SURG}.eval_options:add_phase_arguments"),
    run=lazy(f"{SURG}.tasks:run_phases"),
    format_table=lazy(f"{SURG}.tasks:format_phases"),
)
TOOLS = DomainEvaluation(
    help="tools: zero-shot tool presence AP/mAP (Cholec80) and CholecT50 i/v/t/ivt mAP",
    add_arguments=lazy(f"{SURG}.eval_options:add_tool_arguments"),
    run=lazy(f"{SURG}.tasks:run_tools"),
    format_table=lazy(f"{SURG}.tasks:format_tools"),
)
PROBE = DomainEvaluation(
    help="probe: linear probe / few-shot phase recognition on frozen frame features",
    add_arguments=lazy(f"{SURG}.eval_options:add_probe_arguments"),
    run=lazy(f"{SURG}.probe:run"),
    format_table=lazy(f"{SURG}.probe:format_table"),
)

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
    write_sample=lazy(f"{SURG}.sample:write_sample"),
    knowledge_from_data=lazy(f"{SURG}.knowledge:moment_records"),
    knowledge_queries=lazy(f"{SURG}.knowledge:moment_queries"),
    zeroshot_data=lazy(f"{SURG}.evaluation_data:zeroshot_data"),
    retrieval_data=lazy(f"{SURG}.evaluation_data:retrieval_data"),
    templates=lazy(f"{SURG}.templates:templates"),
    evaluations={"phases": PHASES, "tools": TOOLS, "probe": PROBE},
)
