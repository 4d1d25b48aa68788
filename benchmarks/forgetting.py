"""What fine-tuning on one task costs elsewhere, over seeds: zero-shot and few-shot accuracy on three other tasks
before and after tuning the pre-trained model on arithmetic (lecture 01's "other tasks may degrade" and "few-shot
ability is lost").

    python benchmarks/forgetting.py --out benchmarks/results/forgetting.json   # the committed run
    python benchmarks/forgetting.py --seeds 0 --n-test 16                      # one quick point

Each seed tunes the pre-trained model on its own draw of 2-digit sums with short answers (`Question: What is 23 +
45?\nAnswer: 68`), four ways that cross method and length: LoRA (lecture 01's run: rank 16, lr 1e-3) and full
fine-tuning (lr 1e-4), each for 24 and for 96 steps x 16. The arms of one length see the same examples, and the
96-step arms extend the 24-step arms' data, so comparing rows of one length isolates the method and rows of one method
isolate the length. Every model, and the untuned one, answers the same held-out prompts of three other task families
(uppercase, last word, comparison) in the same plain format:

* zero-shot: the question alone; lenient (the answer appears in the output), as lecture 01 scores it;
* few-shot: three solved examples of the same family before the question (the in-context learning the lecture says
  fine-tuning can lose); exact (the first line of the output is the answer) and lenient.

Beside these scores, each arm's KL(tuned || pre-trained) on lecture 01's twelve general prompts (its "narrowing"
measure), so that the KL can be read against what was lost. For its scale, `--arms` can add a reference: 24 steps of
LoRA or of full fine-tuning on the same prompts with the pre-trained model's own greedy answers as targets (up to 24
tokens, then end of sequence): the same steps, lr and prompts, but nothing new to learn, so the KL it reaches is what
tuning alone moves:

    python benchmarks/forgetting.py --arms "LoRA, 24 steps" "LoRA, 24 steps, own answers" \
        --out benchmarks/results/forgetting_own_answers.json
    python benchmarks/forgetting.py --arms "full, 24 steps" "full, 24 steps, own answers" \
        --out benchmarks/results/forgetting_own_answers_full.json

And lecture 01's "behaviour elsewhere changes", scored: 40 general questions with a one-word answer ("What is the
capital of Japan?", Tokyo), asked in the training frame (`Question: ...\nAnswer:`) and in the model's own chat
format. For each frame: the share answered right (an accepted answer appears in the reply, as a word), the share
answered at all (a non-empty reply: the untuned model often ends its turn at once in the training frame), and the
mean length of the replies in words (the tuning data's answers are one number).

Prints one JSON line per run; then the mean and spread over seeds of each arm and of each change from the untuned
model, each factor's effect with the other held fixed (paired by seed), and how the KL goes with each score over the
tuned runs. --report FILE prints the table of a saved run again.
"""
from __future__ import annotations

import copy
import json
import random
import statistics

from peft import LoraConfig, get_peft_model
from seeds import (  # benchmarks/seeds.py: run as scripts, the folder is on the path
    finish_run,
    mean_sd_text,
    paired_text,
    print_saved_report,
    run_parser,
)

from anlp_ft.data.arithmetic import arithmetic_problems, is_correct
from anlp_ft.data.flan import task_examples, verify
from anlp_ft.evaluate import accuracy, generate, kl_divergence
from anlp_ft.formatting import encode_example, plain_prompt
from anlp_ft.models import load_model, load_tokenizer
from anlp_ft.runtime import pick_device, seed_everything
from anlp_ft.train import TrainConfig, fit

FAMILIES = ("uppercase", "last_word", "comparison")  # lecture 01's other tasks
HELD_OUT_SEED = 10_000
SHOTS = 3
GENERAL_QUESTIONS = ["What is the capital of France?", "Why is the sky blue?", "Name three fruits.",  # lecture 01's
                     "Who wrote Romeo and Juliet?", "How do I boil an egg?", "What is photosynthesis?",
                     "Translate 'good morning' into French.", "Give me a synonym for happy."]
