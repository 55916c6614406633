# `make demo` and `make test` each set up their own environment on a fresh machine.
# The environment lives outside the clone, keyed by a hash of pyproject.toml, so repeated fresh
# clones (CI) reuse one environment instead of piling up multi-GB copies; stale ones are removed.
PYTHON ?= python3
EXTRAS ?= cpu,dev
CACHE_DIR ?= $(HOME)/.cache/domainvlm
# Only the dependency lists key the environment: editing entry points or tool settings reuses it.
DEPS_HASH := $(shell sed -n '/^dependencies/,/^\[project.scripts\]/p' pyproject.toml | sha1sum | cut -c1-12)
VENV ?= $(CACHE_DIR)/venv-$(DEPS_HASH)
PY := $(VENV)/bin/python
export NO_ALBUMENTATIONS_UPDATE := 1
export PYTHONUNBUFFERED := 1

.PHONY: env test test-all lint format demo demo-remote-sensing demo-medical demo-comics demo-surgical bench clean-env

$(VENV)/.installed:
	@mkdir -p $(CACHE_DIR)
	@find $(CACHE_DIR) -maxdepth 1 -name 'venv-*' ! -path '$(VENV)' -exec rm -rf {} +
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[$(EXTRAS)]"
	touch $@

# Re-point the shared environment's editable install at this clone (seconds, no downloads).
env: $(VENV)/.installed
	@$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .

test: env
	$(PY) -m pytest -q -m "not slow" tests

test-all: env
	$(PY) -m pytest -q tests

lint: env
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: env
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

DVLM := $(VENV)/bin/domainvlm
RS_DATA := data/samples/remote_sensing
RS_RUNS := runs/remote_sensing
RS_CLIP := $(RS_RUNS)/tiny/checkpoints/last.ckpt
RS_EXPERTS := configs/remote_sensing/semantic_experts.yaml

demo: env demo-remote-sensing demo-medical demo-comics demo-surgical

# sample data -> RS-M-CLIP -> zero-shot + retrieval per language -> semantic experts with and
# without retrieval -> knowledge base -> one zero-shot prediction on a GeoTIFF and one KB search.
# Reruns resume from the last checkpoints instead of training again.
demo-remote-sensing: env
	$(DVLM) sample-data remote_sensing --out $(RS_DATA) --size demo
	$(DVLM) fit --config configs/remote_sensing/tiny.yaml --ckpt_path last
	$(DVLM) eval zeroshot --checkpoint $(RS_CLIP) --data $(RS_DATA) --lang all --table \
		--confusion-matrix $(RS_RUNS)/tiny/confusion_matrix.png
	$(DVLM) eval retrieval --checkpoint $(RS_CLIP) --data $(RS_DATA) --table \
		--grid $(RS_RUNS)/tiny/retrieval_grid.png
	$(DVLM) fit --config $(RS_EXPERTS) --ckpt_path last
	$(DVLM) fit --config $(RS_EXPERTS) --config configs/remote_sensing/no_retrieval.yaml --ckpt_path last
	$(DVLM) test --config $(RS_EXPERTS) --ckpt_path $(RS_RUNS)/semantic_experts/checkpoints/last.ckpt
	$(DVLM) test --config $(RS_EXPERTS) --config configs/remote_sensing/no_retrieval.yaml \
		--ckpt_path $(RS_RUNS)/semantic_experts_no_retrieval/checkpoints/last.ckpt
	$(DVLM) kb build --domain remote_sensing --overwrite --checkpoint $(RS_CLIP) --out $(RS_RUNS)/knowledge_base
	$(DVLM) zeroshot --checkpoint $(RS_CLIP) --lang de \
		--classes "Wald,Fluss,Meer oder See,Industriegebiet,Wohngebiet" \
		$(RS_DATA)/scene_classes/Forest/$$(ls $(RS_DATA)/scene_classes/Forest | head -n 1)
	$(DVLM) kb search $(RS_RUNS)/knowledge_base --text "ship" -k 5 \
		--filter level=object --filter lang=en

MED_DATA := data/samples/medical
MED_RUNS := runs/medical
MED_M3AE := $(MED_RUNS)/tiny_pretrain/checkpoints/last.ckpt
MED_DICOM := $(MED_DATA)/images/SYN_0004.dcm

# sample data (DICOM, reports, VQA-RAD questions) -> M3AE pretraining -> VQA fine-tuning ->
# accuracy table beside the majority answer -> zero-shot and report retrieval (pooled embeddings,
# then an ITM re-rank of each query's top 16) -> report knowledge base -> one zero-shot
# prediction and one knowledge-base search for a held-out DICOM file (prior cases only).
# Reruns resume from the last checkpoints instead of training again.
demo-medical: env
	$(DVLM) sample-data medical --out $(MED_DATA) --size demo
	$(DVLM) fit --config configs/medical/tiny_pretrain.yaml --ckpt_path last
	$(DVLM) fit --config configs/medical/tiny_vqa.yaml --ckpt_path last
	$(DVLM) eval vqa --checkpoint $(MED_RUNS)/tiny_vqa/checkpoints/last.ckpt --data $(MED_DATA) --table
	$(DVLM) eval zeroshot --checkpoint $(MED_M3AE) --data $(MED_DATA) --table
	$(DVLM) eval retrieval --checkpoint $(MED_M3AE) --data $(MED_DATA) --rerank 16 --table \
		--grid $(MED_RUNS)/tiny_pretrain/retrieval_grid.png
	$(DVLM) kb build --domain medical --overwrite --data $(MED_DATA) --checkpoint $(MED_M3AE) \
		--out $(MED_RUNS)/knowledge_base
	$(DVLM) zeroshot --checkpoint $(MED_M3AE) --classes "chest,brain,abdomen" $(MED_DICOM)
	$(DVLM) kb search $(MED_RUNS)/knowledge_base --image $(MED_DICOM) -k 3 --filter split=train

