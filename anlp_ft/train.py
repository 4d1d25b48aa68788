"""The course's one training loop, on accelerate, in the shape of the lecture's run_clm_no_trainer excerpt:

    for batch in dataloader:
        with accelerator.accumulate(model):
            loss = model(**batch).loss
            accelerator.backward(loss)
            optimizer.step(); lr_scheduler.step(); optimizer.zero_grad()

Plain models, peft LoRA models and bitsandbytes 4-bit models train through it unchanged. Mixed precision is
written out here rather than left to accelerate: fp32 master weights, `torch.autocast` to the runtime's compute
dtype (bf16 on Ampere and newer, fp16 on a T4, fp32 on CPU) and a GradScaler for fp16, so the T4 branch can be
forced and tested on any machine. The loss of an optimizer step is the mean over all its response tokens, across
micro-batches and processes, so 2 processes x batch 4 train exactly as 1 process x batch 8.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Literal, Sequence

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import GradientAccumulationPlugin
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from .formatting import IGNORE_INDEX, Collator
from .models import set_activation_checkpointing
from .runtime import autocast_dtype, mixed_precision, pick_device, seed_everything


@dataclass
class TrainConfig:
    steps: int = 100  # optimizer steps
    batch_size: int = 8  # examples per micro-batch, per process
    grad_accum: int = 1  # micro-batches per optimizer step
    lr: float = 1e-4
    # AdamW's step barely depends on a constant factor in the loss; SGD's (momentum 0.9) scales with it.
    optimizer: Literal["adamw", "sgd"] = "adamw"
    weight_decay: float = 0.0
    warmup_steps: int = 0
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    max_grad_norm: float | None = 1.0
    seed: int = 0
    mixed_precision: Literal["auto", "no", "fp16", "bf16"] = "auto"
    gradient_checkpointing: bool = False
    eval_every: int | None = None  # also evaluates after the last step when eval_fn is given
    checkpoint_dir: str | None = None
    save_every: int | None = None
    resume: bool = False
    progress: bool = True
    compile: bool = False  # torch.compile the model (worth it on a GPU for long runs; compiling costs a minute)

    def __post_init__(self):
        for name in ("steps", "batch_size", "grad_accum"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name} must be at least 1, got {getattr(self, name)}")
        if self.optimizer not in ("adamw", "sgd"):
            raise ValueError(f"optimizer must be 'adamw' or 'sgd', got {self.optimizer!r}")
        if self.schedule not in ("cosine", "linear", "constant"):
            raise ValueError(f"schedule must be 'cosine', 'linear' or 'constant', got {self.schedule!r}")
        if self.save_every and not self.checkpoint_dir:
            raise ValueError("save_every needs checkpoint_dir: where should checkpoints go?")


@dataclass
class History:
    """What one fit() measured: the loss and learning rate at each optimizer step, evaluations, throughput."""
    steps: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    evals: list[dict] = field(default_factory=list)  # each {"step": k, **eval_fn(model)}
    tokens: int = 0  # non-padding tokens seen
    seconds: float = 0.0  # training time, evaluation excluded
    precision: str = "no"  # the autocast dtype: "no" (fp32), "bf16" or "fp16" (with a GradScaler)
    loss_scale: list[float] = field(default_factory=list)  # the GradScaler's scale at each step (fp16 only)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0

    @property
    def final_loss(self) -> float:
        return self.loss[-1]


def lr_factor(step: int, config: TrainConfig) -> float:
    """Linear warmup, then cosine or linear decay to zero (or constant) over the remaining steps."""
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    if config.schedule == "constant":
        return 1.0
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    return 0.5 * (1 + math.cos(math.pi * progress)) if config.schedule == "cosine" else 1 - progress


def _check_data(model, train_data: Sequence[dict]) -> None:
    if len(train_data) == 0:
        raise ValueError("train_data is empty: fit needs at least one encoded example (input_ids and labels)")
    first = train_data[0]
    if not isinstance(first, dict) or "input_ids" not in first or "labels" not in first:
        raise ValueError("train_data items must be dicts with input_ids and labels "
                         "(see anlp_ft.formatting.encode_example / encode_chat)")
    context = getattr(model.config, "max_position_embeddings", None)
    longest = max(len(e["input_ids"]) for e in train_data)
    if context is not None and longest > context:
        raise ValueError(f"an example is {longest} tokens, longer than the model's context ({context}); "
                         f"shorten or drop it")


def _loss_tokens(batch: dict) -> torch.Tensor:
    """How many tokens the loss is averaged over: labels that are not IGNORE_INDEX, after the shift by one."""
    return (batch["labels"][:, 1:] != IGNORE_INDEX).sum()


def _latest_checkpoint(directory: Path) -> Path | None:
    found = sorted(directory.glob("step-*"), key=lambda p: int(p.name.split("-")[1]))
    return found[-1] if found else None


def _resume(accelerator: Accelerator, config: TrainConfig, history: History) -> tuple[History, int]:
    """With config.resume, load the newest checkpoint (model, optimizer, schedule, scaler, history) and return
    the step to continue from; else the fresh history and step 0."""
    if not (config.resume and config.checkpoint_dir):
        return history, 0
    last = _latest_checkpoint(Path(config.checkpoint_dir))
    if last is None:
        return history, 0
    accelerator.load_state(str(last))
    history = History(**json.loads((last / "history.json").read_text()))
    start = history.steps[-1] + 1 if history.steps else 0
    accelerator.print(f"resumed from {last} at step {start}")
    return history, start


def _save_checkpoint(accelerator: Accelerator, config: TrainConfig, history: History, step: int) -> None:
    target = Path(config.checkpoint_dir) / f"step-{step}"
    accelerator.save_state(str(target))
    if accelerator.is_main_process:
        (target / "history.json").write_text(json.dumps(asdict(history)))


def _batch_stream(train_data: Sequence[dict], config: TrainConfig, accelerator: Accelerator, collate: Collator,
                  skip: int) -> Iterator[dict]:
    """Micro-batches forever, after skipping the first `skip` (resume). Epoch e is a fixed permutation seeded by
    (seed, e), so a resumed run sees exactly the batches an uninterrupted one would; each process gets its shard."""
    per_epoch = math.ceil(len(train_data) / config.batch_size)
    epoch, skip_in_epoch = divmod(skip, max(1, per_epoch // accelerator.num_processes))
    while True:
        order = torch.randperm(len(train_data), generator=torch.Generator().manual_seed(config.seed * 1000 + epoch))
        loader = accelerator.prepare(DataLoader(Subset(train_data, order.tolist()), batch_size=config.batch_size,
                                                shuffle=False, collate_fn=collate))
        if skip_in_epoch:
            loader = accelerator.skip_first_batches(loader, skip_in_epoch)
            skip_in_epoch = 0
        yield from loader
        epoch += 1


def _pad_id(model: torch.nn.Module, pad_token_id: int | None) -> int:
    if pad_token_id is not None:
        return pad_token_id
    return model.config.pad_token_id if model.config.pad_token_id is not None else model.config.eos_token_id


def fit(
    model: torch.nn.Module,
    train_data: Sequence[dict],
    config: TrainConfig,
    eval_fn: Callable[[torch.nn.Module], dict] | None = None,
    loss_fn: Callable[[torch.nn.Module, dict], torch.Tensor] | None = None,
    pad_token_id: int | None = None,
) -> History:
    """Train `model` in place on encoded examples for config.steps optimizer steps and return its History.

    loss_fn(model, batch) replaces the default `model(**batch).loss` (distillation uses it).
    """
    _check_data(model, train_data)
    seed_everything(config.seed)
    collate = Collator(_pad_id(model, pad_token_id))

    # --- Set-up: accelerator, precision, optimizer, schedule.
    # Precision is handled here (autocast + GradScaler), so accelerate is told "no" whatever its config says.
    # Micro-batches are fetched a step ahead (to count the step's tokens), so accumulation syncs by count, not
    # at the end of a dataloader. cpu=True without a GPU lets `accelerate launch` / torchrun start gloo processes.
    # An Accelerator made earlier in this process (a notebook's own accelerate loop, transformers' Trainer) fixed
    # the process-wide precision; accelerate refuses a second one, so fit() starts accelerate's state afresh.
    if AcceleratorState._shared_state and AcceleratorState().mixed_precision != "no":
        AcceleratorState._reset_state()
    accelerator = Accelerator(mixed_precision="no", cpu=pick_device().type == "cpu",
                              gradient_accumulation_plugin=GradientAccumulationPlugin(
                                  num_steps=config.grad_accum, sync_with_dataloader=False))
    dtype = autocast_dtype(config.mixed_precision, accelerator.device)
    autocast = torch.autocast(accelerator.device.type, dtype=dtype, enabled=dtype != torch.float32)
    scaler = torch.amp.GradScaler(accelerator.device.type, enabled=dtype == torch.float16)
    if config.gradient_checkpointing:
        set_activation_checkpointing(model, True)
        if hasattr(model, "enable_input_require_grads"):
            model.enable_input_require_grads()  # frozen embeddings (LoRA) would otherwise cut the graph
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise ValueError("the model has no trainable parameters (all requires_grad=False)")
    if config.optimizer == "sgd":
        optimizer = torch.optim.SGD(trainable, lr=config.lr, momentum=0.9, weight_decay=config.weight_decay)
    else:
        optimizer = torch.optim.AdamW(trainable, lr=config.lr, weight_decay=config.weight_decay,
                                      fused=accelerator.device.type == "cuda")
    # Stepped by hand once per optimizer step (accelerate would step a prepared scheduler once per process).
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, config))
    if config.compile:
        model = torch.compile(model)
    model, optimizer = accelerator.prepare(model, optimizer)
    accelerator.register_for_checkpointing(scheduler)
    if scaler.is_enabled():  # a disabled scaler has no state to save
        accelerator.register_for_checkpointing(scaler)
    history, start = _resume(accelerator, config, History(precision=mixed_precision(dtype)))
    stream = _batch_stream(train_data, config, accelerator, collate, skip=start * config.grad_accum)

    # --- The loop: one optimizer step per iteration, over grad_accum micro-batches.
    model.train()
    bar = tqdm(range(start, config.steps), desc="training",
               disable=not (config.progress and accelerator.is_main_process))
    for step in bar:
        tic, step_loss, step_tokens = time.perf_counter(), 0.0, 0
        micro_batches = [next(stream) for _ in range(config.grad_accum)]
        # Weight each micro-batch by its share of the step's loss tokens (all processes), then undo the averaging
        # that accelerate (over micro-batches) and DDP (over processes) apply to gradients.
        step_loss_tokens = accelerator.reduce(sum(_loss_tokens(b) for b in micro_batches), "sum")
        if step_loss_tokens.item() == 0:
            raise ValueError("a training step has no response tokens: every label is -100 (check the masking)")
        undo_averaging = accelerator.num_processes * config.grad_accum
        for batch in micro_batches:
            with accelerator.accumulate(model):
                with autocast:  # forward
                    loss = loss_fn(model, batch) if loss_fn is not None else model(**batch).loss
                share = loss.float() * (_loss_tokens(batch) / step_loss_tokens)
                accelerator.backward(scaler.scale(share * undo_averaging))  # backward
                if accelerator.sync_gradients:  # the last micro-batch: clip and update
                    scaler.unscale_(optimizer)  # clip and step on true gradients
                    if config.max_grad_norm:
                        accelerator.clip_grad_norm_(trainable, config.max_grad_norm)
                    scaler.step(optimizer)  # skipped when fp16 gradients overflowed
                    scaler.update()
                optimizer.zero_grad(set_to_none=True)
            step_loss += accelerator.reduce(share.detach(), "sum").item()
            step_tokens += int(accelerator.reduce(batch["attention_mask"].sum(), "sum").item())
        history.lr.append(scheduler.get_last_lr()[0])
        scheduler.step()

        # --- Bookkeeping: record the step, evaluate, save a checkpoint.
        if scaler.is_enabled():
            history.loss_scale.append(scaler.get_scale())
        history.seconds += time.perf_counter() - tic
        history.steps.append(step)
        history.loss.append(step_loss)
        history.tokens += step_tokens
        bar.set_postfix(loss=f"{step_loss:.3f}")
        last = step == config.steps - 1
        if eval_fn is not None and (last or (config.eval_every and (step + 1) % config.eval_every == 0)):
            model.eval()
            with torch.no_grad():
                result = eval_fn(accelerator.unwrap_model(model))
            model.train()
            history.evals.append({"step": step + 1, **result})
        if config.checkpoint_dir and config.save_every and ((step + 1) % config.save_every == 0 or last):
            _save_checkpoint(accelerator, config, history, step)
    bar.close()
    model.eval()
    if config.gradient_checkpointing:
        set_activation_checkpointing(accelerator.unwrap_model(model), False)
    return history