GENERAL_PROMPTS = [plain_prompt(q) for q in GENERAL_QUESTIONS] + [
    "The weather today is", "Once upon a time, in a small village,", "The best way to learn a language is",
    "Dear Sir or Madam, I am writing to"]
GENERAL_QA = [  # lecture 01's "behaviour elsewhere": general questions, each with its accepted one-word answers
    ("What is the capital of France?", ["paris"]), ("Who wrote Romeo and Juliet?", ["shakespeare"]),
    ("What color is the sky on a clear day?", ["blue"]), ("What is the opposite of hot?", ["cold"]),
    ("What is the largest planet in our solar system?", ["jupiter"]), ("What is the capital of Japan?", ["tokyo"]),
    ("What is frozen water called?", ["ice"]), ("Which animal is known as the king of the jungle?", ["lion"]),
    ("What is the capital of Italy?", ["rome"]), ("Who painted the Mona Lisa?", ["leonardo", "da vinci"]),
    ("What planet do we live on?", ["earth"]), ("What is the opposite of up?", ["down"]),
    ("What language is spoken in Spain?", ["spanish"]), ("What is the capital of Germany?", ["berlin"]),
    ("Which ocean is the largest?", ["pacific"]), ("What do bees make?", ["honey"]),
    ("What is the closest star to Earth?", ["sun"]), ("What color do you get by mixing blue and yellow?", ["green"]),
    ("Who was the first president of the United States?", ["washington"]),
    ("What is the capital of England?", ["london"]), ("What is the tallest animal?", ["giraffe"]),
    ("What language is spoken in Brazil?", ["portuguese"]), ("In which country are the pyramids of Giza?", ["egypt"]),
    ("What is the opposite of day?", ["night"]), ("What do cows drink?", ["water"]),
    ("What is the capital of Spain?", ["madrid"]), ("What color are bananas when they are ripe?", ["yellow"]),
    ("What is the largest mammal?", ["whale"]), ("Which planet is known as the red planet?", ["mars"]),
    ("What do you call a baby cat?", ["kitten"]), ("What is the capital of Russia?", ["moscow"]),
    ("Who developed the theory of relativity?", ["einstein"]), ("What is the hardest natural substance?", ["diamond"]),
    ("What instrument has 88 keys?", ["piano"]), ("What is the main ingredient of guacamole?", ["avocado"]),
    ("Which bird is a symbol of peace?", ["dove"]), ("What is the capital of Egypt?", ["cairo"]),
    ("What metal is liquid at room temperature?", ["mercury"]), ("What is the opposite of big?", ["small", "little"]),
    ("What season comes after winter?", ["spring"])]
GENERAL_FRAMES = {"plain": plain_prompt, "chat": lambda q: [{"role": "user", "content": q}]}
ARMS = {"LoRA, 24 steps": {"lora": True, "steps": 24, "lr": 1e-3},
        "LoRA, 96 steps": {"lora": True, "steps": 96, "lr": 1e-3},
        "full, 24 steps": {"lora": False, "steps": 24, "lr": 1e-4},
        "full, 96 steps": {"lora": False, "steps": 96, "lr": 1e-4},
        # the KL's reference: the same prompts with the model's own answers, nothing new to learn (not run by default)
        "LoRA, 24 steps, own answers": {"lora": True, "steps": 24, "lr": 1e-3, "own answers": True},
        "full, 24 steps, own answers": {"lora": False, "steps": 24, "lr": 1e-4, "own answers": True}}
DEFAULT_ARMS = ["LoRA, 24 steps", "LoRA, 96 steps", "full, 24 steps", "full, 96 steps"]


def few_shot_prompt(demos: list[dict], question: str) -> str:
    return "\n\n".join([plain_prompt(d["prompt"]) + " " + d["answer"] for d in demos] + [plain_prompt(question)])


