# The README's two set-up commands: `make demo` and `make test`. Both build .venv when missing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
DEMO_DATA := data/demo
DEMO_RUN  := runs/demo
DEMO_SIZE ?= 80
DEMO_PER_CLASS ?= 80
DEMO_EPOCHS ?= 16

.PHONY: install demo test clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

demo: install
	rm -rf $(DEMO_DATA) $(DEMO_RUN)
	$(BIN)/skinscan-edge demo-data $(DEMO_DATA) --per-class $(DEMO_PER_CLASS)
	@# No ImageNet download on the build machines: the demo trains the whole base from scratch.
	$(BIN)/skinscan-edge train --data $(DEMO_DATA) --out $(DEMO_RUN) --weights none --img-size $(DEMO_SIZE) \
	    --epochs 0 --fine-tune-epochs $(DEMO_EPOCHS) --unfreeze-from input --fine-tune-lr 1e-3 --batch-size 16
	$(BIN)/skinscan-edge export $(DEMO_RUN) --fp16 --dynamic --int8 --qat --android
	@# A failed gate is a finding of the demo, not a crash: the verdict is printed and in evaluate.md.
	$(BIN)/skinscan-edge evaluate $(DEMO_RUN) --critical-class Melanoma; rc=$$?; [ $$rc -le 1 ] || exit $$rc
	$(BIN)/skinscan-edge benchmark $(DEMO_RUN) --threads 2 --batch 1,8 --min-time 1
	@echo "demo finished: $(DEMO_RUN)/reports/{evaluate,benchmark}.md and android_assets/ (SYNTHETIC data, not medical)"

test: install
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) runs data/demo
