"""Fine-tuning from a recipe file, the way LLaMA-Factory and Axolotl do it: one YAML file, no code.

Keys are Axolotl's wherever Axolotl has one, so a recipe reads familiar and a small Axolotl config runs here
unchanged. The file is validated into a `Recipe` dataclass before anything loads: an unknown key is named with
the nearest known one, an Axolotl key this course does not support is named as such (never silently ignored),
and a bad value names its key and the fix. Reading the datasets is `recipe_data`; running is `recipe_run`.

Course-only keys (not Axolotl's) are listed in COURSE_KEYS.
"""
from __future__ import annotations

import difflib
import math
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml


class RecipeError(ValueError):
    """A recipe that cannot run. The message names the key, file, row or token count, and the fix."""


DATASET_TYPES = ("alpaca", "completion", "chat_template")
CHAT_TEMPLATES = ("tokenizer_default", "chatml", "jinja")
ADAPTERS = ("lora", "qlora")
SCHEDULERS = {"cosine": "cosine", "linear": "linear", "constant": "constant", "constant_with_warmup": "constant"}
OPTIMIZERS = ("adamw_torch", "adamw_torch_fused")  # fit() steps torch's AdamW (fused on a GPU)
VERIFIERS = {  # verifier -> the fields each validation row needs
    "arithmetic": ("answer",),  # anlp_ft.data.arithmetic.is_correct: accuracy
    "chat_rule": ("rule", "answer"),  # anlp_ft.data.chat.follows_format / follows_rule: adherence and accuracy
    "flan": ("answer",),  # anlp_ft.data.flan.verify (strict): accuracy
}

# Keys that are the course's own, not Axolotl's: Axolotl would reject them.
COURSE_KEYS = {
    "verifier": "course-only: grade greedy generations on the validation split with one of the course's verifiers "
                f"({', '.join(VERIFIERS)}), before and after training",
}

# Axolotl keys this course does not support. Left empty, false or null they ask for nothing and are accepted
# (Axolotl's example configs list many of them that way); set to anything else they are an error.
UNSUPPORTED_KEYS = (
    "deepspeed fsdp fsdp_config fsdp_version flash_attention sdp_attention xformers_attention flex_attention "
    "s2_attention sample_packing eval_sample_packing pad_to_sequence_len wandb_project wandb_entity wandb_name "
    "wandb_watch wandb_log_model wandb_run_id mlflow_tracking_uri mlflow_experiment_name comet_api_key "
    "hub_model_id hub_strategy push_dataset_to_hub dataset_prepared_path dataset_processes shuffle_merged_datasets "
    "load_in_8bit gptq tf32 fp8 lora_model_dir lora_fan_in_fan_out lora_modules_to_save peft_use_dora "
    "peft_use_rslora lora_on_cpu relora_steps unfrozen_parameters resume_from_checkpoint "
    "auto_resume_from_checkpoints save_steps saves_per_epoch save_total_limit save_strategy save_safetensors "
    "evals_per_epoch eval_strategy logging_steps early_stopping_patience group_by_length local_rank debug strict "
    "trust_remote_code tokens added_tokens_overrides neftune_noise_alpha torch_compile_backend lr_scheduler_kwargs "
    "optim_args adam_beta1 adam_beta2 adam_epsilon cosine_min_lr_ratio lr_quadratic_warmup rl dpo_beta "
    "reward_model plugins eval_table_size do_bench_eval bench_dataset gradient_checkpointing_kwargs "
    "loss_watchdog_threshold max_memory gpu_memory_limit device_map is_llama_derived_model "
    "is_mistral_derived_model tokenizer_use_fast tokenizer_legacy base_model_config revision_of_model "
    "excess_length_strategy train_on_eos_tokens chat_template_kwargs default_system_message"
).split()
UNSUPPORTED_DATASET_KEYS = ("data_files revision shards trust_remote_code chat_template chat_template_jinja "
                            "drop_system_message field_system conversation train_on_split message_field_training "
                            "message_field_training_detail preprocess_shards system_prompt").split()
