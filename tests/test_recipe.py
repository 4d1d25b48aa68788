"""`anlp-ft train recipe.yaml`: Axolotl's keys validated before anything loads, each bad input a clear error that
writes nothing, the preview's marks, and recipes on alpaca and messages files training end to end (tiny model)."""
import copy
import json
import sys

import pytest
import torch
import yaml
from transformers import LlamaForCausalLM

from anlp_ft.cli import main
from anlp_ft.formatting import IGNORE_INDEX
from anlp_ft.recipe import RecipeError, load_recipe, parse_recipe
from anlp_ft.recipe_data import course_data, encode_rows, load_rows, marked_tokens, preview, write_jsonl
from anlp_ft.recipe_run import check_4bit, check_precision, prepare, set_chat_template
from tests.conftest import tiny_config


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory, tokenizer):
    path = tmp_path_factory.mktemp("tiny")
    torch.manual_seed(0)
    LlamaForCausalLM(tiny_config()).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """The course's arithmetic (alpaca) and chat (messages) tasks as files, small."""
    root = tmp_path_factory.mktemp("data")
    for task, n_train in (("arithmetic", 24), ("chat", 16)):
        train, test = course_data(task, n_train, 8, seed=0)
        write_jsonl(train, root / task / "train.jsonl")
        write_jsonl(test, root / task / "test.jsonl")
    return root


def recipe_file(tmp_path, tiny_dir, data, task="arithmetic", **keys):
    """A recipe for the tiny model on one task; keys override (None removes a key)."""
    kind = "alpaca" if task == "arithmetic" else "chat_template"
    raw = {"base_model": str(tiny_dir), "datasets": [{"path": str(data / task / "train.jsonl"), "type": kind}],
           "test_datasets": [{"path": str(data / task / "test.jsonl"), "type": kind}],
           "sequence_len": 128, "adapter": "lora", "lora_r": 4, "lora_alpha": 8, "lora_target_linear": True,
           "micro_batch_size": 4, "max_steps": 3, "learning_rate": "1e-3", "warmup_steps": 1, "bf16": False,
           "eval_batch_size": 8, "eval_max_new_tokens": 4, "output_dir": str(tmp_path / "run"),
           "verifier": "arithmetic" if task == "arithmetic" else "chat_rule"}
    raw.update(keys)
    raw = {k: v for k, v in raw.items() if v is not None}
    path = tmp_path / f"{task}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def error_of(path, **overrides) -> str:
    with pytest.raises(RecipeError) as e:
        prepare(load_recipe(path, overrides))
    return str(e.value)


# --- The recipe's keys


def test_unknown_key_is_named_with_the_nearest_known_key(tmp_path, tiny_dir, data):
    message = error_of(recipe_file(tmp_path, tiny_dir, data, learning_rat=1e-3, lora_targt_linear=True))
    assert "learning_rat: unknown key; did you mean 'learning_rate'?" in message
    assert "lora_targt_linear: unknown key; did you mean 'lora_target_linear'?" in message
    assert "2 problem(s)" in message  # every key problem at once


def test_axolotl_keys_the_course_does_not_support_are_named_not_ignored(tmp_path, tiny_dir, data):
    message = error_of(recipe_file(tmp_path, tiny_dir, data, deepspeed="zero3.json", sample_packing=True))
    assert "deepspeed: an Axolotl key this course does not support" in message
    assert "sample_packing: an Axolotl key this course does not support" in message
    # Left empty or false (as Axolotl's example configs list them) they ask for nothing, and are accepted.
    recipe = load_recipe(recipe_file(tmp_path, tiny_dir, data, wandb_project="", flash_attention=False, fsdp=[]))
    assert recipe.micro_batch_size == 4
    sharegpt = [{"path": str(data / "chat" / "train.jsonl"), "type": "sharegpt"}]
    assert "an Axolotl dataset type this course does not support" in error_of(
        recipe_file(tmp_path, tiny_dir, data, datasets=sharegpt))


