# The README's two set-up commands: `make demo` and `make test`. Both build .venv when missing,
# with the exact versions of LOCK (pip constraints); pyproject.toml holds the ranges.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
LOCK   := requirements/lock-tf221.txt
# The second tested stack: what Colab and Kaggle ship (TensorFlow 2.20.0, protobuf 5.29.5).
NB_VENV := .venv-tf220
NB_LOCK := requirements/lock-tf220.txt
DEMO_DATA := data/demo
DEMO_RUN  := runs/demo
DEMO_SIZE ?= 80
DEMO_PER_CLASS ?= 80
DEMO_EPOCHS ?= 14

.PHONY: install demo test test-notebook-stack test-notebook-stack-3.12 test-notebook-stack-3.13 test-notebook-stacks test-faults test-kills lock clean schemas arm64-env test-arm64

$(STAMP): pyproject.toml $(LOCK)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c $(LOCK) -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

# Re-running `make demo` keeps runs/demo: the pipeline skips the stages that are finished and
# valid. `make clean` starts over.
demo: install
	@# Written once: rewriting it would give the files new modification times, and the pipeline's
	@# data fingerprint would (rightly) train again. `make clean` starts over.
	test -d $(DEMO_DATA) || $(BIN)/skinscan-edge demo-data $(DEMO_DATA) --per-class $(DEMO_PER_CLASS)
	@# No ImageNet download on the build machines: the demo trains the whole base from scratch.
	@# Exit 1 means the evaluate gate flagged an export: a finding of the demo, shown in the report.
	@# The gate is sized to the demo's 120 test images, where one image is 0.83 pp: at most two images
	@# lost overall (2 pp), none of Melanoma's (2 pp of 12 images). --no-client: this weak synthetic
	@# model flips 5-15% of its answers on the Android guide's resize (< 1 level of 255 on average),
	@# so no file would pass the MediaPipe check and the demo would bundle nothing (docs/android.md).
	@# The int8 files (the bundle's candidates) also run on a phone's arm64 kernels under QEMU, on both
	@# emulated CPUs, 60 sampled test images each (docs/arm64.md; about 5 min). Setting that up needs
	@# root for apt-get: where it cannot be, the demo says so in one line and runs without those rows.
	@$(MAKE) --no-print-directory -s arm64-env >/dev/null 2>.arm64-env.err \
	    || echo "note: no arm64 rows in this demo: $$(tail -n 1 .arm64-env.err) (docs/arm64.md)"; rm -f .arm64-env.err
	$(BIN)/skinscan-edge pipeline --data $(DEMO_DATA) --out $(DEMO_RUN) --weights none --img-size $(DEMO_SIZE) \
	    --epochs 0 --fine-tune-epochs $(DEMO_EPOCHS) --unfreeze-from input --fine-tune-lr 1e-3 --batch-size 16 \
	    --android --no-client --critical-class Melanoma --max-accuracy-drop 2 --bench-threads 2 --bench-batch 1,8 --bench-min-time 0.5 \
	    $$(test -f .arm64/site/.complete && echo --arm64 --arm64-limit 60 --arm64-models tflite-int8,tflite-qat-int8); \
	    rc=$$?; [ $$rc -le 1 ] || exit $$rc
	@echo "demo finished (SYNTHETIC data, not medical): open $(DEMO_RUN)/reports/index.html"

test: install
	$(BIN)/python -m pytest

# Builds $(NB_VENV) from the platform's packages alone, installs skinscan-edge into it (checking
# that nothing is replaced), then train -> export (every precision) -> evaluate -> predict on a
# tiny synthetic run. 21 minutes measured on 2 shared, busy cores.
test-notebook-stack:
	scripts/notebook_stack.sh $(PYTHON) $(NB_VENV) $(NB_LOCK) runs/notebook-stack $(NB_OVERRIDES)

# The same on pyenv's 3.12.1 (Kaggle's set) and 3.13.0 (Colab's set with a cp313 numpy).
PYENV_ROOT ?= $(shell pyenv root 2>/dev/null || echo $(HOME)/.pyenv)
test-notebook-stack-3.12:
	scripts/notebook_stack.sh $(PYENV_ROOT)/versions/3.12.1/bin/python .venv-tf220-py312 $(NB_LOCK) runs/notebook-stack-py312
test-notebook-stack-3.13:
	scripts/notebook_stack.sh $(PYENV_ROOT)/versions/3.13.0/bin/python .venv-tf220-py313 $(NB_LOCK) runs/notebook-stack-py313 \
	    requirements/notebook-platform-py313.txt
test-notebook-stacks: test-notebook-stack test-notebook-stack-3.12 test-notebook-stack-3.13

# The JSON Schemas of the run files (skinscan_edge/core/runfiles.py), for users' CI; a test keeps them in step.
schemas: install
	$(BIN)/python -c "from skinscan_edge.core.runfiles import write_schemas; write_schemas('schemas')"

# Fault injection (issue 28, docs/reliability.md): train, export, evaluate, report and predict run
# out of disk at a seeded sample of points (a tmpfs: needs root, as CI runs). FAULT_POINTS per command.
test-faults: install
	SKINSCAN_FAULTS=1 $(BIN)/python -m pytest tests/test_fault_injection.py -q -s

# The kill sweep (issue 28, docs/reliability.md): train, export and pipeline SIGKILLed at a seeded
# sample of moments (traced writes and times), then resumed to the uninterrupted result.
test-kills: install
	SKINSCAN_KILLS=1 $(BIN)/python -m pytest tests/test_kill_sweep.py -q -s

# After a change of dependencies: re-resolve $(LOCK) in a fresh venv (the newest versions the
# ranges allow), then run `make test` on it before committing the new lock.
lock:
	rm -rf .venv-lock
	$(PYTHON) -m venv .venv-lock
	.venv-lock/bin/pip install --quiet --upgrade pip
	.venv-lock/bin/pip install --quiet -e ".[test]"
	(sed -n '/^#/p' $(LOCK); .venv-lock/bin/pip freeze --exclude-editable) > $(LOCK).new
	mv $(LOCK).new $(LOCK)
	rm -rf .venv-lock

clean:
	rm -rf $(VENV) $(NB_VENV) .venv-tf220-py312 .venv-tf220-py313 runs data/demo

# The manual (docs/, mkdocs.yml) as a site in site/; `make test` builds it too (tests/test_docs.py),
# with --strict, so a broken link fails. `.venv/bin/mkdocs serve` shows it while you write.
.PHONY: docs
docs: install
	$(BIN)/mkdocs build --strict

# arm64 kernels under QEMU (docs/arm64.md): Debian's qemu-user-static, an arm64 Python unpacked
# into .arm64/ and the arm64 wheels of requirements/arm64.txt. Idempotent; needs root for apt-get.
arm64-env: install
	scripts/arm64_env.sh

# The arm64 golden check and a small `evaluate --arm64` (tests/test_arm64.py), from scratch where
# QEMU was never installed. Kept out of `make test` for time; .ci/run calls it.
test-arm64: arm64-env
	SKINSCAN_TEST_ARM64=1 $(BIN)/python -m pytest tests/test_arm64.py -p no:cacheprovider