UNSUPPORTED_TYPES = ("sharegpt", "alpaca:chatml", "alpaca_chat", "alpaca_instruct", "input_output", "pretrain",
                     "oasst", "user_defined", "explainchoice", "concisechoice", "summarizetldr", "jeopardy",
                     "gpteacher", "reflection", "metharme", "context_qa", "stepwise_supervised", "bradley_terry")


def _kind(kind: str, doc: str, default: Any = MISSING):
    """A recipe field: its kind (how the YAML value is checked) and what it does, for errors and docs."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata={"kind": kind, "doc": doc})
    return field(default=default, metadata={"kind": kind, "doc": doc})


@dataclass
class DatasetSpec:
    """One entry of `datasets:` / `test_datasets:`, Axolotl's keys."""
    path: str = _kind("str", "a hub dataset id, or a local .jsonl / .json / .csv / .parquet file")
    type: str = _kind("str", "alpaca (instruction, input, output), completion (a text field) or chat_template")
    split: str = _kind("str", "the split of a hub dataset (a local file has one: train)", "train")
    name: str | None = _kind("opt_str", "the hub dataset's configuration", None)
    ds_type: str | None = _kind("opt_str", "json, csv or parquet when the file's extension does not say", None)
    field: str = _kind("str", "completion: the field holding the text", "text")
    field_messages: str = _kind("str", "chat_template: the field holding the list of messages", "messages")
    message_property_mappings: dict = _kind("mapping", "chat_template: where role and content are in a message",
                                            {"role": "role", "content": "content"})
    roles: dict | None = _kind("opt_mapping", "chat_template: {system|user|assistant: [names in the data]}", None)
    roles_to_train: list = _kind("strs", "chat_template: roles whose turns are trained on (only [assistant])",
                                 ["assistant"])
    train_on_eos: str = _kind("str", "chat_template: which end-of-turn tokens are trained (only turn)", "turn")