def measure(model, tokenizer, tasks: list[dict], arithmetic: list[dict], base=None) -> dict:
    zero = generate(model, tokenizer, [plain_prompt(t["prompt"]) for t in tasks], max_new_tokens=12, batch_size=64)
    few = generate(model, tokenizer, [t["few-shot prompt"] for t in tasks], max_new_tokens=12, batch_size=32)
    first_lines = [o.strip().split("\n")[0] for o in few]
    sums = accuracy(model, tokenizer, [plain_prompt(p["question"]) for p in arithmetic],
                    [p["answer"] for p in arithmetic], is_correct, max_new_tokens=10, batch_size=64).accuracy
    return {"arithmetic": sums,
            "zero-shot lenient": statistics.mean(verify(o, t["answer"], strict=False) for o, t in zip(zero, tasks)),
            "few-shot exact": statistics.mean(verify(o, t["answer"]) for o, t in zip(first_lines, tasks)),
            "few-shot lenient": statistics.mean(verify(o, t["answer"], strict=False) for o, t in zip(few, tasks)),
            "KL general": 0.0 if base is None else kl_divergence(model, base, tokenizer, GENERAL_PROMPTS),
            **general_scores(model, tokenizer)}


def right(reply: str, answers: list[str]) -> bool:
    """An accepted answer appears in the reply as a word (the lenient verifier), its plural too ("whales")."""
    return any(verify(reply, a + plural, strict=False) for a in answers for plural in ("", "s", "es"))


def general_scores(model, tokenizer) -> dict:
    scores = {}
    for frame, prompt in GENERAL_FRAMES.items():
        replies = [r.strip() for r in generate(model, tokenizer, [prompt(q) for q, _ in GENERAL_QA], max_new_tokens=24,
                                               batch_size=40)]
        scores[f"general {frame} right"] = statistics.mean(right(r, a) for r, (_, a) in zip(replies, GENERAL_QA))
        scores[f"general {frame} answered"] = statistics.mean(bool(r) for r in replies)
        scores[f"general {frame} words"] = statistics.mean(len(r.split()) for r in replies)
    return scores


def tune(base, tokenizer, problems: list[dict], arm: dict, batch: int, seed: int):
    seed_everything(seed)
    model = copy.deepcopy(base)
    if arm["lora"]:
        model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear",
                                                 task_type="CAUSAL_LM"))
    prompts = [plain_prompt(p["question"]) for p in problems]
    answers = (generate(base, tokenizer, prompts, max_new_tokens=24, batch_size=64) if arm.get("own answers")
               else [" " + p["answer"] for p in problems])
    data = [encode_example(tokenizer, prompt, answer) for prompt, answer in zip(prompts, answers)]
    fit(model, data, TrainConfig(steps=arm["steps"], batch_size=batch, lr=arm["lr"], warmup_steps=2, seed=seed,
                                 progress=False), pad_token_id=tokenizer.pad_token_id)
    return model.eval()


