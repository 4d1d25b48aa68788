"""Predicted vs measured training memory: anlp_ft.memory's prediction of a training step's peak against the
most bytes allocated at once while fit() trains (torch.cuda.max_memory_allocated on a GPU; on CPU the
allocation events torch.profiler records), with what `accelerate estimate-memory` counts beside it.

    python benchmarks/memory_check.py                       # GPU: SmolLM2-135M and -1.7B shapes, full / LoRA / QLoRA
    python benchmarks/memory_check.py --shapes 135M --batch 2 --seq 64     # CPU: small enough to run in minutes

Random weights of each shape (memory depends on the shape, not the values), batch 8 x 512 by default, the
runtime's precision (bf16 from compute capability 8.0, fp16 below; fp32 on CPU). Prints one JSON line per row
and the ratio measured / predicted; with --out, writes the rows as JSON. QLoRA needs bitsandbytes.
"""
from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from anlp_ft.memory import GB, MODELS, TrainSetup, accelerate_estimate, memory_breakdown, total_bytes  # noqa: E402
from anlp_ft.memory_measure import measured_state_bytes, peak_bytes_during  # noqa: E402
from anlp_ft.models import quantization_config  # noqa: E402
from anlp_ft.runtime import pick_device  # noqa: E402
from anlp_ft.train import TrainConfig, fit  # noqa: E402

STEPS = 3  # Adam's moments exist from the first step on; the peak is reached by the second


def llama_config(name: str) -> LlamaConfig:
    s = MODELS[name]
    return LlamaConfig(vocab_size=s.vocab, hidden_size=s.hidden, intermediate_size=s.intermediate,
                       num_hidden_layers=s.layers, num_attention_heads=s.heads, num_key_value_heads=s.kv_heads,
                       tie_word_embeddings=s.tied, max_position_embeddings=2048, pad_token_id=2, eos_token_id=2)


def build(name: str, method: str, folder: Path, device: torch.device) -> torch.nn.Module:
    torch.manual_seed(0)
    if method == "qlora":
        LlamaForCausalLM(llama_config(name)).save_pretrained(folder)
        model = AutoModelForCausalLM.from_pretrained(folder, quantization_config=quantization_config("nf4", device),
                                                     device_map={"": 0 if device.type == "cuda" else "cpu"})
    else:
        model = LlamaForCausalLM(llama_config(name)).to(device)
    if method != "full":
        model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear",
                                                 task_type="CAUSAL_LM"))
    return model


def measure(name: str, method: str, batch: int, seq: int, device: torch.device) -> dict:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    with tempfile.TemporaryDirectory() as tmp:
        model = build(name, method, Path(tmp), device)
        g = torch.Generator().manual_seed(0)
        ids = torch.randint(3, MODELS[name].vocab, (batch * STEPS, seq), generator=g).tolist()
        data = [{"input_ids": x, "labels": x} for x in ids]
        weights = measured_state_bytes(model)
        history = None

        def train():
            nonlocal history
            history = fit(model, data, TrainConfig(steps=STEPS, batch_size=batch, lr=1e-4, progress=False))

        measured = weights["parameters"] + weights["buffers"] + peak_bytes_during(train, device)
        n_params = sum(p.numel() for p in model.parameters())
    precision = "fp32" if history.precision == "no" else "mixed"
    predicted = memory_breakdown(MODELS[name], TrainSetup(method=method, precision=precision, batch=batch, seq=seq))
    accel = accelerate_estimate(n_params, 4 if precision == "fp32" else 2) if method == "full" else None
    return {"model": name, "method": method, "batch": batch, "seq": seq, "precision": history.precision,
            "predicted_gib": round(total_bytes(predicted) / 2**30, 3), "measured_gib": round(measured / 2**30, 3),
            "measured_over_predicted": round(measured / total_bytes(predicted), 3),
            "predicted_parts_gb": {k: round(v / GB, 3) for k, v in predicted.items()},
            "accelerate_estimate_gib": None if accel is None else round(accel["total"] / 2**30, 3)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", nargs="*", default=["135M", "1.7B"], choices=list(MODELS))
    parser.add_argument("--methods", nargs="*", default=["full", "lora", "qlora"])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--out", help="write the rows to this JSON file")
    args = parser.parse_args()
    device = pick_device()
    card = torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu"
    print(json.dumps({"device": card, "torch": torch.__version__}))
    rows = []
    for name in args.shapes:
        for method in args.methods:
            try:
                row = measure(name, method, args.batch, args.seq, device)
            except Exception as e:  # one failing row (e.g. no bitsandbytes) must not hide the others
                row = {"model": name, "method": method, "error": repr(e)[:300]}
            rows.append(row)
            print(json.dumps(row), flush=True)
    ok = [r for r in rows if "error" not in r]
    within = sum(abs(r["measured_over_predicted"] - 1) <= 0.10 for r in ok)
    print(f"{within} of {len(ok)} rows within 10% of the prediction")
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
