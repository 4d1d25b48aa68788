"""Running a recipe: the checks that need the machine or the tokenizer, then the course's fit(), evaluation on
the validation split, and the run's files.

Order, so that a mistake costs seconds and writes nothing: the recipe's keys (recipe.load_recipe), the data
rows, output_dir, precision and 4-bit against this machine, then the tokenizer alone (chat template, lengths,
the model's context and LoRA targets from its config). Only then does the model load. Files are written at the
end, history.json last: its presence marks a finished run, which is never overwritten without --overwrite.
"""
from __future__ import annotations

import json
import math
import re
import time
import warnings
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerBase

from .formatting import CHATML_TEMPLATE, IGNORE_INDEX, PROBE_CHATS, encode_chat, training_template
from .recipe import Recipe, RecipeError, dump_recipe
from .recipe_data import Row, encode_rows, load_rows, preview
from .runtime import autocast_dtype, cuda_capability, mixed_precision, pick_device, seed_everything

FINISHED = "history.json"  # written last: a folder holding it holds a finished run


# --- Checks against the machine (no tokenizer, no model)


def check_output_dir(recipe: Recipe, overwrite: bool) -> Path:
    out = Path(recipe.output_dir)
    if out.exists() and not out.is_dir():
        raise RecipeError(f"output_dir: {out} is a file; point output_dir at a folder")
    if (out / FINISHED).exists() and not overwrite:
        raise RecipeError(f"output_dir: {out} holds a finished run ({FINISHED}); pass --overwrite to replace it, "
                          f"or --output-dir to write elsewhere")
    return out


def check_precision(recipe: Recipe, device: torch.device | str | None = None,
                    capability: tuple[int, int] | None = None, card: str | None = None) -> str:
    """The precision fit() will use here ("no", "bf16", "fp16"); bf16 asked for on a GPU without it is an error.
    `capability` and `card` let tests pose as a T4."""
    device = torch.device(device) if device is not None else pick_device()
    if recipe.precision == "bf16" and device.type == "cuda":
        capability = capability or cuda_capability(device)
        card = card or torch.cuda.get_device_name(device)
        if capability < (8, 0):
            raise RecipeError(f"bf16: true, but this GPU ({card}, compute capability {capability[0]}.{capability[1]}) "
                              f"has no native bf16 (it needs 8.0, Ampere); set bf16: auto (fp16 with loss scaling "
                              f"here) or fp16: true")
    if recipe.precision == "auto" and capability is not None:
        return "bf16" if capability >= (8, 0) else "fp16"
    return mixed_precision(autocast_dtype(recipe.precision, device))


def check_4bit(device: torch.device | str | None = None) -> None:
    """bitsandbytes must be installed and able to quantize on this device (probed on a small matrix)."""
    device = torch.device(device) if device is not None else pick_device()
    try:
        import bitsandbytes.functional as bnbf
    except ImportError:
        raise RecipeError("load_in_4bit: needs bitsandbytes, which is not installed: `pip install bitsandbytes` "
                          "(Linux or Windows), or train adapter: lora without load_in_4bit") from None
    if device.type not in ("cuda", "cpu"):
        raise RecipeError(f"load_in_4bit: bitsandbytes 4-bit does not run on {device.type}; use a CUDA GPU (Colab's "
                          f"T4), or adapter: lora without load_in_4bit")
    try:
        packed, state = bnbf.quantize_4bit(torch.randn(64, 64, device=device), quant_type="nf4")
        bnbf.dequantize_4bit(packed, state)
    except Exception as e:  # an old bitsandbytes without a CPU backend, a CUDA build mismatch, ...
        raise RecipeError(f"load_in_4bit: bitsandbytes cannot run 4-bit on {device} here ({type(e).__name__}: "
                          f"{str(e)[:200]}); use a CUDA GPU, or adapter: lora without load_in_4bit") from None


# --- Checks with the tokenizer (and the model's config, not its weights)


