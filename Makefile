# The two set-up commands the README shows; each does all set-up on a fresh machine.
#   make demo   record the bundled teacher / student pair on held-out shapes scenes, write the
#               misalignment report, and open the dashboard on it
#   make test   run the test suite
VENV ?= .venv
PY := $(VENV)/bin/python
CDVIZ := $(VENV)/bin/cdviz
DEMO_STUDENT ?= student-kd
PORT ?= 8501

.PHONY: setup demo demo-data test zoo clean-demo

setup: $(VENV)/.installed

# torch==2.13.0 takes the local CPU wheel here; on a GPU machine the same pin gets the CUDA build.
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

demo-data: setup
	$(CDVIZ) probes make shapes --n 600 --seed 1 --split test --image-size 64 --out demo/probes
	$(CDVIZ) record --teacher checkpoints/teacher --student checkpoints/$(DEMO_STUDENT) \
		--probes demo/probes --out runs/demo --queries prompt
	$(CDVIZ) report runs/demo

demo: demo-data
	$(VENV)/bin/streamlit run app/main.py --server.port $(PORT) -- --runs-root runs --run demo

test: setup
	$(PY) -m pytest -q

zoo: setup
	$(CDVIZ) zoo build --out checkpoints

clean-demo:
	rm -rf demo runs/demo
