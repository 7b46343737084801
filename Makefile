# Every target sets up .venv first (pinned requirements.txt), so each one
# works on a fresh clone. `make test` is what CI runs.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SHARED ?= ../shared/data/300w
MODEL ?= resnet
EPOCHS ?= 200
QAT_EPOCHS ?= 30
LOSS_EPOCHS ?= 25
RECORDS := --train_record tfrecords/train.record --val_record tfrecords/test.record

.PHONY: test data train evaluate qat export benchmark loss-study readme reproduce

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
	$(PY) landmark.py --model $(MODEL) --epochs $(EPOCHS) --batch_size 32 $(RECORDS)

evaluate: $(VENV)/.installed
	$(PY) landmark.py --eval_only $(RECORDS) --metrics_out results/val_metrics.json

qat: $(VENV)/.installed
	$(PY) landmark.py --quantization --epochs $(QAT_EPOCHS) --batch_size 32 $(RECORDS) \
	    --metrics_out results/val_metrics_qat.json

export: $(VENV)/.installed
	$(PY) landmark.py --export_only
	$(PY) landmark.py --export_only --quantization

benchmark: $(VENV)/.installed
	$(PY) ptq_benchmark.py --float_model exported --qat_model exported_quantized \
	    --test_record tfrecords/test.record --rep_record tfrecords/train.record --out_dir results

# Short runs, one per loss, same schedule: which loss to train with.
loss-study: $(VENV)/.installed
	for loss in wing l1 mse; do \
	    $(PY) landmark.py --model $(MODEL) --loss $$loss --epochs $(LOSS_EPOCHS) $(RECORDS) \
	        --checkpoint_dir runs/loss_$$loss --metrics_out results/loss_$$loss.json || exit 1; \
	done

readme: $(VENV)/.installed
	$(PY) readme_results.py

reproduce: data train evaluate qat export benchmark readme