def set_chat_template(recipe: Recipe, tokenizer: PreTrainedTokenizerBase, needed: bool) -> None:
    """Put the recipe's chat template on the tokenizer and check that it fits it: every special marker of the
    template is one token of this vocabulary, the assistant's turns are marked for training on them alone (the
    tokenizer's own template is swapped for the course's marked copy when both render the same text), and an
    assistant turn ends with the tokenizer's eos (else a tuned model never stops). `needed`: the data has chats
    (a named template is checked regardless)."""
    named = {"chatml": CHATML_TEMPLATE, "jinja": recipe.chat_template_jinja}
    if recipe.chat_template in named:
        tokenizer.chat_template = named[recipe.chat_template]
    elif not needed:
        return
    elif not tokenizer.chat_template:
        raise RecipeError(f"chat_template: tokenizer_default, but the tokenizer of {recipe.base_model} has no chat "
                          f"template; set chat_template: chatml (or jinja with chat_template_jinja)")
    name = recipe.chat_template
    for marker in sorted(set(re.findall(r"<\|[^|<>\s]+\|>", tokenizer.chat_template))):
        n = len(tokenizer(marker, add_special_tokens=False)["input_ids"])
        if n != 1:
            raise RecipeError(f"chat_template: {name} does not match the tokenizer: its marker {marker!r} is {n} "
                              f"tokens here, not one special token (the template was made for another vocabulary); "
                              f"use chat_template: tokenizer_default, or a template built on this tokenizer's tokens")
    try:  # also with train_on_inputs: the marks say where a turn ends, for the eos check below
        tokenizer.chat_template = training_template(tokenizer)
    except ValueError as e:
        raise RecipeError(f"chat_template: {name}: {e}") from None
    try:
        probe = encode_chat(tokenizer, PROBE_CHATS[-1])
    except Exception as e:
        raise RecipeError(f"chat_template: {name} cannot render a conversation: {type(e).__name__}: {e}") from None
    trained = [t for t, label in zip(probe["input_ids"], probe["labels"]) if label != IGNORE_INDEX]
    if not trained or trained[-1] != tokenizer.eos_token_id:
        end = tokenizer.decode(trained[-1:])
        raise RecipeError(f"chat_template: {name} ends an assistant turn with {end!r}, but the tokenizer's eos is "
                          f"{tokenizer.eos_token!r}: a tuned model would not stop after its reply. Set special_tokens: "
                          f"{{eos_token: {end!r}}} or use a template whose turns end with {tokenizer.eos_token!r}")


