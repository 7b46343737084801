# Every target sets up .venv first (pinned requirements.txt), so each one
# works on a fresh clone. `make test` is what CI runs.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SHARED ?= ../shared/data/300w
MODEL ?= resnet
EPOCHS ?= 200

.PHONY: test data train evaluate reproduce

$(VENV)/.installed: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

test: $(VENV)/.installed
	$(PY) -m pytest -q tests

# 300-W faces from ../shared: a fixed, seeded 10% of HELEN+AFW is validation.
data: $(VENV)/.installed
	$(PY) generate_mesh_dataset.py --dataset 300w \
	    --train_dirs $(SHARED)/helen_trainset $(SHARED)/afw \
	    --val_fraction 0.1 --seed 0 --out_dir tfrecords

train: $(VENV)/.installed
	$(PY) landmark.py --model $(MODEL) --epochs $(EPOCHS) --batch_size 32 \
	    --train_record tfrecords/train.record --val_record tfrecords/test.record

evaluate: $(VENV)/.installed
	$(PY) landmark.py --eval_only --val_record tfrecords/test.record \
	    --metrics_out results/val_metrics.json

reproduce: data train evaluate
