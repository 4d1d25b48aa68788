"""Tokens/s of the course's fit() against transformers' Trainer (the named baseline), same process, same
model, data and batch. SmolLM2-135M's shape with random weights: speed depends on the shape, not the values.

    python benchmarks/trainer_speed.py                 # GPU: batch 8 x 512, 20 steps; CPU: 4 x 64, 6 steps
    python benchmarks/trainer_speed.py --layers 4      # a shallower model for a quick CPU look

Prints one line per trainer and the ratio fit/Trainer; the first 2 steps of each are warm-up and not timed.
"""
from __future__ import annotations

import argparse
import json
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM, Trainer, TrainerCallback, TrainingArguments

from anlp_ft.runtime import compute_dtype, mixed_precision, pick_device
from anlp_ft.train import TrainConfig, fit

SMOLLM2_135M = dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                    num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=2048,
                    tie_word_embeddings=True, rope_theta=100000.0, pad_token_id=2, eos_token_id=2)
WARMUP = 2


def make_model(layers: int) -> LlamaForCausalLM:
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(**{**SMOLLM2_135M, "num_hidden_layers": layers})).to(pick_device())


def make_data(n: int, seq: int) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, SMOLLM2_135M["vocab_size"], (n, seq), generator=g).tolist()
    return [{"input_ids": x, "labels": x} for x in ids]


def median(xs: list[float]) -> float:
    xs = sorted(xs)
    return xs[len(xs) // 2]


def run_fit(args, data) -> dict:
    model = make_model(args.layers)
    cfg = dict(batch_size=args.batch, lr=1e-4, schedule="constant", progress=False)
    fit(model, data[: args.batch * WARMUP], TrainConfig(steps=WARMUP, **cfg))  # warm-up, not timed
    h = fit(model, data, TrainConfig(steps=args.steps, **cfg))
    step_s = h.seconds / args.steps
    return {"trainer": "anlp_ft.fit", "step_s": round(step_s, 4), "tok_per_s": round(args.batch * args.seq / step_s, 1),
            "peak_gib": peak()}


class StepTimer(TrainerCallback):
    def __init__(self):
        self.times: list[float] = []

    def on_step_begin(self, *a, **k):
        sync()
        self.t = time.perf_counter()

    def on_step_end(self, *a, **k):
        sync()
        self.times.append(time.perf_counter() - self.t)


def run_trainer(args, data) -> dict:
    model = make_model(args.layers)
    precision = mixed_precision(compute_dtype(pick_device()))
    targs = TrainingArguments(output_dir="/tmp/anlp_ft_bench", per_device_train_batch_size=args.batch,
                              max_steps=WARMUP + args.steps, learning_rate=1e-4, lr_scheduler_type="constant",
                              bf16=precision == "bf16", fp16=precision == "fp16", logging_steps=10_000,
                              save_strategy="no", report_to=[], disable_tqdm=True, dataloader_num_workers=0,
                              use_cpu=pick_device().type == "cpu")
    timer = StepTimer()
    trainer = Trainer(model=model, args=targs, train_dataset=data, callbacks=[timer])
    trainer.train()
    step_s = median(timer.times[WARMUP:])
    return {"trainer": "transformers.Trainer", "step_s": round(step_s, 4),
            "tok_per_s": round(args.batch * args.seq / step_s, 1), "peak_gib": peak()}


def sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def peak() -> float | None:
    if not torch.cuda.is_available():
        return None
    value = torch.cuda.max_memory_allocated() / 2**30
    torch.cuda.reset_peak_memory_stats()
    return round(value, 3)


def main() -> None:
    gpu = torch.cuda.is_available()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=8 if gpu else 4)
    parser.add_argument("--seq", type=int, default=512 if gpu else 64)
    parser.add_argument("--steps", type=int, default=20 if gpu else 6)
    parser.add_argument("--layers", type=int, default=SMOLLM2_135M["num_hidden_layers"])
    args = parser.parse_args()
    data = make_data(args.batch * (WARMUP + args.steps), args.seq)
    print(json.dumps({"device": torch.cuda.get_device_name(0) if gpu else "cpu", "torch": torch.__version__,
                      "batch": args.batch, "seq": args.seq, "layers": args.layers, "timed_steps": args.steps}))
    base = run_trainer(args, data)
    print(json.dumps(base), flush=True)
    ours = run_fit(args, data)
    print(json.dumps(ours), flush=True)
    print(f"fit / Trainer tokens/s: {ours['tok_per_s'] / base['tok_per_s']:.2f}x")


if __name__ == "__main__":
    main()