def set_special_tokens(recipe: Recipe, tokenizer: PreTrainedTokenizerBase) -> None:
    for key, token in (recipe.special_tokens or {}).items():
        ids = tokenizer(str(token), add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            raise RecipeError(f"special_tokens.{key}: {token!r} is {len(ids)} tokens in this vocabulary; only an "
                              f"existing single token can be used (the course does not resize embeddings)")
        setattr(tokenizer, key, token)


def _model_path(name: str, key: str = "base_model") -> str:
    from .models import ModelNotAvailable, provision_offline_model, resolve_model

    try:
        source = resolve_model(name)
    except ModelNotAvailable as e:
        raise RecipeError(f"{key}: {e}") from None
    return str(provision_offline_model()) if source.kind == "offline" else source.path


def check_model_config(recipe: Recipe, longest: int) -> None:
    """From the model's config alone (no weights): its context holds sequence_len, and LoRA targets exist."""
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        config = AutoConfig.from_pretrained(_model_path(recipe.base_model))
    except (OSError, ValueError) as e:  # a folder without config.json, an unknown architecture
        raise RecipeError(f"base_model: {recipe.base_model} is not a model transformers can load: {e}") from None
    context = getattr(config, "max_position_embeddings", None)
    if context is not None and recipe.sequence_len > context and longest > context:
        raise RecipeError(f"sequence_len: {recipe.sequence_len} and an example of {longest} tokens, but "
                          f"{recipe.base_model}'s context is {context} tokens; shorten the examples")
    if recipe.lora_target_modules and not recipe.lora_target_linear:
        with torch.device("meta"):  # the module tree without allocating weights
            skeleton = AutoModelForCausalLM.from_config(config)
        linear = sorted({n.rsplit(".", 1)[-1] for n, m in skeleton.named_modules() if isinstance(m, torch.nn.Linear)})
        missing = [t for t in recipe.lora_target_modules if t not in linear]
        if missing:
            raise RecipeError(f"lora_target_modules: {', '.join(missing)} not in {recipe.base_model}; its linear "
                              f"layers are {', '.join(linear)} (or set lora_target_linear: true)")


def prepare(recipe: Recipe, *, overwrite: bool = False, device: torch.device | None = None):
    """Every check, nothing loaded but the tokenizer: returns (tokenizer, train rows, validation rows, precision)."""
    from .models import load_tokenizer

    train, val = load_rows(recipe)
    check_output_dir(recipe, overwrite)
    precision = check_precision(recipe, device)
    if recipe.load_in_4bit:
        check_4bit(device)
    key = "tokenizer_config" if recipe.tokenizer_config else "base_model"
    _model_path(getattr(recipe, key), key)  # a missing model is a RecipeError naming its key
    try:
        tokenizer = load_tokenizer(getattr(recipe, key))
    except (OSError, ValueError) as e:
        raise RecipeError(f"{key}: cannot load a tokenizer from {getattr(recipe, key)}: {e}") from None
    set_special_tokens(recipe, tokenizer)
    set_chat_template(recipe, tokenizer, needed=any(r.spec.type == "chat_template" for r in train + val))
    encode_rows(tokenizer, train + val, recipe)
    check_model_config(recipe, max(len(r.encoded["input_ids"]) for r in train + val))
    return tokenizer, train, val, precision


# --- Training, evaluation, outputs


def build_model(recipe: Recipe, device: torch.device):
    """The base model (4-bit with load_in_4bit), wrapped in LoRA adapters when the recipe names an adapter."""
    from peft import LoraConfig, get_peft_model

    from .models import load_model

    model = load_model(recipe.base_model, device=device, quantization="nf4" if recipe.load_in_4bit else None)
    if recipe.adapter:
        seed_everything(recipe.seed)  # the adapters' initialisation
        targets = "all-linear" if recipe.lora_target_linear else recipe.lora_target_modules
        config = LoraConfig(r=recipe.lora_r, lora_alpha=recipe.lora_alpha, lora_dropout=recipe.lora_dropout,
                            target_modules=targets, task_type="CAUSAL_LM")
        with warnings.catch_warnings():  # peft calls a transformers API that transformers itself deprecates
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            model = get_peft_model(model, config)
    return model


def validation_loss(model, val: list[Row], recipe: Recipe, pad: int) -> float:
    """Mean cross-entropy over the validation examples' trained tokens."""
    from .evaluate import perplexity

    return math.log(perplexity(model, [r.encoded for r in val], pad_token_id=pad,
                               batch_size=recipe.eval_batch_size or recipe.micro_batch_size))


def grade(model, tokenizer: PreTrainedTokenizerBase, val: list[Row], recipe: Recipe) -> dict:
    """Greedy generations on the validation prompts, graded by the recipe's verifier."""
    from .data.arithmetic import is_correct
    from .data.chat import follows_format, follows_rule
    from .data.flan import verify
    from .evaluate import accuracy

    rows = [r.data for r in val]
    verifiers = {"arithmetic": lambda out, row: is_correct(out, row["answer"]),
                 "chat_rule": lambda out, row: follows_rule(out, row["rule"], row["answer"]),
                 "flan": lambda out, row: verify(out, row["answer"])}
    result = accuracy(model, tokenizer, [r.prompt for r in val], rows, verifiers[recipe.verifier],
                      max_new_tokens=recipe.eval_max_new_tokens,
                      batch_size=recipe.eval_batch_size or recipe.micro_batch_size)
    out = {"accuracy": result.accuracy, "outputs": result.outputs}
    if recipe.verifier == "chat_rule":  # lab 03's adherence: the form the system prompt asks for, right or not
        out["adherence"] = sum(follows_format(o, r["rule"]) for o, r in zip(result.outputs, rows)) / len(rows)
    return out


def describe(recipe: Recipe, n_train: int, n_val: int, steps: int, processes: int, precision: str) -> str:
    from .models import resolve_model

    adapter = (f"{recipe.adapter} r{recipe.lora_r} alpha {recipe.lora_alpha} on "
               f"{'all-linear' if recipe.lora_target_linear else ', '.join(recipe.lora_target_modules)}"
               if recipe.adapter else "none (full fine-tuning)")
    batch = recipe.micro_batch_size * recipe.gradient_accumulation_steps * processes
    sources = ", ".join(dict.fromkeys(s.path for s in recipe.datasets + recipe.test_datasets))
    precisions = {"no": "fp32 (no autocast)", "bf16": "bf16 autocast", "fp16": "fp16 autocast + loss scaling"}
    return "\n".join([
        f"- {resolve_model(recipe.base_model).describe()}; adapter: {adapter}"
        + (", 4-bit NF4 base" if recipe.load_in_4bit else ""),
        f"- data: {n_train} training examples, {n_val} validation ({sources})",
        f"- training: {steps} steps x {batch} examples (micro-batch {recipe.micro_batch_size} x accumulation "
        f"{recipe.gradient_accumulation_steps} x {processes} process{'es' if processes > 1 else ''}), "
        f"lr {recipe.learning_rate:g} {recipe.lr_scheduler}, warmup {recipe.warmup(steps)}, {precisions[precision]}",
        f"- output_dir: {recipe.output_dir}"])


def _write_outputs(out: Path, recipe: Recipe, model, tokenizer, history, record: dict, summary: str) -> None:
    from matplotlib.figure import Figure

    from .plots import plot_loss

    out.mkdir(parents=True, exist_ok=True)
    for stale in ("adapter_model.safetensors", "adapter_config.json", "model.safetensors", "config.json"):
        (out / stale).unlink(missing_ok=True)  # an --overwrite run of another adapter kind must not mix files
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)  # with its chat template
    fig = Figure(figsize=(6, 3.5))  # no pyplot: nothing global changes, no window opens
    plot_loss(history, title=f"training loss, {Path(recipe.path).name}", ax=fig.subplots())
    fig.tight_layout()
    fig.savefig(out / "loss.png", dpi=100)
    (out / "recipe.yaml").write_text(dump_recipe(recipe))
    before, after = record["eval"]["before"], record["eval"]["after"]
    rows = [f"| {k} | {before.get(k, float('nan')):.4f} | {after.get(k, float('nan')):.4f} |"
            for k in ("validation loss", "accuracy", "adherence") if k in after]
    table = ["", "| on the validation split | before | after |", "|---|---|---|", *rows] if rows else []
    if "seconds" in before:
        table.append(f"\nEvaluation took {before['seconds']:.1f} s before training"
                     + (f", {after['seconds']:.1f} s after." if "seconds" in after else "."))
    samples = [f"- {p!r:.100} -> {o!r:.100}" for p, o in record.get("samples", [])]
    (out / "report.md").write_text("\n".join(
        [f"# {Path(recipe.path).name}", "", summary,
         f"- loss {history.loss[0]:.4f} -> {history.final_loss:.4f} (loss.png); {history.seconds:.1f} s of training, "
         f"{history.tokens_per_s:.0f} tokens/s", *table]
        + (["", "Validation samples after training:", *samples] if samples else []) + [""]))
    (out / FINISHED).write_text(json.dumps(record, indent=1))  # last: marks the run finished


