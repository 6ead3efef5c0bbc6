# The two commands of the README, for a fresh Debian machine:
#   make demo   install what is missing, start the local stack, run scenarios/quickstart.yaml through
#               MQTT and the bridge into InfluxDB, and verify that every message was stored
#   make test   the full test suite against real Mosquitto and InfluxDB (what CI runs)

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STATE := .iotsim
SCENARIO ?= scenarios/quickstart.yaml
APT_PACKAGES := mosquitto mosquitto-clients influxdb docker-compose python3-venv

.PHONY: demo test system-packages venv stack-up stack-down bench kubernetes-files clean

demo: system-packages venv
	$(BIN)/iotsim stack up --state-dir $(STATE)
	@rm -f $(STATE)/bridge.ready
	@# The bridge subscribes first (its session then keeps every message), the run publishes, and
	@# the bridge exits once nothing has arrived for 5 s and everything is written.
	$(BIN)/iotsim bridge --exit-when-idle 5 --ready-file $(STATE)/bridge.ready --dead-letters $(STATE)/dead-letters.jsonl & \
	bridge=$$!; \
	for i in $$(seq 1 100); do [ -f $(STATE)/bridge.ready ] && break; kill -0 $$bridge 2>/dev/null || break; sleep 0.1; done; \
	$(BIN)/iotsim run $(SCENARIO); run=$$?; \
	wait $$bridge; bridged=$$?; \
	[ $$run -eq 0 ] && [ $$bridged -eq 0 ]
	@echo "Data: InfluxDB database 'yangquan' at http://127.0.0.1:8086 (files in $(STATE)/influxdb),"
	@echo "      broker mqtt://127.0.0.1:1883, logs and PID files in $(STATE)/. Stop with: $(BIN)/iotsim stack down"
	@echo "Try:  curl -sG http://127.0.0.1:8086/query --data-urlencode db=yangquan --data-urlencode \"q=SELECT mean(pm25) FROM air_quality GROUP BY district\""
	@# Last: every message the scenario generated, read back from InfluxDB per device (exit 1 if any is
	@# missing or extra); ends with "verified: N of N stored".
	$(BIN)/iotsim verify $(SCENARIO) --json $(STATE)/verify.json

# The tests mostly wait (servers starting, bridges idling): 3 workers keep 2 cores busy. A file stays
# on one worker (its module fixtures, e.g. a secured InfluxDB or compiled wheels, start once).
TEST_WORKERS ?= 3

test: system-packages venv
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile

# Debian packages for the servers; installed when running as root, otherwise the command is shown.
system-packages:
	@missing=""; \
	for tool in mosquitto:mosquitto mosquitto_pub:mosquitto-clients influxd:influxdb docker-compose:docker-compose; do \
		command -v $${tool%%:*} >/dev/null 2>&1 || [ -x /usr/sbin/$${tool%%:*} ] || missing="$$missing $${tool##*:}"; \
	done; \
	$(PYTHON) -c "import ensurepip, venv" 2>/dev/null || missing="$$missing python3-venv"; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" -eq 0 ]; then \
			DEBIAN_FRONTEND=noninteractive apt-get update -q && \
			DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
		else \
			echo "missing Debian packages:$$missing; run: sudo apt-get install$$missing" >&2; exit 1; \
		fi; \
	fi

venv: $(BIN)/iotsim

$(BIN)/iotsim: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	@touch $@

stack-up: venv
	$(BIN)/iotsim stack up --state-dir $(STATE)

stack-down: venv
	$(BIN)/iotsim stack down --state-dir $(STATE)

bench: system-packages venv
	$(BIN)/python benchmarks/pipeline.py

# The copies of brokers/ and dashboards/ files deploy/kubernetes/base generates its ConfigMaps from
# (kustomize reads nothing outside that folder); tests/test_kubernetes.py fails while they differ.
kubernetes-files:
	sh deploy/kubernetes/sync-files.sh

clean: stack-down
	rm -rf $(STATE)