def test_values_are_checked_and_yaml_number_strings_read_as_numbers(tmp_path, tiny_dir, data):
    recipe = load_recipe(recipe_file(tmp_path, tiny_dir, data))
    assert recipe.learning_rate == 1e-3  # PyYAML reads 1e-3 as a string
    message = error_of(recipe_file(tmp_path, tiny_dir, data, micro_batch_size="eight", adapter="qlora",
                                   lr_scheduler="one_cycle"))
    assert "micro_batch_size: expected a whole number, got 'eight'" in message
    with pytest.raises(RecipeError, match="needs load_in_4bit: true"):
        parse_recipe({"base_model": "m", "datasets": [{"path": "a.jsonl", "type": "alpaca"}], "adapter": "qlora",
                      "lora_target_linear": True})
    with pytest.raises(RecipeError, match="base_model: missing"):
        parse_recipe({"datasets": [{"path": "a.jsonl", "type": "alpaca"}]})


def test_command_line_overrides_win_over_the_file(tmp_path, tiny_dir, data):
    recipe = load_recipe(recipe_file(tmp_path, tiny_dir, data),
                         {"max_steps": 7, "learning_rate": 0.5, "seed": 3, "output_dir": "x", "verifier": None})
    assert (recipe.max_steps, recipe.learning_rate, recipe.seed, recipe.output_dir, recipe.micro_batch_size) == \
        (7, 0.5, 3, "x", 4)
    assert recipe.verifier is None  # None removes a key: `--set verifier=null`


# --- The data


def test_a_missing_dataset_is_named(tmp_path, tiny_dir, data):
    missing = [{"path": str(tmp_path / "nowhere.jsonl"), "type": "alpaca"}]
    message = error_of(recipe_file(tmp_path, tiny_dir, data, datasets=missing))
    assert "datasets[0].path: no such file" in message and "nowhere.jsonl" in message


def test_rows_lacking_what_their_type_needs_are_named(tmp_path, tiny_dir, data):
    rows = [{"instruction": "a", "output": "b"}, {"instruction": "c", "response": "d"}, {"instruction": "e"}]
    write_jsonl(rows, tmp_path / "bad.jsonl")
    message = error_of(recipe_file(tmp_path, tiny_dir, data, datasets=[{"path": str(tmp_path / "bad.jsonl"),
                                                                       "type": "alpaca"}]))
    assert "row 2 has no 'output' field (it has: instruction, response)" in message
    assert "2 of 3 rows have a problem" in message
    sharegpt_row = {"messages": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}]}
    write_jsonl([sharegpt_row], tmp_path / "sg.jsonl")
    sharegpt = {"path": str(tmp_path / "sg.jsonl"), "type": "chat_template"}
    assert "message 0 has role None" in error_of(recipe_file(tmp_path, tiny_dir, data, "chat", datasets=[sharegpt]))
    mapped = {**sharegpt, "message_property_mappings": {"role": "from", "content": "value"},
              "roles": {"user": ["human"], "assistant": ["gpt"]}}
    train, _ = load_rows(load_recipe(recipe_file(tmp_path, tiny_dir, data, "chat", datasets=[mapped])))
    assert train[0].prompt == [{"role": "user", "content": "hi"}]
    # Validation rows the verifier cannot grade.
    assert "test.jsonl row 1 lacks rule" in error_of(recipe_file(tmp_path, tiny_dir, data, verifier="chat_rule"))


def test_a_recipe_that_is_not_valid_yaml_names_the_line(tmp_path):
    (tmp_path / "bad.yaml").write_text("base_model: m\ndatasets:\n  - path: [a\n")
    with pytest.raises(RecipeError, match=r"bad.yaml: line \d+, column \d+: not valid YAML"):
        load_recipe(tmp_path / "bad.yaml")


