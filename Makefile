# The README's two set-up commands: `make demo` and `make test`. Both build .venv when missing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
DEMO_DATA := data/demo
DEMO_RUN  := runs/demo
DEMO_SIZE ?= 80
DEMO_PER_CLASS ?= 80
DEMO_EPOCHS ?= 14

.PHONY: install demo test clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

# Re-running `make demo` keeps runs/demo: the pipeline skips the stages that are finished and
# valid. `make clean` starts over.
demo: install
	rm -rf $(DEMO_DATA)
	$(BIN)/skinscan-edge demo-data $(DEMO_DATA) --per-class $(DEMO_PER_CLASS)
	@# No ImageNet download on the build machines: the demo trains the whole base from scratch.
	@# Exit 1 means the evaluate gate flagged an export: a finding of the demo, shown in the report.
	$(BIN)/skinscan-edge pipeline --data $(DEMO_DATA) --out $(DEMO_RUN) --weights none --img-size $(DEMO_SIZE) \
	    --epochs 0 --fine-tune-epochs $(DEMO_EPOCHS) --unfreeze-from input --fine-tune-lr 1e-3 --batch-size 16 \
	    --android --critical-class Melanoma --bench-threads 2 --bench-batch 1,8 --bench-min-time 0.5; \
	    rc=$$?; [ $$rc -le 1 ] || exit $$rc
	@echo "demo finished (SYNTHETIC data, not medical): open $(DEMO_RUN)/reports/index.html"

test: install
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) runs data/demo