@dataclass
class Recipe:
    """A validated recipe. Field names are the YAML keys (Axolotl's, except COURSE_KEYS)."""
    base_model: str = _kind("str", "local folder or hub id (SmolLM2 ids fall back to the offline copy)")
    datasets: list = _kind("datasets", "training data: a list of {path, type, ...}")
    tokenizer_config: str | None = _kind("opt_str", "tokenizer folder or hub id (default: base_model's)", None)
    model_type: str | None = _kind("opt_str", "loaded with AutoModelForCausalLM, which picks this class", None)
    tokenizer_type: str | None = _kind("opt_str", "loaded with AutoTokenizer, which picks this class", None)
    test_datasets: list = _kind("datasets", "validation data (instead of val_set_size)", [])
    val_set_size: float = _kind("float", "held out from datasets: a fraction (< 1) or a number of rows", 0.0)
    chat_template: str = _kind("str", f"one of {', '.join(CHAT_TEMPLATES)}", "tokenizer_default")
    chat_template_jinja: str | None = _kind("opt_str", "the Jinja template when chat_template: jinja", None)
    special_tokens: dict | None = _kind("opt_mapping", "eos_token / pad_token: an existing token to use as such", None)
    sequence_len: int = _kind("int", "longest example in tokens: a longer one is an error", 2048)
    train_on_inputs: bool = _kind("bool", "also train on prompts (alpaca) / whole conversations (chat)", False)
    adapter: str | None = _kind("opt_str", "none (full fine-tuning), lora or qlora", None)
    lora_r: int = _kind("int", "LoRA rank", 8)
    lora_alpha: int = _kind("int", "LoRA scale numerator (scale = alpha / r)", 16)
    lora_dropout: float = _kind("float", "dropout on the LoRA input", 0.0)
    lora_target_modules: list | None = _kind("opt_strs", "module names LoRA wraps", None)
    lora_target_linear: bool = _kind("bool", "LoRA on every linear layer (peft's all-linear)", False)
    load_in_4bit: bool = _kind("bool", "NF4 weights through bitsandbytes (with adapter: qlora)", False)
    micro_batch_size: int = _kind("int", "examples per micro-batch, per process", 1)
    eval_batch_size: int | None = _kind("opt_int", "prompts per generation batch (default micro_batch_size)", None)
    gradient_accumulation_steps: int = _kind("int", "micro-batches per optimizer step", 1)
    num_epochs: float = _kind("float", "passes over the training data (unless max_steps)", 1.0)
    max_steps: int | None = _kind("opt_int", "optimizer steps; overrides num_epochs", None)
    learning_rate: float = _kind("float", "peak learning rate of AdamW", 1e-4)
    lr_scheduler: str = _kind("str", f"one of {', '.join(SCHEDULERS)}", "cosine")
    warmup_steps: int | None = _kind("opt_int", "linear warmup steps", None)
    warmup_ratio: float | None = _kind("opt_float", "linear warmup as a fraction of the steps", None)
    weight_decay: float = _kind("float", "AdamW weight decay", 0.0)
    max_grad_norm: float = _kind("float", "gradient clipping (0: none)", 1.0)
    optimizer: str = _kind("str", f"one of {', '.join(OPTIMIZERS)}", "adamw_torch")
    gradient_checkpointing: bool = _kind("bool", "recompute activations in the backward pass", False)
    torch_compile: bool = _kind("bool", "torch.compile the model", False)
    eval_steps: int | None = _kind("opt_int", "validation loss every this many steps (and after the last)", None)
    eval_max_new_tokens: int = _kind("int", "generation length when a verifier grades outputs", 128)
    seed: int = _kind("int", "seeds data order, adapters and the validation split", 0)
    output_dir: str | None = _kind("opt_str", "where the run is written (default out/<recipe name>)", None)
    bf16: Any = _kind("precision", "true, false or auto (bf16 on Ampere+, fp16 on a T4, fp32 on CPU)", "auto")
    fp16: bool | None = _kind("opt_bool", "fp16 autocast with loss scaling", None)
    verifier: str | None = _kind("opt_str", COURSE_KEYS["verifier"], None)
    path: str = field(default="", metadata={"kind": "internal"})  # the recipe file, for messages

    # --- What the run derives from the keys.
    @property
    def precision(self) -> str:
        """fit()'s mixed_precision: auto, no, bf16 or fp16."""
        if self.fp16:
            return "fp16"
        return {True: "bf16", False: "no"}.get(self.bf16, "auto")

    @property
    def schedule(self) -> str:
        return SCHEDULERS[self.lr_scheduler]

    @property
    def has_validation(self) -> bool:
        return bool(self.test_datasets) or self.val_set_size > 0

    def steps(self, n_train: int, num_processes: int = 1) -> int:
        """Optimizer steps: max_steps, else num_epochs passes over n_train examples at the global batch."""
        if self.max_steps:
            return self.max_steps
        per_epoch = math.ceil(n_train / (self.micro_batch_size * self.gradient_accumulation_steps * num_processes))
        return max(1, math.ceil(self.num_epochs * per_epoch))

    def warmup(self, steps: int) -> int:
        if self.warmup_steps is not None:
            return self.warmup_steps
        return round((self.warmup_ratio or 0.0) * steps)

    def to_dict(self) -> dict:
        """The resolved recipe as YAML keys (what the run wrote to output_dir/recipe.yaml)."""
        out = asdict(self)
        out.pop("path")
        return out


RECIPE_KEYS = [f.name for f in fields(Recipe) if f.metadata["kind"] != "internal"]
DATASET_KEYS = [f.name for f in fields(DatasetSpec)]


