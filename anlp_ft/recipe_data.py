"""A recipe's data: read the files (or hub datasets), check each row has what its `type` needs, encode it with
the course's encode_example / encode_chat, split off validation, and show examples as the model sees them.

Row checks run before any tokenizer or model loads; encoding (and so the length check) needs the tokenizer only.
"""
from __future__ import annotations

import csv
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import PreTrainedTokenizerBase

from .formatting import IGNORE_INDEX, encode_chat, encode_example
from .recipe import VERIFIERS, DatasetSpec, Recipe, RecipeError

# Axolotl's alpaca prompts (axolotl.prompters.AlpacaPrompter, instruct style); the output follows directly.
ALPACA_PROMPT = ("Below is an instruction that describes a task, paired with an input that provides further context. "
                 "Write a response that appropriately completes the request.\n\n"
                 "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n")
ALPACA_PROMPT_NO_INPUT = ("Below is an instruction that describes a task. Write a response that appropriately "
                          "completes the request.\n\n### Instruction:\n{instruction}\n\n### Response:\n")
FILE_TYPES = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}


@dataclass
class Row:
    """One example: the source row, where it came from, and how it is prompted for generation."""
    data: dict
    spec: DatasetSpec
    where: str  # "data/train.jsonl row 3"
    encoded: dict | None = None  # input_ids and labels, once encode_rows has run

    @property
    def prompt(self) -> str | list[dict] | None:
        """What generation continues: the alpaca prompt, or a chat up to its last assistant turn."""
        if self.spec.type == "alpaca":
            return alpaca_prompt(self.data)
        if self.spec.type == "chat_template":
            messages = chat_messages(self.data, self.spec)
            last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
            return messages[:last]
        return None


def alpaca_prompt(row: dict) -> str:
    if row.get("input"):
        return ALPACA_PROMPT.format(instruction=row["instruction"], input=row["input"])
    return ALPACA_PROMPT_NO_INPUT.format(instruction=row["instruction"])


def chat_messages(row: dict, spec: DatasetSpec) -> list[dict]:
    """The row's messages as {role, content}, through message_property_mappings and roles."""
    role_key = spec.message_property_mappings.get("role", "role")
    content_key = spec.message_property_mappings.get("content", "content")
    names = {name: role for role, aliases in (spec.roles or {}).items() for name in aliases}
    return [{"role": names.get(m.get(role_key), m.get(role_key)), "content": m.get(content_key)}
            for m in row[spec.field_messages]]


# --- Reading


def _read_local(path: Path, kind: str, where: str) -> list[dict]:
    if kind == "csv":
        with path.open(newline="") as f:
            return [dict(r) for r in csv.DictReader(f)]
    if kind == "parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    text = path.read_text()
    try:  # a JSON array of rows ...
        rows = json.loads(text)
        if isinstance(rows, dict):
            rows = [rows]
    except json.JSONDecodeError:  # ... or JSON lines
        rows = []
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise RecipeError(f"{where}: {path} line {n} is not valid JSON ({e.msg}); each line of a "
                                      f".jsonl file is one JSON object") from None
    if not isinstance(rows, list):
        raise RecipeError(f"{where}: {path} holds neither JSON lines nor a JSON list of rows")
    return rows


def _read_hub(spec: DatasetSpec, where: str) -> list[dict]:
    from .runtime import hub_reachable

    if not hub_reachable():
        raise RecipeError(f"{where}.path: {spec.path!r} is neither a local file nor reachable: the hub is offline. "
                          f"Point path at a local .jsonl / .json / .csv / .parquet file, or connect.")
    from datasets import load_dataset

    try:
        return [dict(r) for r in load_dataset(spec.path, spec.name, split=spec.split)]
    except Exception as e:  # not found, gated, no such split: say which and carry the library's reason
        raise RecipeError(f"{where}: cannot load hub dataset {spec.path!r} (name {spec.name}, split "
                          f"{spec.split!r}): {type(e).__name__}: {str(e)[:300]}") from None


def read_dataset(spec: DatasetSpec, where: str) -> list[dict]:
    """The rows of one dataset entry: a local file when path has a data-file extension or exists, else the hub."""
    path = Path(spec.path).expanduser()
    kind = spec.ds_type or FILE_TYPES.get(path.suffix.lower())
    if path.is_dir():
        raise RecipeError(f"{where}.path: {spec.path} is a folder; point it at a .jsonl / .json / .csv / .parquet file")
    if path.exists() or kind is not None or spec.path.startswith((".", "~", "/")):
        if not path.exists():
            raise RecipeError(f"{where}.path: no such file {spec.path} (looked in {path.resolve().parent}); paths are "
                              f"relative to the folder you run from. Course data: `anlp-ft data arithmetic --out DIR`")
        if kind is None:
            raise RecipeError(f"{where}.path: cannot tell the format of {spec.path}; use a .jsonl / .json / .csv / "
                              f".parquet extension or set ds_type")
        if spec.split != "train":
            raise RecipeError(f"{where}.split: a local file has one split, 'train'; got {spec.split!r}")
        rows = _read_local(path, kind, where)
    else:
        rows = _read_hub(spec, where)
    if not rows:
        raise RecipeError(f"{where}: {spec.path} has no rows")
    return rows


