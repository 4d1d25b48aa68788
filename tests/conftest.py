import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach the network

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from anlp_ft.models import load_model, load_tokenizer


@pytest.fixture(scope="session")
def tokenizer():
    return load_tokenizer()


@pytest.fixture(scope="session")
def smollm():
    """The real (offline) SmolLM2-135M-Instruct, shared read-only by the tests that need real behaviour."""
    return load_model(device="cpu")


def tiny_config(**overrides) -> LlamaConfig:
    """A SmolLM2-shaped model small enough to train in a second; same vocabulary as the real tokenizer."""
    kw = dict(vocab_size=49152, hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=True, pad_token_id=2,
              eos_token_id=2, bos_token_id=1)
    kw.update(overrides)
    return LlamaConfig(**kw)


@pytest.fixture
def tiny_model():
    torch.manual_seed(0)
    return LlamaForCausalLM(tiny_config()).eval()