def test_a_chat_template_that_does_not_match_the_tokenizer(tmp_path, tiny_dir, data):
    llama3 = ("{{ '<|begin_of_text|>' }}{% for m in messages %}{{ '<|start_header_id|>' + m['role'] + "
              "'<|end_header_id|>\\n\\n' + m['content'] + '<|eot_id|>' }}{% endfor %}")
    message = error_of(recipe_file(tmp_path, tiny_dir, data, "chat", chat_template="jinja", chat_template_jinja=llama3))
    assert "jinja does not match the tokenizer: its marker '<|begin_of_text|>' is 9 tokens" in message
    # A template in this vocabulary that does not say which turns are the assistant's.
    unmarked = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + ': ' + m['content'] + '<|im_end|>' }}"
                "{% endfor %}")
    message = error_of(recipe_file(tmp_path, tiny_dir, data, "chat", chat_template="jinja",
                                   chat_template_jinja=unmarked))
    assert "does not mark the assistant's turns with {% generation %}" in message
    # Turns that end with a token other than eos: a tuned model would never stop.
    message = error_of(recipe_file(tmp_path, tiny_dir, data, "chat", special_tokens={"eos_token": "<|im_start|>"}))
    assert "ends an assistant turn with '<|im_end|>', but the tokenizer's eos is '<|im_start|>'" in message


def test_an_example_longer_than_sequence_len_is_named(tmp_path, tiny_dir, data):
    message = error_of(recipe_file(tmp_path, tiny_dir, data, sequence_len=60))
    assert "train.jsonl row 1 is " in message and "longer than sequence_len 60" in message
    assert f"of {24 + 8} examples are" in message


def test_bf16_on_a_t4_and_4bit_where_it_cannot_run(tmp_path, tiny_dir, data, monkeypatch):
    recipe = load_recipe(recipe_file(tmp_path, tiny_dir, data, bf16=True))
    with pytest.raises(RecipeError, match=r"Tesla T4, compute capability 7\.5\) has no native bf16"):
        check_precision(recipe, "cuda", capability=(7, 5), card="Tesla T4")
    assert check_precision(recipe, "cuda", capability=(8, 0), card="A100") == "bf16"
    assert check_precision(load_recipe(recipe_file(tmp_path, tiny_dir, data, bf16="auto")), "cuda",
                           capability=(7, 5), card="Tesla T4") == "fp16"
    with pytest.raises(RecipeError, match="does not run on mps"):
        check_4bit("mps")
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # as if not installed
    monkeypatch.setitem(sys.modules, "bitsandbytes.functional", None)
    with pytest.raises(RecipeError, match="needs bitsandbytes, which is not installed"):
        check_4bit("cpu")


# --- The CLI: exit 2, no traceback, nothing written


