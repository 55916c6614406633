"""Comics (LoCU layers 1, 3 and 4): pages, panels and dialogue from Manga109, CoMix, COMICS and
ComicsPAP; a panel↔text dual encoder with character identity and a closure sequence scorer."""

from pathlib import Path

from domainvlm.core.registry import DomainCommand, DomainEvaluation, DomainPlugin, lazy

COMICS = "domainvlm.domains.comics"
CLOSURE = DomainEvaluation(
    help="closure: COMICS cloze and ComicsPAP pick-a-panel accuracy beside random",
    add_arguments=lazy(f"{COMICS}.closure:add_arguments"),
    run=lazy(f"{COMICS}.closure:run"),
    format_table=lazy(f"{COMICS}.closure:format_table"),
)
PREDICT = DomainCommand(
    help="detect, ground and transcribe a folder of pages: Magi-like JSON, COCO, pictures",
    add_arguments=lazy(f"{COMICS}.predict:add_arguments"),
    run=lazy(f"{COMICS}.predict:run"),
    description="Panels, texts, characters, speakers, character clusters across each book, "
    "reading order and transcripts for a folder of pages (or a dataset root). See docs/comics.md.",
)
DETECTION = DomainEvaluation(
    help="detection: COCO AP50, AP50-95, AR10, AR100 per class of a page detector",
    add_arguments=lazy(f"{COMICS}.detection_eval:add_arguments"),
    run=lazy(f"{COMICS}.detection_eval:run"),
    format_table=lazy(f"{COMICS}.detection_eval:format_table"),
)
GROUNDING = f"{COMICS}.grounding_evaluation"
SPEAKERS = DomainEvaluation(
    help="speakers: text-to-speaker link precision, recall, F1 beside nearest-character and random",
    add_arguments=lazy(f"{GROUNDING}:add_speaker_arguments"),
    run=lazy(f"{GROUNDING}:run_speakers"),
    format_table=lazy(f"{GROUNDING}:format_speakers"),
)
CHARACTERS = DomainEvaluation(
    help="characters: clustering AMI across each book and naming accuracy from a character bank",
    add_arguments=lazy(f"{GROUNDING}:add_character_arguments"),
    run=lazy(f"{GROUNDING}:run_characters"),
    format_table=lazy(f"{GROUNDING}:format_characters"),
)
ORDER = DomainEvaluation(
    help="order: panel and text reading order, exact-page accuracy and Kendall tau, learned vs rule",
    add_arguments=lazy(f"{GROUNDING}:add_order_arguments"),
    run=lazy(f"{GROUNDING}:run_order"),
    format_table=lazy(f"{GROUNDING}:format_order"),
)

PLUGIN = DomainPlugin(
    name="comics",
    description="panel-text CLIP with character identity and closure scoring for comics and manga (LoCU)",
    modalities=("image", "text"),
    input_format="page images (JPEG/PNG) + Manga109 XML (+ Manga109Dialog), CoMix COCO or XML, eBDtheque SVG, COMICS panels/OCR CSV/folds, ComicsPAP Parquet or JSON",
    channels="RGB (greyscale pages repeated to RGB)",
    data_licence=(
        "sample: synthetic (generated here); Manga109, CoMix, eBDtheque, COMICS and ComicsPAP are read "
        "from your own copy under their own licences (comic images are never redistributable)"
    ),
    configs_dir=Path(__file__).resolve().parents[2] / "configs" / "comics",
    write_sample=lazy(f"{COMICS}.sample:write_sample"),
    knowledge_from_data=lazy(f"{COMICS}.knowledge:collection_records"),
    zeroshot_data=lazy(f"{COMICS}.evaluation_data:zeroshot_data"),
    retrieval_data=lazy(f"{COMICS}.evaluation_data:retrieval_data"),
    templates=lazy(f"{COMICS}.templates:templates"),
    evaluations={
        "closure": CLOSURE,
        "detection": DETECTION,
        "speakers": SPEAKERS,
        "characters": CHARACTERS,
        "order": ORDER,
    },
    commands={"predict": PREDICT},
)