def _doc(cls: type, key: str) -> str:
    return next(f.metadata["doc"] for f in fields(cls) if f.name == key)


def _unset(value: Any) -> bool:
    return value is None or value is False or value == "" or value == [] or value == {}


def _unknown_key(key: str, where: str, known: list[str], unsupported: list[str]) -> str:
    if key in unsupported:
        return (f"{where}{key}: an Axolotl key this course does not support; remove it (or leave it empty) "
                f"and see README 'Training from the command line' for what the course's loop does instead")
    nearest = difflib.get_close_matches(key, known + unsupported, n=1, cutoff=0.6)
    if not nearest:
        return f"{where}{key}: unknown key. Known keys: {', '.join(known)}"
    note = " (an Axolotl key this course does not support)" if nearest[0] in unsupported else ""
    return f"{where}{key}: unknown key; did you mean {nearest[0]!r}{note}?"


def _coerce(kind: str, key: str, value: Any, where: str) -> Any:
    """Check (and where YAML is ambiguous, convert) one value; raise RecipeError naming the key."""
    def bad(expected: str) -> RecipeError:
        return RecipeError(f"{where}{key}: expected {expected}, got {value!r}")

    base = kind.removeprefix("opt_")
    if kind.startswith("opt_") and value is None:
        return None
    if base == "str":
        if not isinstance(value, str) or not value.strip():
            raise bad("a non-empty string")
        return value
    if base == "bool":
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if base == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("a whole number")
        return value
    if base == "float":
        # PyYAML reads 2e-3 (no dot) as a string; Axolotl's pydantic accepts it, so do we.
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise bad("a number") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad("a number")
        return float(value)
    if base == "strs":
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
            raise bad("a list of names")
        return value
    if base == "mapping":
        if not isinstance(value, dict):
            raise bad("a mapping (key: value lines)")
        return value
    if base == "precision":
        if value not in (True, False, "auto"):
            raise bad("true, false or auto")
        return value
    raise AssertionError(kind)


def _parse_dataset(raw: Any, where: str, errors: list[str]) -> DatasetSpec | None:
    if isinstance(raw, str):  # Axolotl accepts a bare path; the type is still needed
        raw = {"path": raw}
    if not isinstance(raw, dict):
        errors.append(f"{where}: expected a mapping {{path: ..., type: ...}}, got {raw!r}")
        return None
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in DATASET_KEYS:
            if key in UNSUPPORTED_DATASET_KEYS and _unset(value):
                continue
            errors.append(_unknown_key(str(key), f"{where}.", DATASET_KEYS, UNSUPPORTED_DATASET_KEYS))
            continue
        kind = next(f.metadata["kind"] for f in fields(DatasetSpec) if f.name == key)
        try:
            values[key] = _coerce(kind, key, value, f"{where}.")
        except RecipeError as e:
            errors.append(str(e))
    for key in ("path", "type"):
        if key not in raw:
            errors.append(f"{where}: missing {key!r} ({_doc(DatasetSpec, key)})")
    if isinstance(raw.get("type"), dict):
        errors.append(f"{where}.type: a custom prompt format (a mapping) is an Axolotl feature this course does not "
                      f"support; use type: {' / '.join(DATASET_TYPES)}")
        return None
    if any(e.startswith(where) for e in errors):
        return None
    spec = DatasetSpec(**values)
    if spec.type not in DATASET_TYPES:
        what = "an Axolotl dataset type this course does not support" if spec.type in UNSUPPORTED_TYPES \
            else "an unknown dataset type"
        errors.append(f"{where}.type: {spec.type!r} is {what}; use one of {', '.join(DATASET_TYPES)}")
    if spec.roles_to_train != ["assistant"]:
        errors.append(f"{where}.roles_to_train: only [assistant] is supported (the course's encode_chat); set "
                      f"train_on_inputs: true to train on whole conversations")
    if spec.train_on_eos != "turn":
        errors.append(f"{where}.train_on_eos: only 'turn' is supported (each assistant turn's end-of-turn token)")
    if spec.ds_type not in (None, "json", "csv", "parquet"):
        errors.append(f"{where}.ds_type: expected json, csv or parquet, got {spec.ds_type!r}")
    if set(spec.message_property_mappings) - {"role", "content"}:
        errors.append(f"{where}.message_property_mappings: only role and content can be mapped")
    if spec.roles is not None and (set(spec.roles) - {"system", "user", "assistant"}
                                   or not all(isinstance(v, list) for v in spec.roles.values())):
        errors.append(f"{where}.roles: expected {{system|user|assistant: [names used in the data]}}")
    return spec


