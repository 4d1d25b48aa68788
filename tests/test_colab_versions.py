"""A lab runs with Colab's versions of the libraries the course calls (the machine's torch is fine).

The lock file pins newer releases than Colab ships (transformers 5.24 against Colab's 5.15, say), and an API renamed
in between breaks a student's session, not CI. So one lab's reference solution runs here, quick profile, with
Colab's transformers, accelerate, peft, datasets and ipywidgets (and what those need at Colab's versions: tokenizers,
huggingface_hub, ...) put in front of the environment's own through PYTHONPATH. The versions come from Colab's
published package list, constraints/colab-gpu-2026-08-19.txt (see tests/test_colab_install.py).

Lab 05 is the one: it loads the model, trains with fit() (activation checkpointing included: transformers renamed
that method after 5.17), measures memory through autograd's hooks and builds the ipywidgets calculator (Colab has
ipywidgets 7). About a minute.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COLAB_FREEZE = ROOT / "constraints" / "colab-gpu-2026-08-19.txt"
LAB = ROOT / "solutions" / "05_memory_accounting.ipynb"
CALLED = ["transformers", "accelerate", "peft", "datasets", "ipywidgets"]
# What the five require at Colab's versions where this environment's release is outside their bounds
# (transformers 5.15: huggingface_hub < 2, tokenizers <= 0.23.0; datasets 4.0: fsspec, dill, multiprocess;
# ipywidgets 7.7: widgetsnbextension 3.6, ipython_genutils).
REQUIRED = ["tokenizers", "huggingface_hub", "hf_xet", "fsspec", "dill", "multiprocess", "widgetsnbextension",
            "ipython_genutils", "jupyterlab_widgets"]


def normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def colab_versions() -> dict[str, str]:
    pins = {}
    for line in COLAB_FREEZE.read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==", 1)
            pins[normal(name)] = version.strip()
    return pins


@pytest.fixture(scope="module")
def overlay(tmp_path_factory) -> Path:
    """Colab's releases of CALLED + REQUIRED, installed without dependencies into a folder for PYTHONPATH."""
    pins = colab_versions()
    missing = [n for n in CALLED + REQUIRED if normal(n) not in pins]
    assert not missing, f"{COLAB_FREEZE.name} lists no version of {missing}"
    target = tmp_path_factory.mktemp("colab-site")
    specs = [f"{n}=={pins[normal(n)]}" for n in CALLED + REQUIRED]
    done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--only-binary=:all:",
                           "--target", str(target), *specs], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.fail(f"could not install Colab's versions ({' '.join(specs)}) from this machine's package index: "
                    f"{done.stderr.strip()[-800:]}\nFix: make them reachable to pip (an index or --find-links "
                    f"folder holding these wheels), as `make setup` needs for requirements.lock.")
    return target


def overlay_env(overlay: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(overlay), str(ROOT)]), "HF_HUB_OFFLINE": "1"}


def test_the_overlay_puts_colabs_versions_first(overlay):
    code = ("import importlib.metadata as m, json; "
            f"print(json.dumps({{n: m.version(n) for n in {CALLED + REQUIRED!r}}}))")
    seen = json.loads(subprocess.run([sys.executable, "-c", code], env=overlay_env(overlay), check=True,
                                     capture_output=True, text=True).stdout)
    pins = colab_versions()
    assert {normal(n): v for n, v in seen.items()} == {normal(n): pins[normal(n)] for n in CALLED + REQUIRED}


def test_lab_05_runs_with_colabs_versions(overlay, tmp_path):
    results = tmp_path / "outcomes.jsonl"
    env = {**overlay_env(overlay), "ANLP_FT_RESULTS": str(results), "ANLP_FT_NOTEBOOK": "solutions/05",
           "ANLP_FT_PROFILE": "quick"}
    out = tmp_path / LAB.name
    done = subprocess.run([sys.executable, "-m", "papermill", str(LAB), str(out), "-p", "PROFILE", "quick",
                           "--cwd", str(LAB.parent), "--kernel", "python3", "--no-progress-bar"],
                          env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"lab 05 failed with Colab's versions:\n{done.stderr[-3000:]}"
    versions = subprocess.run([sys.executable, "-c", "import transformers; print(transformers.__version__)"],
                              env=env, capture_output=True, text=True).stdout.strip()
    assert versions == colab_versions()["transformers"]
    recorded = [json.loads(line) for line in results.read_text().splitlines()]
    assert recorded and recorded[-1]["outcomes"]["activation formula exact (all sizes)"] is True
