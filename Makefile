# The README's two set-up commands: `make demo` and `make test`. Both build .venv when missing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
DEMO_DATA := data/demo
DEMO_RUN  := runs/demo
DEMO_SIZE ?= 96

.PHONY: install demo test clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/skinscan-edge demo-data $(DEMO_DATA)
	$(BIN)/skinscan-edge train --data $(DEMO_DATA) --out $(DEMO_RUN) --weights none \
	    --img-size $(DEMO_SIZE) --epochs 3 --fine-tune-epochs 6 --unfreeze-from input --batch-size 32
	@echo "demo finished: see $(DEMO_RUN)/ (synthetic data, not medical)"

test: install
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) runs data/demo