CO_DATA := data/samples/comics
CO_RUNS := runs/comics
CO_CLIP := $(CO_RUNS)/tiny/checkpoints/last.ckpt
CO_DETECTOR := $(CO_RUNS)/detector/checkpoints/last.ckpt
CO_GROUNDING := $(CO_RUNS)/grounding/checkpoints/last.ckpt
CO_THRESHOLDS := $(CO_RUNS)/tiny/character_thresholds.json

# sample data (Manga109 XML + dialog links, CoMix COCO, COMICS folds, ComicsPAP records) -> fit
# tiny.yaml (panel<->text CLIP, character identity, closure scorer) -> panel<->text retrieval table
# and grid on the held-out books -> closure accuracy per task beside random (COMICS table layout,
# then ComicsPAP) -> knowledge base of the collection -> one text search (panels) and one
# character search (a held-out character crop) -> page detector and grounding (speakers, reading
# order) -> character clustering and naming on the held-out books, cuts chosen on the val books and
# saved -> comics predict on the held-out pages with those cuts: one transcript and one annotated
# page picture.
# Reruns resume from the last checkpoints.
demo-comics: env
	$(DVLM) sample-data comics --out $(CO_DATA) --size demo
	$(DVLM) fit --config configs/comics/tiny.yaml --ckpt_path last
	$(DVLM) fit --config configs/comics/detector.yaml --ckpt_path last
	$(DVLM) fit --config configs/comics/grounding.yaml --ckpt_path last
	$(DVLM) eval retrieval --checkpoint $(CO_CLIP) --data $(CO_DATA) --table \
		--grid $(CO_RUNS)/tiny/retrieval_grid.png
	$(DVLM) eval closure --checkpoint $(CO_CLIP) --data $(CO_DATA) --table
	$(DVLM) kb build --domain comics --overwrite --data $(CO_DATA) --checkpoint $(CO_CLIP) \
		--out $(CO_RUNS)/knowledge_base
	$(DVLM) kb search $(CO_RUNS)/knowledge_base --text "Dark night, Bo! See the apple?" -k 3 \
		--filter kind=panel
	$(DVLM) kb search $(CO_RUNS)/knowledge_base -k 5 --filter kind=character --image \
		"$$($(PY) -m domainvlm.domains.comics.character_queries $(CO_DATA) | head -n 1 | cut -f 2)"
	$(DVLM) eval characters --checkpoint $(CO_CLIP) --data $(CO_DATA) --table \
		--write-thresholds $(CO_THRESHOLDS)
	$(DVLM) comics predict --pages $(CO_DATA) --split test --out $(CO_RUNS)/predict \
		--detector $(CO_DETECTOR) --grounding $(CO_GROUNDING) --checkpoint $(CO_CLIP) --bank $(CO_DATA) \
		--thresholds $(CO_THRESHOLDS)
	@page="$$(ls $(CO_RUNS)/predict/*/*.txt | head -n 1)"; echo "transcript $$page:"; cat "$$page"
	@echo "annotated page: $$(ls $(CO_RUNS)/predict/*/*.png | head -n 1)"

SU_DATA := data/samples/surgical
SU_RUNS := runs/surgical
SU_CLIP := $(SU_RUNS)/tiny/checkpoints/last.ckpt

# sample videos + two transcripts each -> SurgVLP tiny.yaml (clip-level) -> zero-shot phases with
# the published prompts on the held-out videos (per-video table, confusion matrix, phase timeline
# with truth above prediction) -> tool presence and CholecT50 mAP -> clip<->sentence retrieval ->
# moment knowledge base -> one text -> moment search. Reruns resume from the last checkpoint.
demo-surgical: env
	$(DVLM) sample-data surgical --out $(SU_DATA) --size demo
	$(DVLM) fit --config configs/surgical/tiny.yaml --ckpt_path last
	$(DVLM) eval phases --checkpoint $(SU_CLIP) --data $(SU_DATA) --table \
		--confusion-matrix $(SU_RUNS)/tiny/confusion_matrix.png --timeline $(SU_RUNS)/tiny/timeline.png
	$(DVLM) eval tools --checkpoint $(SU_CLIP) --data $(SU_DATA) --table
	$(DVLM) eval retrieval --checkpoint $(SU_CLIP) --data $(SU_DATA) --table
	$(DVLM) kb build --domain surgical --overwrite --data $(SU_DATA) --checkpoint $(SU_CLIP) \
		--out $(SU_RUNS)/knowledge_base
	$(DVLM) kb search $(SU_RUNS)/knowledge_base --text "clip the cystic duct" -k 5

bench: env
	$(PY) benchmarks/train_step.py
	$(PY) benchmarks/kb_bench.py --n 100000 --dim 512

clean-env:
	rm -rf $(VENV)