# --- Row checks (no tokenizer needed)


def _row_problem(row: Any, spec: DatasetSpec) -> str | None:
    """What the row lacks for its type, or None."""
    if not isinstance(row, dict):
        return f"is not a mapping of fields but {type(row).__name__}"
    def text_field(name: str, optional: bool = False) -> str | None:
        if name not in row or (optional and row[name] is None):
            return None if optional else f"has no {name!r} field (it has: {', '.join(map(str, row)) or 'nothing'})"
        if not isinstance(row[name], str) or (not optional and not row[name].strip()):
            return f"field {name!r} must be non-empty text, got {row[name]!r:.60}"
        return None
    if spec.type == "alpaca":
        return text_field("instruction") or text_field("output") or text_field("input", optional=True)
    if spec.type == "completion":
        return text_field(spec.field)
    if spec.field_messages not in row:
        return f"has no {spec.field_messages!r} field (field_messages; it has: {', '.join(map(str, row))})"
    if not isinstance(row[spec.field_messages], list) or not all(isinstance(m, dict) for m in row[spec.field_messages]):
        return f"field {spec.field_messages!r} must be a list of messages ({{role, content}} mappings)"
    messages = chat_messages(row, spec)
    for i, m in enumerate(messages):
        if m["role"] not in ("system", "user", "assistant"):
            return (f"message {i} has role {m['role']!r}; roles must be system, user or assistant (map others "
                    f"with roles: {{user: [human], assistant: [gpt]}}, and field names with message_property_mappings)")
        if not isinstance(m["content"], str):
            return f"message {i} has no text content (got {m['content']!r:.60})"
    if not any(m["role"] == "assistant" for m in messages):
        return "has no assistant message: there is nothing to train on"
    return None


def load_rows(recipe: Recipe) -> tuple[list[Row], list[Row]]:
    """Read every dataset, check every row, and split (train, validation). Raises RecipeError naming the first
    bad row of a dataset and how many there are."""
    def read(key: str, specs: list[DatasetSpec]) -> list[Row]:
        out = []
        for i, spec in enumerate(specs):
            where = f"{recipe.path}: {key}[{i}]"
            rows = read_dataset(spec, where)
            bad = [(n, p) for n, r in enumerate(rows, 1) if (p := _row_problem(r, spec)) is not None]
            if bad:
                n, problem = bad[0]
                raise RecipeError(f"{where} ({spec.path}, type {spec.type}): row {n} {problem}"
                                  + (f"; {len(bad)} of {len(rows)} rows have a problem" if len(bad) > 1 else ""))
            out += [Row(r, spec, f"{spec.path} row {n}") for n, r in enumerate(rows, 1)]
        return out

    train = read("datasets", recipe.datasets)
    val = read("test_datasets", recipe.test_datasets) if recipe.test_datasets else []
    if recipe.val_set_size:
        k = int(recipe.val_set_size) if recipe.val_set_size >= 1 else round(recipe.val_set_size * len(train))
        if not 1 <= k < len(train):
            raise RecipeError(f"{recipe.path}: val_set_size {recipe.val_set_size} holds out {k} of {len(train)} rows; "
                              f"leave at least one row for training and one for validation")
        order = list(range(len(train)))
        random.Random(recipe.seed).shuffle(order)  # seeded, so a rerun validates on the same rows
        train, val = [train[i] for i in order[:-k]], [train[i] for i in order[-k:]]
    if recipe.verifier:
        _check_gradable(recipe, val)
    return train, val


def _check_gradable(recipe: Recipe, val: list[Row]) -> None:
    """Every validation row can be graded by the recipe's verifier: it has a prompt and the fields it reads."""
    from .data.chat import RULES

    need = VERIFIERS[recipe.verifier]
    for row in val:
        missing = [f for f in need if f not in row.data]
        if missing or row.prompt is None:
            raise RecipeError(f"{recipe.path}: verifier {recipe.verifier} needs validation rows with a prompt "
                              f"(type alpaca or chat_template) and the fields {', '.join(need)}; {row.where} "
                              + (f"lacks {', '.join(missing)}" if missing else f"is type {row.spec.type}"))
        if recipe.verifier == "chat_rule" and row.data["rule"] not in RULES:
            raise RecipeError(f"{recipe.path}: {row.where} has rule {row.data['rule']!r}; the chat_rule verifier "
                              f"knows {', '.join(RULES)}")