def _check_values(r: Recipe, errors: list[str]) -> None:
    """Constraints between values; each message names the key and the fix."""
    for key in ("sequence_len", "micro_batch_size", "gradient_accumulation_steps", "lora_r", "eval_max_new_tokens"):
        if getattr(r, key) < 1:
            errors.append(f"{key}: must be at least 1, got {getattr(r, key)}")
    for key in ("max_steps", "eval_steps", "eval_batch_size"):
        if getattr(r, key) is not None and getattr(r, key) < 1:
            errors.append(f"{key}: must be at least 1 (or left out), got {getattr(r, key)}")
    if r.num_epochs <= 0:
        errors.append(f"num_epochs: must be positive, got {r.num_epochs}")
    if r.learning_rate <= 0:
        errors.append(f"learning_rate: must be positive, got {r.learning_rate}")
    if not 0 <= r.lora_dropout < 1:
        errors.append(f"lora_dropout: must be in [0, 1), got {r.lora_dropout}")
    if r.val_set_size < 0 or (r.val_set_size >= 1 and r.val_set_size != int(r.val_set_size)):
        errors.append(f"val_set_size: a fraction below 1 (0.05) or a whole number of rows (64), got {r.val_set_size}")
    if r.val_set_size and r.test_datasets:
        errors.append("val_set_size and test_datasets both set: validate on one or the other")
    if r.warmup_steps is not None and r.warmup_ratio is not None:
        errors.append("warmup_steps and warmup_ratio both set: keep one")
    if r.adapter == "":
        r.adapter = None
    if r.adapter not in (None, *ADAPTERS):
        errors.append(f"adapter: expected lora, qlora or nothing (full fine-tuning), got {r.adapter!r}")
    if r.adapter == "qlora" and not r.load_in_4bit:
        errors.append("adapter: qlora needs load_in_4bit: true (QLoRA trains LoRA adapters on 4-bit weights)")
    if r.load_in_4bit and r.adapter != "qlora":
        errors.append("load_in_4bit: 4-bit weights cannot be trained themselves; set adapter: qlora")
    if r.adapter and not (r.lora_target_linear or r.lora_target_modules):
        errors.append(f"adapter: {r.adapter} needs lora_target_linear: true or lora_target_modules: [q_proj, v_proj]")
    if r.lr_scheduler not in SCHEDULERS:
        errors.append(f"lr_scheduler: {r.lr_scheduler!r} is not supported by fit(); use one of "
                      f"{', '.join(SCHEDULERS)}")
    if r.optimizer not in OPTIMIZERS:
        errors.append(f"optimizer: {r.optimizer!r} is not supported; fit() uses torch's AdamW "
                      f"({', '.join(OPTIMIZERS)})")
    if r.chat_template not in CHAT_TEMPLATES:
        errors.append(f"chat_template: {r.chat_template!r} is not one the course ships; use one of "
                      f"{', '.join(CHAT_TEMPLATES)} (jinja with chat_template_jinja: your template)")
    if (r.chat_template == "jinja") != (r.chat_template_jinja is not None):
        errors.append("chat_template: jinja and chat_template_jinja go together")
    if r.special_tokens and set(r.special_tokens) - {"eos_token", "pad_token"}:
        errors.append(f"special_tokens: only eos_token and pad_token (existing tokens) are supported, got "
                      f"{', '.join(sorted(r.special_tokens))}")
    if r.bf16 is True and r.fp16:
        errors.append("bf16 and fp16 both true: pick one (or bf16: auto)")
    if r.verifier is not None and r.verifier not in VERIFIERS:
        errors.append(f"verifier: {r.verifier!r} is not one of the course's verifiers ({', '.join(VERIFIERS)})")
    if (r.verifier or r.eval_steps) and not r.has_validation:
        errors.append(f"{'verifier' if r.verifier else 'eval_steps'}: needs validation data: set val_set_size or "
                      f"test_datasets")
    if r.model_type and not r.model_type.endswith("ForCausalLM"):
        errors.append(f"model_type: {r.model_type!r} is not a causal LM class; leave it out")
    if r.tokenizer_type and "Tokenizer" not in r.tokenizer_type:
        errors.append(f"tokenizer_type: {r.tokenizer_type!r} is not a tokenizer class; leave it out")


