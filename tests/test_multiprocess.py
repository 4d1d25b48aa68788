"""`anlp-ft train` runs unchanged under `accelerate launch`: 2 gloo processes on CPU x batch 4 give the same
losses as 1 process x batch 8 (same global batch, same examples per step)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import LlamaForCausalLM

from tests.conftest import tiny_config

BIN = Path(sys.executable).parent
ARGS = ["--examples", "32", "--steps", "4", "--lr", "1e-3", "--lora-r", "0", "--mixed-precision", "no"]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory, tokenizer):
    path = tmp_path_factory.mktemp("tiny")
    torch.manual_seed(0)
    LlamaForCausalLM(tiny_config()).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def _train(launcher: list[str], tiny_dir: Path, out: Path, batch_size: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = launcher + ["--model", str(tiny_dir), "--batch-size", str(batch_size), "--out", str(out), *ARGS]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return json.loads((out / "history.json").read_text())


def test_two_processes_train_like_one(tiny_dir, tmp_path):
    one = _train([str(BIN / "anlp-ft"), "train"], tiny_dir, tmp_path / "one", batch_size=8)
    launch = [str(BIN / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
              "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29517",
              "-m", "anlp_ft.cli", "train"]
    two = _train(launch, tiny_dir, tmp_path / "two", batch_size=4)
    assert one["num_processes"] == 1 and two["num_processes"] == 2
    assert two["loss"] == pytest.approx(one["loss"], rel=1e-5)
    assert one["loss"][-1] < one["loss"][0]