# --- Encoding (needs the tokenizer)


def encode_row(tokenizer: PreTrainedTokenizerBase, row: Row, train_on_inputs: bool) -> dict:
    """input_ids and labels of one row with the course's encoders (labels -100 where not trained on)."""
    if row.spec.type == "alpaca":
        encoded = encode_example(tokenizer, alpaca_prompt(row.data), row.data["output"])
        if train_on_inputs:
            encoded["labels"] = list(encoded["input_ids"])
        return encoded
    if row.spec.type == "completion":
        return encode_example(tokenizer, "", row.data[row.spec.field])  # every token is trained on
    return encode_chat(tokenizer, chat_messages(row.data, row.spec), assistant_only=not train_on_inputs)


def encode_rows(tokenizer: PreTrainedTokenizerBase, rows: list[Row], recipe: Recipe) -> list[dict]:
    """Encode every row; an example longer than sequence_len is an error naming the row and its token count."""
    too_long = []
    for row in rows:
        try:
            row.encoded = encode_row(tokenizer, row, recipe.train_on_inputs)
        except ValueError as e:  # the course's encoders say what is wrong; add where
            raise RecipeError(f"{recipe.path}: {row.where}: {e}") from None
        if len(row.encoded["input_ids"]) > recipe.sequence_len:
            too_long.append(row)
    if too_long:
        first, longest = too_long[0], max(len(r.encoded["input_ids"]) for r in too_long)
        raise RecipeError(f"{recipe.path}: {first.where} is {len(first.encoded['input_ids'])} tokens, longer than "
                          f"sequence_len {recipe.sequence_len} ({len(too_long)} of {len(rows)} examples are, the "
                          f"longest {longest}); raise sequence_len (at most the model's context) or shorten them")
    return [r.encoded for r in rows]


# --- Preview: the examples as the model sees them


def marked_tokens(tokenizer: PreTrainedTokenizerBase, encoded: dict) -> list[tuple[str, bool]]:
    """Each token's text and whether it is trained on (its label is not -100)."""
    return [(tokenizer.decode([t]), label != IGNORE_INDEX) for t, label in zip(encoded["input_ids"], encoded["labels"])]


def preview(tokenizer: PreTrainedTokenizerBase, rows: list[Row], n: int) -> str:
    """The first n examples decoded token by token, each trained-on token in [brackets]: Axolotl's advice to
    decode preprocessed rows to catch silent masking bugs, in one flag."""
    out = []
    for row in rows[:n]:
        tokens = marked_tokens(tokenizer, row.encoded)
        trained = sum(m for _, m in tokens)
        out.append(f"--- {row.where} ({row.spec.type}): {len(tokens)} tokens, {trained} trained on, in [brackets]")
        out.append("".join(f"[{text}]" if m else text for text, m in tokens))
    return "\n".join(out)


# --- The course's tasks as files a recipe reads, like a user's own data


def write_jsonl(rows: list[dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def course_data(task: str, n_train: int, n_test: int, seed: int) -> tuple[list[dict], list[dict]]:
    """(train, test) rows of a course task, built as its lab builds them.

    arithmetic: lab 01's disjoint step-by-step problems as alpaca rows, plus their `answer` (for the verifier).
    chat: lab 03's chats (a quarter two-turn recall chats) and held-out single-turn chats whose (rule, question)
    never occurs in training, as messages rows with their `rule` and `answer`.
    """
    if task == "arithmetic":
        from .data.arithmetic import train_test_problems

        train, test = train_test_problems(n_train, n_test, seed=seed)
        return [[{"instruction": p["question"], "input": "", "output": p["solution"], "answer": p["answer"]}
                 for p in split] for split in (train, test)]
    if task == "chat":
        from .data.chat import make_chats, recall_chats

        train = make_chats(n_train - n_train // 4, seed=seed) + recall_chats(n_train // 4, seed=seed)
        random.Random(seed).shuffle(train)
        seen = {(c["rule"], c["messages"][1]["content"]) for c in train}
        test = [c for c in make_chats(4 * n_test, seed=seed + 1)
                if (c["rule"], c["messages"][1]["content"]) not in seen]
        if len(test) < n_test:
            raise ValueError(f"only {len(test)} held-out chats differ from the training chats; ask for fewer")
        return train, test[:n_test]
    raise ValueError(f"unknown course task {task!r}; known: arithmetic, chat")