def parse_recipe(raw: Any, path: str | Path = "recipe") -> Recipe:
    """Validate a recipe's YAML mapping into a Recipe. Every problem found is listed in one RecipeError."""
    if not isinstance(raw, dict):
        raise RecipeError(f"{path}: a recipe is a YAML mapping of keys (base_model: ..., datasets: ...), "
                          f"got {type(raw).__name__}")
    errors: list[str] = []
    values: dict[str, Any] = {}
    kinds = {f.name: f.metadata["kind"] for f in fields(Recipe)}
    for key, value in raw.items():
        key = str(key)
        if key not in RECIPE_KEYS:
            if key in UNSUPPORTED_KEYS and _unset(value):
                continue
            errors.append(_unknown_key(key, "", RECIPE_KEYS, UNSUPPORTED_KEYS))
        elif kinds[key] == "datasets":
            if value is None and key == "test_datasets":
                continue
            if not isinstance(value, list) or not value:
                errors.append(f"{key}: expected a list of datasets ([{{path: data.jsonl, type: alpaca}}]), "
                              f"got {value!r}")
                continue
            specs = [_parse_dataset(v, f"{key}[{i}]", errors) for i, v in enumerate(value)]
            values[key] = [s for s in specs if s is not None]
        else:
            try:
                values[key] = _coerce(kinds[key], key, value, "")
            except RecipeError as e:
                errors.append(str(e))
    for key in ("base_model", "datasets"):
        if key not in raw:
            errors.append(f"{key}: missing; it is required ({_doc(Recipe, key)})")
    if not errors:
        recipe = Recipe(**values, path=str(path))
        _check_values(recipe, errors)
        if recipe.output_dir is None:
            recipe.output_dir = str(Path("out") / Path(path).stem)
    if errors:
        raise RecipeError(f"{path}: {len(errors)} problem(s) in the recipe:\n  - " + "\n  - ".join(errors))
    return recipe


def load_recipe(path: str | Path, overrides: dict[str, Any] | None = None) -> Recipe:
    """Read a recipe file, apply command-line overrides (keys as in the file; None removes a key, back to its
    default) and validate it."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"{path}: no such recipe file")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise RecipeError(f"{path}:{where}: not valid YAML ({getattr(e, 'problem', None) or e})") from None
    if isinstance(raw, dict):
        for key, value in (overrides or {}).items():
            if value is None:
                raw.pop(key, None)
            else:
                raw[key] = value
    return parse_recipe(raw, path)


def dump_recipe(recipe: Recipe) -> str:
    """The resolved recipe as YAML, course-only keys marked."""
    text = yaml.safe_dump(recipe.to_dict(), sort_keys=False, allow_unicode=True)
    return f"# resolved from {recipe.path}; course-only keys (not Axolotl's): {', '.join(COURSE_KEYS)}\n{text}"