def report(result: dict) -> str:
    before, rows, seeds, arms = result["pre-trained"], result["rows"], result["settings"]["seeds"], \
        list(result["settings"]["arms"])
    keys = list(before)
    general = [k for k in keys if k.startswith("general ")]  # absent from runs made before they were scored

    def values(arm: str, key: str) -> list[float]:
        return [next(r[key] for r in rows if r["arm"] == arm and r["seed"] == s) for s in seeds]

    def change(key: str, gaps: list[float]) -> list[float]:  # shares in points, word counts and KL as they are
        return gaps if key.endswith(" words") or key == "KL general" else [100 * g for g in gaps]

    width = max(16, *map(len, arms))

    def table(columns: list[str], names: list[str], title: str) -> list[str]:
        return ([f"{'arm':>{width}}  " + "  ".join(f"{n:>17}" for n in names) + f"   {title}",
                 f"{'pre-trained':>{width}}  " + "  ".join(f"{before[k]:>17.3f}" for k in columns)]
                + [f"{a:>{width}}  " + "  ".join(f"{mean_sd_text(values(a, k)):>17}" for k in columns) for a in arms])

    tasks = [k for k in keys if k not in general]
    lines = table(tasks, tasks, f"mean ± sd over {len(seeds)} seeds, {result['settings']['n_test']} prompts x "
                  f"{len(FAMILIES)} families")
    for a in arms:
        lines.append(f"{a} minus pre-trained (points): " + ", ".join(
            f"{k} {statistics.mean(100 * (v - before[k]) for v in values(a, k)):+.1f}" for k in tasks
            if k != "KL general"))
    if general:
        lines += [""] + table(general, [k.removeprefix("general ") for k in general],
                              f"{len(GENERAL_QA)} general questions; right and answered: share, words: mean")
        for a in arms:
            lines.append(f"{a} minus pre-trained: " + ", ".join(
                f"{k.removeprefix('general ')} {statistics.mean(change(k, [v - before[k] for v in values(a, k)])):+.1f}"
                for k in general))
    # one factor at a time: arms of one length differ only in the method, arms of one method only in the length
    pairs = [(f"full minus LoRA at {n} steps", f"full, {n} steps", f"LoRA, {n} steps") for n in (24, 96)]
    pairs += [(f"96 minus 24 steps with {m}", f"{m}, 96 steps", f"{m}, 24 steps") for m in ("LoRA", "full")]
    pairs += [(f"own minus task answers, {m}", f"{m}, 24 steps, own answers", f"{m}, 24 steps")  # the KL's reference
              for m in ("LoRA", "full")]
    for key in ["KL general", "few-shot exact", "zero-shot lenient"] + [k for k in general
                                                                         if not k.endswith(" answered")]:
        unit = "KL" if key == "KL general" else "words" if key.endswith(" words") else "points"
        lines.append(f"{key}, one factor at a time ({unit}, paired by seed):")
        for label, a, b in pairs:
            if a in arms and b in arms:
                gaps = change(key, [x - y for x, y in zip(values(a, key), values(b, key))])
                lines.append(f"  {label:>27}: " + paired_text(gaps, 3 if key == "KL general" else 1))
    tuned = [r for r in rows if "KL general" in r]
    if len(tuned) > 2:
        kl = [r["KL general"] for r in tuned]
        lines.append(f"KL general against each score over the {len(tuned)} tuned runs (Pearson r): " + ", ".join(
            f"{k} {statistics.correlation(kl, [r[k] for r in tuned]):+.2f}" for k in tasks if k != "KL general"))
    return "\n".join(lines)


def main() -> None:
    parser = run_parser(__doc__)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--n-test", type=int, default=32, help="held-out prompts per task family")
    parser.add_argument("--arms", nargs="+", choices=list(ARMS), default=DEFAULT_ARMS, metavar="ARM",
                        help="the tuned arms, by name (default: the first four): " + ", ".join(f'"{a}"' for a in ARMS))
    args = parser.parse_args()
    if print_saved_report(args, report):
        return
    tokenizer = load_tokenizer(args.model)
    base = load_model(args.model, device=pick_device()).eval()
    rng = random.Random(HELD_OUT_SEED)
    tasks = []
    for i, family in enumerate(FAMILIES):
        demos = task_examples(family, SHOTS, seed=HELD_OUT_SEED + 100 + i)
        for t in task_examples(family, args.n_test, seed=HELD_OUT_SEED + i):
            # the same three solved examples for every prompt of a family, in an order drawn per prompt
            tasks.append({**t, "few-shot prompt": few_shot_prompt(rng.sample(demos, SHOTS), t["prompt"])})
    arithmetic = arithmetic_problems(64, seed=HELD_OUT_SEED)  # the task tuned on, held out
    before = measure(base, tokenizer, tasks, arithmetic)
    print(json.dumps({"arm": "pre-trained", **before}), flush=True)
    rows = []
    for seed in args.seeds:
        # every arm's examples are a prefix of one draw, the same whichever arms run
        train = arithmetic_problems(max(a["steps"] for a in ARMS.values()) * args.batch, seed=seed,
                                    exclude=[p["question"] for p in arithmetic])
        for name, arm in ((a, ARMS[a]) for a in args.arms):
            model = tune(base, tokenizer, train[:arm["steps"] * args.batch], arm, args.batch, seed)
            rows.append({"arm": name, "seed": seed, **measure(model, tokenizer, tasks, arithmetic, base)})
            print(json.dumps(rows[-1]), flush=True)
            del model
    finish_run(args, {"pre-trained": before, "rows": rows}, report, arms={a: ARMS[a] for a in args.arms},
               shots=SHOTS)


if __name__ == "__main__":
    main()