def test_failed_checks_exit_2_and_write_nothing(tmp_path, tiny_dir, data, capsys):
    path = recipe_file(tmp_path, tiny_dir, data, sequence_len=60)
    assert main(["train", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "longer than sequence_len 60" in err and "Traceback" not in err
    assert main(["train", str(path), "--set", "learning_rat=1e-3", "--set", "sequence_len=128"]) == 2
    assert "did you mean 'learning_rate'" in capsys.readouterr().err
    assert main(["train", str(path), "--set", "sequence_len"]) == 2
    assert "expected KEY=VALUE" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


# --- Preview


def test_preview_marks_exactly_the_tokens_whose_label_is_not_ignored(tmp_path, tiny_dir, data, tokenizer):
    for task in ("arithmetic", "chat"):
        recipe = load_recipe(recipe_file(tmp_path, tiny_dir, data, task))
        train, val = load_rows(recipe)
        tokenizer = copy.deepcopy(tokenizer)
        set_chat_template(recipe, tokenizer, needed=task == "chat")  # the run's order: the template, then the rows
        encode_rows(tokenizer, train, recipe)
        shown = preview(tokenizer, train, 2).splitlines()
        for row in train[:2]:
            ids, labels = row.encoded["input_ids"], row.encoded["labels"]
            trained = [t for t, label in zip(ids, labels) if label != IGNORE_INDEX]
            assert 0 < len(trained) < len(ids)
            header = next(line for line in shown if line.startswith(f"--- {row.where} "))
            assert f"{len(ids)} tokens, {len(trained)} trained on" in header
            expected = "".join(f"[{tokenizer.decode([t])}]" if label != IGNORE_INDEX else tokenizer.decode([t])
                               for t, label in zip(ids, labels))
            assert expected.rstrip("\n") in "\n".join(shown)
            assert [m for _, m in marked_tokens(tokenizer, row.encoded)] == [label != IGNORE_INDEX for label in labels]


# --- End to end on the tiny model


def test_alpaca_recipe_trains_end_to_end_and_a_finished_run_is_kept(tmp_path, tiny_dir, data, capsys):
    path = recipe_file(tmp_path, tiny_dir, data)
    assert main(["train", str(path), "--check"]) == 0
    assert "[<|im_end|>]" in capsys.readouterr().out and not (tmp_path / "run").exists()
    assert main(["train", str(path)]) == 0
    out = tmp_path / "run"
    for name in ("adapter_model.safetensors", "adapter_config.json", "tokenizer.json", "loss.png", "recipe.yaml",
                 "report.md", "history.json"):
        assert (out / name).exists(), name
    history = json.loads((out / "history.json").read_text())
    assert len(history["loss"]) == 3 and history["num_processes"] == 1
    assert 0 <= history["eval"]["after"]["accuracy"] <= 1 and history["eval"]["before"]["validation loss"] > 0
    assert load_recipe(out / "recipe.yaml").to_dict() == load_recipe(path).to_dict()  # the resolved recipe reloads
    assert "| accuracy |" in (out / "report.md").read_text()
    stamp = (out / "history.json").read_text()
    assert main(["train", str(path), "--max-steps", "2"]) == 2  # a finished run is not overwritten ...
    assert "--overwrite" in capsys.readouterr().err and (out / "history.json").read_text() == stamp
    assert main(["train", str(path), "--max-steps", "2", "--overwrite"]) == 0  # ... unless asked
    assert len(json.loads((out / "history.json").read_text())["loss"]) == 2


def test_messages_recipe_trains_end_to_end(tmp_path, tiny_dir, data, capsys):
    path = recipe_file(tmp_path, tiny_dir, data, "chat", adapter=None, lora_target_linear=None, lora_r=None,
                       lora_alpha=None, max_steps=None, num_epochs=1, val_set_size=4, test_datasets=None)
    assert main(["train", str(path)]) == 0
    out = tmp_path / "run"
    history = json.loads((out / "history.json").read_text())
    assert len(history["loss"]) == 3  # one epoch: 12 training chats / 4 (4 held out by val_set_size)
    assert {"adherence", "accuracy", "validation loss"} <= set(history["eval"]["after"])
    assert (out / "model.safetensors").exists() and not (out / "adapter_config.json").exists()
    saved = json.loads((out / "tokenizer_config.json").read_text())
    assert "<|im_start|>" in (saved.get("chat_template") or (out / "chat_template.jinja").read_text())
    assert "adherence on 4 validation examples" in capsys.readouterr().out


def test_val_set_size_holds_out_seeded_rows(tmp_path, tiny_dir, data):
    recipe = load_recipe(recipe_file(tmp_path, tiny_dir, data, test_datasets=None, val_set_size=0.25))
    train, val = load_rows(recipe)
    assert (len(train), len(val)) == (18, 6)
    assert [r.where for r in load_rows(recipe)[1]] == [r.where for r in val]
    assert not {r.where for r in train} & {r.where for r in val}


def test_data_command_writes_the_labs_tasks(tmp_path, capsys):
    assert main(["data", "arithmetic", "--out", str(tmp_path / "a"), "--train", "10", "--test", "5"]) == 0
    rows = [json.loads(line) for line in (tmp_path / "a" / "train.jsonl").read_text().splitlines()]
    test = [json.loads(line) for line in (tmp_path / "a" / "test.jsonl").read_text().splitlines()]
    assert len(rows) == 10 and len(test) == 5 and set(rows[0]) == {"instruction", "input", "output", "answer"}
    assert not {r["instruction"] for r in rows} & {r["instruction"] for r in test}
    assert main(["data", "chat", "--out", str(tmp_path / "c"), "--train", "8", "--test", "4"]) == 0
    chat = json.loads((tmp_path / "c" / "test.jsonl").read_text().splitlines()[0])
    assert set(chat) == {"messages", "rule", "answer"}
