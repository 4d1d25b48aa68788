"""anlp_ft.distill (sampling, generation speed), with lab 04's reference answers from its solution checked against
the library that does it for real: the KD loss equals torch's kl_div in both directions, the loss_fn trains a student
towards its teacher, the sequence-level data and the verified-sample filter behave as the lab describes."""
import pytest
import torch
import torch.nn.functional as F

from anlp_ft import distill
from anlp_ft.data.arithmetic import is_correct
from anlp_ft.evaluate import generate
from anlp_ft.formatting import IGNORE_INDEX, encode_example, plain_prompt
from anlp_ft.train import TrainConfig, fit
from tests.conftest import solution_answers


@pytest.fixture(scope="module")
def sol(tokenizer):
    """The reference answers, from the solution, with the names lab 04's set-up cells define."""
    return solution_answers("04", IGNORE_INDEX=IGNORE_INDEX, generate=generate, encode_example=encode_example,
                            plain_prompt=plain_prompt, tokenizer=tokenizer, MAX_NEW_TOKENS=5)


def _logits(seed=0, shape=(2, 5, 30)):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g) * 2, torch.randn(*shape, generator=g) * 2


@pytest.mark.parametrize("temperature", [0.5, 1.0, 3.0])
def test_kd_loss_forward_and_reverse_equal_kl_div(temperature, sol):
    s, t = _logits()
    mask = torch.ones(2, 5, dtype=torch.bool)
    mask[0, :2] = False
    ls, lt = (s / temperature).log_softmax(-1), (t / temperature).log_softmax(-1)
    forward = F.kl_div(ls, lt, log_target=True, reduction="none").sum(-1)[mask].mean() * temperature**2
    reverse = F.kl_div(lt, ls, log_target=True, reduction="none").sum(-1)[mask].mean() * temperature**2
    assert torch.allclose(sol.kd_loss(s, t, mask, temperature), forward, atol=1e-5)
    assert torch.allclose(sol.kd_loss(s, t, mask, temperature, "reverse"), reverse, atol=1e-5)
    assert sol.kd_loss(s, s.clone(), mask, temperature).abs().item() < 1e-6


def test_token_kd_loss_trains_a_student_towards_its_teacher(tokenizer, tiny_model_factory, sol):
    teacher = tiny_model_factory(num_hidden_layers=2).eval()
    student = tiny_model_factory(seed=None, num_hidden_layers=1)  # drawn right after the teacher, as before
    data = [encode_example(tokenizer, plain_prompt(f"What is {a} + 1?"), f" {a + 1}") for a in range(10, 18)]
    loss_fn = sol.make_token_kd_loss(teacher, temperature=2.0)
    history = fit(student, data, TrainConfig(steps=15, batch_size=4, lr=1e-2, progress=False), loss_fn=loss_fn)
    assert history.final_loss < history.loss[0] / 2
    assert all(p.grad is None for p in teacher.parameters())


def test_sequence_kd_data_and_sampling(tokenizer, tiny_model, sol):
    questions = ["What is 1 + 2?", "What is 3 + 4?"]
    examples, answers = sol.sequence_kd_data(tiny_model, questions)
    assert answers == generate(tiny_model, tokenizer, [plain_prompt(q) for q in questions], max_new_tokens=5)
    assert len(examples) == sum(bool(a.strip()) for a in answers)
    samples = distill.sample_solutions(tiny_model, tokenizer, questions, k=3, max_new_tokens=5, seed=0)
    assert len(samples) == 2
    assert all(len(s) == 3 for s in samples)
    assert samples == distill.sample_solutions(tiny_model, tokenizer, questions, k=3, max_new_tokens=5, seed=0)


def test_keep_verified_filters_and_dedups(sol):
    problems = [{"question": "What is 1 + 2?", "answer": "3"}, {"question": "What is 2 + 2?", "answer": "4"}]
    samples = [["The answer is 3.", " The answer is 3. ", "It is 4.", "", "1 + 2 = 3"], ["5"]]
    kept = sol.keep_verified(problems, samples, is_correct)
    assert [k["solution"] for k in kept] == ["The answer is 3.", "1 + 2 = 3"]


def test_generation_tokens_per_s_is_positive(tokenizer, tiny_model):
    speed = distill.generation_tokens_per_s(tiny_model, tokenizer, ["Hello", "What is 1 + 2?"], new_tokens=4)
    assert speed > 0
