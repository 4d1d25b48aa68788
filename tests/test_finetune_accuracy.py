"""The course's central claim, measured: LoRA fine-tuning of SmolLM2 through fit() teaches 2-digit addition.
About 4 minutes on 2 CPU cores (the quick profile's budget for this task)."""
import copy

from peft import LoraConfig, get_peft_model

from anlp_ft.data.arithmetic import is_correct, train_test_problems
from anlp_ft.evaluate import accuracy
from anlp_ft.formatting import encode_example, plain_prompt
from anlp_ft.train import TrainConfig, fit

STEPS, BATCH = 32, 16


def test_lora_lifts_held_out_addition_accuracy(smollm, tokenizer):
    train, test = train_test_problems(STEPS * BATCH, 64, seed=0)
    prompts, answers = [plain_prompt(p["question"]) for p in test], [p["answer"] for p in test]
    before = accuracy(smollm, tokenizer, prompts, answers, is_correct, max_new_tokens=48)
    data = [encode_example(tokenizer, plain_prompt(p["question"]), " " + p["solution"]) for p in train]
    model = get_peft_model(copy.deepcopy(smollm), LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0,
                                                             target_modules="all-linear", task_type="CAUSAL_LM"))
    history = fit(model, data, TrainConfig(steps=STEPS, batch_size=BATCH, lr=1e-3, warmup_steps=3, progress=False))
    after = accuracy(model, tokenizer, prompts, answers, is_correct, max_new_tokens=48)
    print(f"held-out accuracy {before.accuracy:.1%} -> {after.accuracy:.1%}; "
          f"{history.tokens_per_s:.0f} tokens/s; loss {history.loss[0]:.2f} -> {history.final_loss:.3f}")
    assert before.accuracy < 0.20
    assert after.accuracy >= 0.85
