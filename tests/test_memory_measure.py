"""anlp_ft.memory_measure: the parts of anlp_ft.memory measured on a real (tiny) model: saved activations, counted
by lab 05's solution (also with checkpointing and LoRA), equal the formula, and the allocator's count of what the
forward pass retains equals them plus the named extras; the measurement frees its graph; exact state bytes; the CPU
allocator's peak of a whole training step equals the predicted total."""
import gc
import weakref

import pytest
import torch

from anlp_ft import memory as M
from anlp_ft import memory_measure as MM
from anlp_ft.memory import ModelShape, TrainSetup
from anlp_ft.models import set_activation_checkpointing
from tests.conftest import solution_answers

saved_activation_bytes = solution_answers("05").saved_activation_bytes  # lab 05's ex2, the hooks' count


@pytest.mark.parametrize("batch,seq", [(1, 8), (2, 8), (1, 16), (3, 5)])
@pytest.mark.parametrize("checkpointing", [False, True])
def test_measured_activation_bytes_match_the_formula(batch, seq, checkpointing, tiny_model_factory):
    model = tiny_model_factory(vocab_size=1000).train()
    if checkpointing:
        set_activation_checkpointing(model, True)
    ids = torch.randint(0, 1000, (batch, seq))
    measured = saved_activation_bytes(model, {"input_ids": ids, "labels": ids})
    predicted = M.activation_bytes(ModelShape.from_config(model.config), batch, seq, checkpointing=checkpointing)
    assert measured == predicted


@pytest.mark.parametrize("batch,seq", [(1, 8), (2, 8), (3, 5), (4, 16)])
@pytest.mark.parametrize("checkpointing", [False, True])
def test_allocator_retains_the_saved_activations_and_named_extras(batch, seq, checkpointing, tiny_model_factory):
    """What the allocator holds after the forward pass = the saved activations + the int64 labels (8 b s) and 4
    bytes; with checkpointing also each layer's saved CPU RNG state, RoPE's cos and sin and the int64 positions,
    which the layers keep as inputs."""
    model = tiny_model_factory(vocab_size=1000).train()
    if checkpointing:
        set_activation_checkpointing(model, True)
    ids = torch.randint(0, 1000, (batch, seq))
    data = {"input_ids": ids, "labels": ids}
    retained = MM.forward_retained_bytes(model, data)
    extra = 8 * batch * seq + 4
    if checkpointing:
        config = model.config
        layers, head_dim = config.num_hidden_layers, config.hidden_size // config.num_attention_heads
        extra += layers * torch.get_rng_state().numel() + 2 * seq * head_dim * 4 + 8 * seq
    # + 8 with a one-row batch: measured, not itemised
    assert retained - saved_activation_bytes(model, data) in (extra, extra + 8)
    assert MM.forward_retained_bytes(model, data) == retained  # the graph was freed: nothing accumulates


@pytest.mark.parametrize("leaks", [False, True])
def test_activation_measurement_frees_its_graph(leaks, tiny_model_factory, leaking_saved_bytes):
    # The final hidden states are saved by the head: alive after the call means the graph leaked.
    model = tiny_model_factory(vocab_size=1000).train()
    ids = torch.randint(0, 1000, (2, 8))
    batch = {"input_ids": ids, "labels": ids}
    alive = []
    model.model.norm.register_forward_hook(lambda m, args, out: alive.append(weakref.ref(out)))
    measure = leaking_saved_bytes if leaks else saved_activation_bytes
    assert measure(model, batch) == saved_activation_bytes(model, batch)  # same count either way
    gc.collect()
    assert (alive[0]() is not None) == leaks


def test_measured_state_bytes_are_exact(tiny_model_factory):
    model = tiny_model_factory(vocab_size=1000).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    ids = torch.randint(0, 1000, (2, 8))
    model(input_ids=ids, labels=ids).loss.backward()
    opt.step()
    got = MM.measured_state_bytes(model, opt)
    n = ModelShape.from_config(model.config).n_params
    assert got["parameters"] == 4 * n
    assert got["gradients"] == 4 * n
    assert got["optimizer states"] == 8 * n


def _lora(model, rank=4):
    from peft import LoraConfig, get_peft_model

    return get_peft_model(model, LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0,
                                            target_modules=list(M.LORA_TARGETS)))


@pytest.mark.parametrize("checkpointing", [False, True])
def test_lora_activation_bytes_match_the_formula(checkpointing, tiny_model_factory):
    model = tiny_model_factory(vocab_size=1000).train()
    config = model.config
    if checkpointing:
        set_activation_checkpointing(model, True)
    model = _lora(model)
    if checkpointing:
        model.enable_input_require_grads()  # what peft asks for with frozen embeddings
    ids = torch.randint(0, 1000, (2, 7))
    measured = saved_activation_bytes(model, {"input_ids": ids, "labels": ids})
    predicted = M.activation_bytes(ModelShape.from_config(config), 2, 7, checkpointing=checkpointing, lora_rank=4)
    assert measured == predicted


@pytest.mark.parametrize("method", ["full", "lora"])
def test_predicted_peak_is_the_measured_cpu_peak(method, tiny_model_factory):
    """A whole Adam step: the bytes alive before it plus the most allocated during it, as the CPU allocator
    reports them, equal the breakdown's total."""
    model = tiny_model_factory(vocab_size=1000).train()
    config = model.config
    if method == "lora":
        model = _lora(model)
    ids = torch.randint(0, 1000, (3, 16))
    step = MM.measure_training_step(model, {"input_ids": ids, "labels": ids})
    measured = step["peak"] - step["buffers"]
    setup = TrainSetup(method=method, precision="fp32", batch=3, seq=16, lora_rank=4)
    predicted = M.total_bytes(M.memory_breakdown(ModelShape.from_config(config), setup))
    # peft multiplies each adapter's output by its scaling, a Python float that autograd saves as a 0-dim
    # float64 tensor (8 bytes) which saved_tensors_hooks do not see.
    adapters = config.num_hidden_layers * len(M.LORA_TARGETS) if method == "lora" else 0
    assert measured == predicted + 8 * adapters
    assert MM.peak_bytes_during(lambda: torch.zeros(1000)) == 4000


def test_peak_bytes_refuse_other_devices():
    with pytest.raises(ValueError, match="'cpu' or 'cuda'"):
        MM.peak_bytes_during(lambda: None, "meta")
