# The two commands a newcomer needs: `make demo` and `make test`. Everything else is a step of them.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: demo test lint format unit jvm minio bench clean

$(INSTALLED): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -U pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[test]'
	touch $@

jvm: $(INSTALLED)
	$(BIN)/smartcity services install --kafka

minio: $(INSTALLED)
	$(BIN)/smartcity services install --s3

demo: jvm
	$(BIN)/smartcity services up --no-s3
	$(BIN)/smartcity topics create
	$(BIN)/smartcity services status

lint: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(INSTALLED)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

unit: $(INSTALLED)
	$(BIN)/pytest -m "not integration"

test: lint jvm minio
	$(BIN)/pytest

bench: jvm minio
	$(BIN)/python -m bench

clean:
	-$(BIN)/smartcity services down
	rm -rf .runtime lake
