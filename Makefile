# The two commands a newcomer needs: `make demo` and `make test`. Everything else is a step of them.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
# The live map's bundle (see `web`) and what it is built from.
WEB_BUNDLE := smartcity_api/map/index.html
WEB_SOURCES := $(wildcard web/*.json web/*.html web/*.ts web/src/*)

.PHONY: demo test lint format unit web jvm minio prometheus chromium postgresql mosquitto bench docs-images clean

# The map's bundle comes first: the package serves it (order-only, so that a change of the page
# does not reinstall the package).
$(INSTALLED): pyproject.toml constraints.txt | $(WEB_BUNDLE)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -U pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[test]'
	touch $@

# The operator's live city map (docs/map.md): `web/` bundled by Vite into the package, which
# serves it at /map. Rebuilt when a file of `web/` changes; npm's user-level cache makes the
# `npm ci` of a second build fast.
web: $(WEB_BUNDLE)

$(WEB_BUNDLE): $(WEB_SOURCES)
	cd web && npm ci --no-audit --no-fund && npm run build

jvm: $(INSTALLED)
	$(BIN)/smartcity services install --kafka --spark

minio: $(INSTALLED)
	$(BIN)/smartcity services install --s3

# Prometheus's server and promtool (Debian's package) for the deployment tests; installed
# only when missing, as root. Debian's scripts may try to start the service: the tests never
# use it (they run their own server on a free loopback port), and it is stopped if it runs.
prometheus:
	@command -v promtool >/dev/null && command -v prometheus >/dev/null || { \
	  test "$$(id -u)" = 0 || { echo "make prometheus: run as root, or apt-get install prometheus"; exit 1; }; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus; \
	  (systemctl disable --now prometheus || service prometheus stop) >/dev/null 2>&1 || true; }

# Debian's Chromium, driven by Playwright for the Dagster UI screenshot test (Playwright's own
# browser download is not used).
chromium:
	@command -v chromium >/dev/null || { \
	  test "$$(id -u)" = 0 || { echo "make chromium: run as root, or apt-get install chromium"; exit 1; }; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; }

# PostgreSQL from Debian for the deployment's Dagster instance test (the test runs its own
# server in a temporary folder; the package's service is never used).
postgresql:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
	  test "$$(id -u)" = 0 || { echo "make postgresql: run as root, or apt-get install postgresql"; exit 1; }; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql; \
	  (systemctl disable --now postgresql || service postgresql stop) >/dev/null 2>&1 || true; }

# Eclipse Mosquitto from Debian for the MQTT bridge's tests and `services up --mqtt` (the
# fixtures and the command run their own broker on a loopback port; the package's service is
# never used).
mosquitto:
	@command -v mosquitto >/dev/null 2>&1 || test -x /usr/sbin/mosquitto || { \
	  test "$$(id -u)" = 0 || { echo "make mosquitto: run as root, or apt-get install mosquitto mosquitto-clients"; exit 1; }; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends mosquitto mosquitto-clients; \
	  (systemctl disable --now mosquitto || service mosquitto stop) >/dev/null 2>&1 || true; }

demo: jvm web
	$(BIN)/smartcity demo

lint: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

format: $(INSTALLED)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

unit: $(INSTALLED)
	$(BIN)/pytest -m "not integration"

test: lint web jvm minio prometheus chromium postgresql mosquitto
	$(BIN)/pytest

# The README's pictures of the Dagster asset graph and the live city map, taken by their
# tests, which otherwise write their screenshots into a temporary folder.
docs-images: web jvm minio chromium
	SMARTCITY_REFRESH_DOCS_IMAGES=1 $(BIN)/pytest tests/test_dagster_webserver.py tests/test_map_browser.py

# vegeta, the API bench's load generator (open-loop pacing), built once into Go's bin folder.
VEGETA := $(shell go env GOPATH 2>/dev/null)/bin/vegeta
$(VEGETA):
	go install github.com/tsenart/vegeta/v12@v12.13.0

bench: jvm minio $(VEGETA)
	$(BIN)/python -m bench

clean:
	-$(BIN)/smartcity services down
	rm -rf .runtime lake