def run_recipe(recipe: Recipe, *, check: bool = False, preview_rows: int = 0, overwrite: bool = False) -> int:
    """`anlp-ft train recipe.yaml`: check, (with check) preview and stop, else train with fit(), evaluate and write
    output_dir. Runs unchanged under `accelerate launch`: micro_batch_size is per process; the main process
    evaluates with generation and writes the files."""
    from accelerate import PartialState

    from .train import TrainConfig, fit

    state = PartialState(cpu=pick_device().type == "cpu")  # the same choice fit()'s Accelerator makes
    say = print if state.is_main_process else (lambda *a, **k: None)
    tokenizer, train, val, precision = prepare(recipe, overwrite=overwrite, device=state.device)
    steps = recipe.steps(len(train), state.num_processes)
    summary = describe(recipe, len(train), len(val), steps, state.num_processes, precision)
    longest = max(len(r.encoded["input_ids"]) for r in train + val)
    say(f"recipe {recipe.path}: checks passed (longest example {longest} tokens, sequence_len {recipe.sequence_len})")
    say(summary)
    if check or preview_rows:
        say(preview(tokenizer, train, preview_rows or 3))
    if check:
        say("--check: nothing trained, nothing written")
        return 0

    model = build_model(recipe, state.device)
    pad = tokenizer.pad_token_id
    evaluate = {"before": {}, "after": {}}
    if val and state.is_main_process:
        say("evaluating the base model on the validation split ...")
        tic = time.perf_counter()
        evaluate["before"]["validation loss"] = validation_loss(model, val, recipe, pad)
        if recipe.verifier:
            evaluate["before"].update({k: v for k, v in grade(model, tokenizer, val, recipe).items() if k != "outputs"})
        evaluate["before"]["seconds"] = time.perf_counter() - tic
    config = TrainConfig(steps=steps, batch_size=recipe.micro_batch_size, grad_accum=recipe.gradient_accumulation_steps,
                         lr=recipe.learning_rate, weight_decay=recipe.weight_decay, warmup_steps=recipe.warmup(steps),
                         schedule=recipe.schedule, max_grad_norm=recipe.max_grad_norm or None, seed=recipe.seed,
                         mixed_precision=recipe.precision, gradient_checkpointing=recipe.gradient_checkpointing,
                         eval_every=recipe.eval_steps, compile=recipe.torch_compile)
    eval_fn = (lambda m: {"validation loss": validation_loss(m, val, recipe, pad)}) if val else None
    history = fit(model, [r.encoded for r in train], config, eval_fn=eval_fn, pad_token_id=pad)
    if not state.is_main_process:
        return 0
    if val:
        evaluate["after"]["validation loss"] = history.evals[-1]["validation loss"]
    samples, tic = [], time.perf_counter()
    if recipe.verifier:
        graded = grade(model, tokenizer, val, recipe)
        # What was asked: the instruction, or the last user turn of a chat.
        asked = [r.data["instruction"] if r.spec.type == "alpaca" else r.prompt[-1]["content"] for r in val[:3]]
        samples = [[a, o] for a, o in zip(asked, graded.pop("outputs")[:3])]
        evaluate["after"].update(graded)
        evaluate["after"]["seconds"] = time.perf_counter() - tic
    record = {"recipe": recipe.path, "num_processes": state.num_processes, "steps": steps,
              "global_batch": recipe.micro_batch_size * recipe.gradient_accumulation_steps * state.num_processes,
              "loss": history.loss, "lr": history.lr, "evals": history.evals, "tokens": history.tokens,
              "seconds": history.seconds, "precision": history.precision, "eval": evaluate,
              "samples": samples}
    out = Path(recipe.output_dir)
    _write_outputs(out, recipe, model, tokenizer, history, record, summary)
    say(f"loss {history.loss[0]:.4f} -> {history.final_loss:.4f} in {history.seconds:.1f} s "
        f"({history.tokens_per_s:.0f} tokens/s)")
    for key in ("validation loss", "accuracy", "adherence"):
        if key in evaluate["after"]:
            say(f"{key} on {len(val)} validation examples: {evaluate['before'].get(key, float('nan')):.4f} before, "
                f"{evaluate['after'][key]:.4f} after")
    say(f"wrote the {'adapter' if recipe.adapter else 'model'}, tokenizer, history.json, loss.png, recipe.yaml and "
        f"report.md to {out}")
    return 0
