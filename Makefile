# dreamzero-ros: two commands do all set-up on a fresh machine (README.md).
#   make demo   one closed-loop task episode of the simulated robot, driven by the trained tiny model
#   make test   the test suite (CI runs exactly this through .ci/run)
# Both create or reuse the virtual environment .venv. Every set-up step leaves a stamp file in
# .venv/.stamps and is skipped while the stamp is newer than its inputs, so a second run is fast.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3.11
VENV ?= .venv
VENV_ABS := $(abspath $(VENV))
BIN := $(VENV_ABS)/bin
STAMPS := $(VENV)/.stamps
# The machine's pip config names two local indexes that lack some projects; pip warns once per
# project ("Location ... is ignored"). Filter that noise, keep everything else and pip's exit status.
PIP := pip_quiet() { $(BIN)/python -m pip --disable-pip-version-check --quiet "$$@" 2>&1 \
	| { grep -v "^WARNING: Location 'file:///opt/" || true; }; }; pip_quiet
PYTEST_ARGS ?=
# Two pytest-xdist worker processes, each test file whole in one worker (its module fixtures built once):
# about 8 instead of 13 minutes on the 2-core CI machine. Each worker holds its own ROS_DOMAIN_ID
# (tests/conftest.py). PYTEST_WORKERS= runs everything in one process, in file order.
PYTEST_WORKERS ?= -n 2 --dist loadfile

# Everything that goes into the installed project: a change to any of it reinstalls the project.
PROJECT_INPUTS := setup.py setup.cfg package.xml resource/dreamzero_policy \
	$(shell find dreamzero_policy model embodiments launch urdf checkpoints -type f \
	        -not -path '*/__pycache__/*' -not -name '*.pyc' 2>/dev/null)
MSG_INPUTS := $(shell find dreamzero_msgs -type f 2>/dev/null)

# Test and run environment (environment.md G2, G6, G11): ament index in the venv, discovery kept on
# loopback. conftest.py adds a per-run ROS_DOMAIN_ID and a temporary ROS_LOG_DIR.
RUN_ENV := AMENT_PREFIX_PATH=$(VENV_ABS) ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST PATH=$(BIN):$$PATH

.PHONY: help setup demo test clean distclean

help:
	@echo "make demo    one closed-loop task episode of the simulated robot (trained tiny model; runs/demo-*)"
	@echo "make test    run the test suite"
	@echo "make setup   only create/refresh .venv (both targets above do it themselves)"
	@echo "make clean   remove build leftovers;  make distclean  also remove .venv"

setup: $(STAMPS)/project

$(STAMPS)/venv:
	$(PYTHON) -m venv $(VENV)
	mkdir -p $(STAMPS)
	touch $@

# torch first and alone, so nothing later resolves a CUDA build (environment.md G17).
$(STAMPS)/torch: requirements/torch.txt $(STAMPS)/venv
	$(PIP) install -r requirements/torch.txt
	touch $@

$(STAMPS)/deps: requirements/ros.txt requirements/ros-build.txt requirements/app.txt requirements/robot.txt \
		requirements/no-deps.txt $(STAMPS)/torch
	$(PIP) install -r requirements/torch.txt -r requirements/ros.txt \
		-r requirements/ros-build.txt -r requirements/app.txt
	$(PIP) install --no-deps -r requirements/no-deps.txt
	scripts/fix_ros_wheel_cmake_paths.sh $(VENV)
	touch $@

$(STAMPS)/msgs: $(MSG_INPUTS) scripts/build_msgs.sh $(STAMPS)/deps
	scripts/build_msgs.sh $(VENV)
	touch $@

# A regular (non-editable) install: pip -e would skip data_files, and with them the ament index
# entry, package.xml, launch/, urdf/ and the embodiment YAMLs under share/dreamzero_policy.
$(STAMPS)/project: $(PROJECT_INPUTS) $(STAMPS)/msgs
	rm -rf build dreamzero_policy.egg-info
	$(PIP) install --no-deps --no-build-isolation .
	rm -rf build dreamzero_policy.egg-info
	touch $@

demo: setup
	$(RUN_ENV) $(BIN)/dreamzero demo

test: setup
	$(RUN_ENV) $(BIN)/pytest $(PYTEST_WORKERS) $(PYTEST_ARGS)

clean:
	rm -rf build dreamzero_policy.egg-info .pytest_cache
	find . -name __pycache__ -type d -not -path './$(VENV)/*' -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
