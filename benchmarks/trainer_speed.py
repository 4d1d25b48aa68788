"""Tokens/s of the course's fit() against transformers' Trainer (the named baseline), same process, same
model, data and batch. SmolLM2-135M's shape with random weights: speed depends on the shape, not the values.

    python benchmarks/trainer_speed.py                 # GPU: batch 8 x 512, 20 steps; CPU: 4 x 64, 6 steps
    python benchmarks/trainer_speed.py --layers 4      # a shallower model for a quick CPU look
    python benchmarks/trainer_speed.py --compile --batches 16 32   # also fit() compiled, and larger batches

Prints one JSON line per run (tokens/s, peak GPU memory, MFU where the card's peak is known, loss at the first
and last step) and the ratios fit/Trainer; the first 2 steps of each run are warm-up and not timed. Trainer
and fit() see the same examples in different orders, so their loss curves agree within noise, not exactly.
"""
from __future__ import annotations

import argparse
import json
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM, Trainer, TrainerCallback, TrainingArguments

from anlp_ft.memory import ModelShape
from anlp_ft.runtime import compute_dtype, mixed_precision, pick_device
from anlp_ft.train import TrainConfig, fit

SMOLLM2_135M = dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                    num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=2048,
                    tie_word_embeddings=True, rope_theta=100000.0, pad_token_id=2, eos_token_id=2)
WARMUP = 2
# Dense 16-bit tensor-core peak FLOP/s by card name (data sheets), for MFU; T4 and V100 have no bf16 (fp16 peak).
PEAK_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40": 181e12, "A10": 125e12, "L4": 121e12,
              "V100": 125e12, "T4": 65e12}


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


def n_params(layers: int) -> int:
    """From the shape (anlp_ft.memory), without building a model."""
    return ModelShape.from_config(LlamaConfig(**{**SMOLLM2_135M, "num_hidden_layers": layers})).n_params


def mfu(tok_per_s: float, params: int, layers: int, seq: int) -> float | None:
    """Model FLOPs utilisation: (6 N + 12 L h s) FLOPs per trained token (PaLM, appendix B) over the card's peak."""
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name(0)
    peak_flops = next((v for k, v in PEAK_FLOPS.items() if k in name), None)
    if peak_flops is None:
        return None
    flops_per_token = 6 * params + 12 * layers * SMOLLM2_135M["hidden_size"] * seq
    return round(tok_per_s * flops_per_token / peak_flops, 3)


def run_fit(args, data, batch: int, compile: bool) -> dict:
    model = make_model(args.layers)
    cfg = dict(batch_size=batch, lr=1e-4, schedule="constant", progress=False, compile=compile)
    fit(model, data[: batch * WARMUP], TrainConfig(steps=WARMUP, **cfg))  # warm-up (and compilation), not timed
    peak()
    h = fit(model, data, TrainConfig(steps=args.steps, **cfg))
    step_s = h.seconds / args.steps
    tok_per_s = batch * args.seq / step_s
    return {"trainer": "anlp_ft.fit" + (" (compiled)" if compile else ""), "batch": batch, "step_s": round(step_s, 4),
            "tok_per_s": round(tok_per_s, 1), "peak_gib": peak(), "precision": h.precision,
            "mfu": mfu(tok_per_s, args.params, args.layers, args.seq),
            "loss_first": round(h.loss[0], 4), "loss_last": round(h.loss[-1], 4)}


class StepTimer(TrainerCallback):
    def __init__(self):
        self.times: list[float] = []
        self.losses: list[float] = []

    def on_log(self, args, state, control, logs=None, **k):
        if logs and "loss" in logs:
            self.losses.append(logs["loss"])

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
                              bf16=precision == "bf16", fp16=precision == "fp16", logging_steps=1,
                              save_strategy="no", report_to=[], disable_tqdm=True, dataloader_num_workers=0,
                              use_cpu=pick_device().type == "cpu")
    timer = StepTimer()
    trainer = Trainer(model=model, args=targs, train_dataset=data, callbacks=[timer])
    peak()
    trainer.train()
    step_s = median(timer.times[WARMUP:])
    tok_per_s = args.batch * args.seq / step_s
    return {"trainer": "transformers.Trainer", "batch": args.batch, "step_s": round(step_s, 4),
            "tok_per_s": round(tok_per_s, 1), "peak_gib": peak(), "precision": precision,
            "mfu": mfu(tok_per_s, args.params, args.layers, args.seq),
            "loss_first": round(timer.losses[WARMUP], 4), "loss_last": round(timer.losses[-1], 4)}


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
    parser.add_argument("--compile", action="store_true", help="also time fit() with torch.compile")
    parser.add_argument("--batches", type=int, nargs="*", default=[], help="extra batch sizes for fit() (MFU sweep)")
    args = parser.parse_args()
    args.params = n_params(args.layers)
    biggest = max([args.batch, *args.batches])
    data = make_data(biggest * (WARMUP + args.steps), args.seq)
    print(json.dumps({"device": torch.cuda.get_device_name(0) if gpu else "cpu", "torch": torch.__version__,
                      "batch": args.batch, "seq": args.seq, "layers": args.layers, "params": args.params,
                      "timed_steps": args.steps}))
    base = run_trainer(args, data[: args.batch * (WARMUP + args.steps)])
    print(json.dumps(base), flush=True)
    runs = [run_fit(args, data, args.batch, compile=False)]
    if args.compile:
        runs.append(run_fit(args, data, args.batch, compile=True))
    runs += [run_fit(args, data, b, compile=args.compile) for b in args.batches]
    for run in runs:
        print(json.dumps(run), flush=True)
    for run in runs:
        memory = (f", peak memory {run['peak_gib'] / base['peak_gib']:.2f}x" if run["peak_gib"] and base["peak_gib"]
                  else "")
        print(f"{run['trainer']} batch {run['batch']} / Trainer batch {base['batch']} tokens/s: "
              f"{run['tok_per_s'] / base['tok_per_s']:.2f}x{memory}")


if __name__ == "__main__":
    main()
