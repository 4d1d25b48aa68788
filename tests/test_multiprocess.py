"""`anlp-ft train recipe.yaml` runs unchanged under `accelerate launch`: 2 gloo processes on CPU x micro-batch 4
give the same losses as 1 process x micro-batch 8 (same global batch, same examples per step)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from transformers import LlamaForCausalLM

from anlp_ft.cli import main
from tests.conftest import tiny_config

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def recipe(tmp_path_factory, tokenizer):
    """Full fine-tuning of the tiny model on arithmetic written by `anlp-ft data arithmetic`, 4 steps, fp32."""
    root = tmp_path_factory.mktemp("mp")
    torch.manual_seed(0)
    LlamaForCausalLM(tiny_config()).save_pretrained(root / "tiny")
    tokenizer.save_pretrained(root / "tiny")
    assert main(["data", "arithmetic", "--out", str(root / "data"), "--train", "32", "--test", "8"]) == 0
    raw = {"base_model": str(root / "tiny"),
           "datasets": [{"path": str(root / "data" / "train.jsonl"), "type": "alpaca"}],
           "sequence_len": 128, "micro_batch_size": 8, "max_steps": 4, "learning_rate": "1e-3", "warmup_steps": 1,
           "bf16": False, "output_dir": str(root / "unused")}
    (root / "recipe.yaml").write_text(yaml.safe_dump(raw))
    return root / "recipe.yaml"


def _train(launcher: list[str], recipe: Path, out: Path, micro_batch_size: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = launcher + [str(recipe), "--output-dir", str(out), "--micro-batch-size", str(micro_batch_size)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return json.loads((out / "history.json").read_text())


def test_two_processes_train_like_one(recipe, tmp_path):
    one = _train([str(BIN / "anlp-ft"), "train"], recipe, tmp_path / "one", micro_batch_size=8)
    launch = [str(BIN / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
              "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29517",
              "-m", "anlp_ft.cli", "train"]
    two = _train(launch, recipe, tmp_path / "two", micro_batch_size=4)
    assert one["num_processes"] == 1 and two["num_processes"] == 2
    assert one["global_batch"] == two["global_batch"] == 8
    assert two["loss"] == pytest.approx(one["loss"], rel=1e-5)
    assert one["loss"][-1] < one["loss"][0]
