# hf_ft — every entry point builds the virtual environment it needs first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Installed before anything that depends on torch, so pip never pulls a CUDA build onto a CPU
# machine. For a GPU: make install TORCH="torch==2.13.0 --index-url <the PyTorch CUDA wheel index>"
TORCH ?= torch==2.13.0
OFFLINE := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1

# make train
ZERO ?= 0
OFFLOAD ?= 0
NPROC ?= 1
MODEL ?= bert-base-chinese
SUBJECTS ?= all
DATA_DIR ?=
OUTPUT_DIR ?= out/train-zero$(ZERO)
ARGS ?=

.PHONY: install demo demo-open-book test test-fast train bench rehearsal gpu-check clean

$(BIN)/hf-ft: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e ".[deepspeed,tracking,test]"
	touch $@

install: $(BIN)/hf-ft

demo: install
	$(OFFLINE) $(BIN)/hf-ft make-demo-data demo/data --rows-per-subject 400
	$(OFFLINE) $(BIN)/hf-ft make-tiny-model demo/model --vocab-from demo/data --hidden-size 128 --heads 4 --intermediate-size 256
	$(OFFLINE) $(BIN)/python run_qa.py configs/demo.yaml
	$(OFFLINE) $(BIN)/python -m hf_ft.evaluate --original demo/model --finetuned demo/out
	@echo
	@echo "loss curve:  demo/out/validation_loss_curve.png"
	@echo "model:       demo/out (model.safetensors, tokenizer, README.md model card)"
	@echo "comparison:  demo/out/comparison/comparison.md, comparison.png (also in the model card)"

# Open book: the same fine-tuning without and with retrieved facts, then the paired comparison (~4 min here).
demo-open-book: install
	$(OFFLINE) $(BIN)/hf-ft make-open-book-data demo/open_book
	$(OFFLINE) $(BIN)/hf-ft make-tiny-model demo/open_book/model --vocab-from demo/open_book/data demo/open_book/corpus --hidden-size 128 --heads 4 --intermediate-size 256
	$(OFFLINE) $(BIN)/python run_qa.py configs/closed_book.yaml
	$(OFFLINE) $(BIN)/python run_qa.py configs/open_book.yaml
	$(OFFLINE) $(BIN)/python -m hf_ft.evaluate --original demo/open_book/closed --finetuned demo/open_book/open --output_dir demo/open_book/comparison --gold_passages demo/open_book/gold_passages.jsonl

# Two pytest workers share the cores (one thread each: see tests/conftest.py), test by test (a module each,
# --dist loadfile, took 33.6 min against 25.6: the longest modules ran last, on one worker); tests that
# measure speed run after them, alone. TEST_WORKERS=0 runs everything in one process.
TEST_WORKERS ?= 2
test: install
	$(OFFLINE) $(BIN)/python -m pytest -q -ra --durations=25 -m "not alone" $(if $(filter-out 0,$(TEST_WORKERS)),-n $(TEST_WORKERS))
	$(OFFLINE) $(BIN)/python -m pytest -q -ra -m alone

test-fast: install
	$(OFFLINE) $(BIN)/python -m pytest -q -ra -m "not slow"

train: install
	$(BIN)/python -m hf_ft.launch --zero $(ZERO) --offload $(OFFLOAD) --nproc $(NPROC) -- \
		--model_name_or_path $(MODEL) --subjects $(SUBJECTS) $(if $(DATA_DIR),--data_dir $(DATA_DIR)) \
		--output_dir $(OUTPUT_DIR) $(ARGS)

# Each benchmark measures one thing and writes its own report (see docs/benchmarks.md).
bench: install
	$(OFFLINE) $(BIN)/python -m benchmarks.throughput --output bench_throughput.json $(BENCH_ARGS)
	$(OFFLINE) $(BIN)/python -m benchmarks.contention --output bench_contention.json
	$(OFFLINE) $(BIN)/python -m benchmarks.preprocessing --output bench_preprocessing.json
	$(OFFLINE) $(BIN)/python -m benchmarks.retrieval --output bench_retrieval.json
	$(OFFLINE) $(BIN)/python -m benchmarks.zero_shot --output bench_zero_shot.json
	$(OFFLINE) $(BIN)/python -m benchmarks.accuracy --output bench_accuracy.json

# The main job at full scale through a real hub server on 127.0.0.1 (~30 minutes here; not in CI).
rehearsal: install
	$(BIN)/python -m benchmarks.rehearsal --output rehearsal.json $(REHEARSAL_ARGS)

gpu-check: install
	$(OFFLINE) $(BIN)/python -m benchmarks.gpu_check

clean:
	rm -rf demo out .pytest_cache
