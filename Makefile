# The two set-up commands the README shows; each does all set-up on a fresh machine.
#   make demo   record the bundled teacher / student pair on held-out shapes scenes, write the
#               misalignment report, and open the dashboard on it
#   make test   run the test suite
VENV ?= .venv
PY := $(VENV)/bin/python
CDVIZ := $(VENV)/bin/cdviz
PORT ?= 8501
# The dashboard listens on this address only; ADDRESS=0.0.0.0 serves other machines too.
ADDRESS ?= localhost

.PHONY: setup demo demo-data test zoo clean-demo

setup: $(VENV)/.installed

# torch==2.13.0 takes the local CPU wheel here; on a GPU machine the same pin gets the CUDA build.
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

# The held-out set is the zoo's (test-split scenes of the training seed, see checkpoints/README.md).
demo-data: setup
	$(CDVIZ) probes make shapes --n 600 --seed 0 --split test --image-size 48 --out demo/probes
	$(CDVIZ) record --teacher checkpoints/teacher --student checkpoints/student-kd \
		--probes demo/probes --out runs/demo --queries prompt --protocol match
	$(CDVIZ) record --teacher checkpoints/teacher --student checkpoints/student-compodistill \
		--probes demo/probes --out runs/demo-compodistill --queries prompt --protocol match
	$(CDVIZ) report runs/demo
	$(CDVIZ) report runs/demo-compodistill
	$(CDVIZ) compare runs/demo runs/demo-compodistill

demo: demo-data
	$(VENV)/bin/streamlit run app/main.py --server.port $(PORT) --server.address $(ADDRESS) -- --runs-root runs --run demo

test: setup
	$(PY) -m pytest -q

zoo: setup
	$(CDVIZ) zoo build --out checkpoints

clean-demo:
	rm -rf demo runs/demo

# One CUDA GPU: real-size models from typed-in configs in bf16, results.json/.md into $OUT or gpu-check/ (cdviz/bench/gpu_check.py).
.PHONY: gpu-check
gpu-check: setup
	$(PY) -m cdviz.bench.gpu_check
