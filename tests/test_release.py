"""`anlp-ft release`: the student tree built from this repository, its pinned Colab links, and the leak check
catching each kind of planted leak."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from anlp_ft.cli import main
from anlp_ft.release import ReleaseError, check_release, colab_url, parse_repo_url, write_release

ROOT = Path(__file__).resolve().parents[1]
URL, OWNER, NAME, REF = "https://github.com/acme/ft-course", "acme", "ft-course", "v1.0"
BEGIN = re.compile(r"^[ \t]*#+[ \t]*BEGIN SOLUTION[ \t]*$")
END = re.compile(r"^[ \t]*#+[ \t]*END SOLUTION[ \t]*$")


def _cells(path: Path) -> list[dict]:
    return json.loads(path.read_text(encoding="utf-8"))["cells"]


def _text(cell: dict) -> str:
    return "".join(cell["source"])


def _notebooks(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for d in ("lectures", "labs") for p in (root / d).glob("*.ipynb"))


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> tuple[Path, list[str]]:
    out = tmp_path_factory.mktemp("release") / "student"
    return out, write_release(ROOT, out, URL, REF)


@pytest.fixture
def copy(release, tmp_path) -> Path:
    """A private copy of the release to plant a leak in."""
    return Path(shutil.copytree(release[0], tmp_path / "student"))


def _new_problems(out: Path, baseline: list[str]) -> list[str]:
    return [p for p in check_release(out, ROOT) if p not in baseline]


def test_release_holds_the_student_tree_only(release):
    out, _ = release
    top = {p.name for p in out.iterdir()}
    assert {"README.md", "anlp_ft", "lectures", "labs", "recipes", "pyproject.toml", "requirements.lock"} <= top
    assert not top & {"solutions", "tests", "benchmarks", ".git", "out", "Makefile", "CONTRIBUTING.md", ".ci"}
    assert ("LICENSE" in top) == (ROOT / "LICENSE").exists()
    assert _notebooks(out) == _notebooks(ROOT)
    assert not [p for p in out.rglob("*") if p.name in ("__pycache__", "out", "solutions") or p.suffix == ".pyc"]
    package = {p.relative_to(ROOT).as_posix() for p in (ROOT / "anlp_ft").rglob("*.py")}
    assert package == {p.relative_to(out).as_posix() for p in (out / "anlp_ft").rglob("*.py")}
    assert {p.name for p in (out / "recipes").iterdir()} == {p.name for p in (ROOT / "recipes").iterdir()}
    readme = (out / "README.md").read_text(encoding="utf-8")
    for rel in _notebooks(out):
        assert colab_url(OWNER, NAME, REF, rel) in readme
    assert f'pip install "anlp-ft @ git+{URL}@{REF}"' in readme and "solutions" not in readme


def test_every_badge_opens_its_own_notebook_and_every_install_is_pinned(release):
    out, _ = release
    for rel in _notebooks(out):
        cells, original = _cells(out / rel), _cells(ROOT / rel)
        text = "\n".join(_text(c) for c in cells)
        badges = re.findall(r"colab-badge\.svg\)\]\(([^)]+)\)", text)
        assert badges == [colab_url(OWNER, NAME, REF, rel)], rel
        installs = re.findall(r"pip install[^\n]*", text)
        assert installs and all(f'"anlp-ft @ git+{URL}@{REF}"' in line for line in installs), (rel, installs)
        assert "anlp-ft/anlp-ft" not in text, rel
        # Nothing else changes: same cells, same metadata, sources differ only on the rewritten lines.
        assert len(cells) == len(original)
        for new, old in zip(cells, original):
            assert {k: v for k, v in new.items() if k != "source"} == {k: v for k, v in old.items() if k != "source"}
            changed = [a for a, b in zip(_text(new).split("\n"), _text(old).split("\n")) if a != b]
            assert all(URL in line or f"{OWNER}/{NAME}" in line for line in changed), changed


def _course_copy(tmp_path: Path) -> Path:
    course = tmp_path / "course"
    for d in ("solutions", "labs", "lectures", "anlp_ft"):
        shutil.copytree(ROOT / d, course / d, ignore=shutil.ignore_patterns("__pycache__", "out"))
    shutil.copy(ROOT / "pyproject.toml", course)
    return course


def test_a_badge_opens_its_own_notebook_whatever_the_source_says(tmp_path):
    course = _course_copy(tmp_path)
    lab = course / "labs" / "01_finetuning_basics.ipynb"
    lab.write_text(lab.read_text(encoding="utf-8").replace("blob/main/labs/", "blob/dev/solutions/"), encoding="utf-8")
    out = tmp_path / "student"
    write_release(course, out, URL + ".git/")  # default ref: main
    cells = _cells(out / "labs" / "01_finetuning_basics.ipynb")
    assert colab_url(OWNER, NAME, "main", "labs/01_finetuning_basics.ipynb") in _text(cells[0])
    assert f"git+{URL}@main" in "".join(_text(c) for c in cells)


def test_release_is_pip_installable(release, tmp_path):
    pytest.importorskip("setuptools", reason="builds the wheel with this environment's setuptools, offline")
    src = shutil.copytree(release[0], tmp_path / "src")  # the build writes build/ and *.egg-info into its folder
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(tmp_path / "dist"), str(src)], check=True, capture_output=True)
    names = zipfile.ZipFile(next((tmp_path / "dist").glob("anlp_ft-*.whl"))).namelist()
    assert "anlp_ft/cli.py" in names and "anlp_ft/assignments/public/lab01.py" in names
    assert not [n for n in names if "solution" in n]


def test_refuses_a_non_empty_out_and_keeps_its_files(tmp_path, capsys):
    out = tmp_path / "student"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ReleaseError, match="not an empty folder.*remove it or choose a new OUT"):
        write_release(ROOT, out, URL)
    assert [p.name for p in out.iterdir()] == ["notes.txt"] and (out / "notes.txt").read_text() == "mine"
    assert main(["release", str(out), "--repo-url", URL, "--root", str(ROOT)]) == 2
    assert "not an empty folder" in capsys.readouterr().err


@pytest.mark.parametrize("url", ["http://github.com/acme/ft", "git@github.com:acme/ft.git", "https://gitlab.com/a/b",
                                 "https://github.com/acme", "https://github.com/acme/ft/tree/main", "acme/ft", ""])
def test_refuses_a_url_that_is_not_a_github_repository(url, tmp_path, capsys):
    with pytest.raises(ReleaseError, match=re.escape("https://github.com/OWNER/NAME")):
        write_release(ROOT, tmp_path / "student", url)
    assert not (tmp_path / "student").exists()
    assert main(["release", str(tmp_path / "student"), "--repo-url", url, "--root", str(ROOT)]) == 2
    assert "https://github.com/OWNER/NAME" in capsys.readouterr().err


def test_url_forms_and_refs(tmp_path):
    assert parse_repo_url("https://github.com/acme/ft-course") == ("acme", "ft-course")
    assert parse_repo_url("https://github.com/acme/ft.course.git") == ("acme", "ft.course")
    with pytest.raises(ReleaseError, match="--ref"):
        write_release(ROOT, tmp_path / "student", URL, ref="v1 ; rm")
    assert not (tmp_path / "student").exists()


def test_todays_release_is_clean(release):
    """Fails while the package ships a verbatim copy of a graded answer (see the problems listed)."""
    assert release[1] == []


def test_check_finds_a_copied_solution(copy, release):
    (copy / "solutions").mkdir()
    shutil.copy(ROOT / "solutions" / "01_finetuning_basics.ipynb", copy / "solutions")
    found = _new_problems(copy, release[1])
    assert any(p.startswith("solutions: a solutions path") for p in found)
    assert any("a cell tagged hidden-tests" in p for p in found)
    assert any("marker text 'BEGIN SOLUTION'" in p for p in found)
    assert any("the solution code of solutions/01_finetuning_basics.ipynb" in p for p in found)


def test_check_finds_hidden_tests_in_a_lab(copy, release):
    lab = copy / "labs" / "03_chat_tuning.ipynb"
    solution = json.loads((ROOT / "solutions" / "03_chat_tuning.ipynb").read_text(encoding="utf-8"))
    hidden = next(c for c in solution["cells"] if "hidden-tests" in c["metadata"].get("tags", []))
    untagged = dict(hidden, metadata={"anlp_ft": hidden["metadata"]["anlp_ft"]}, source="pass\n", outputs=[])
    nb = json.loads(lab.read_text(encoding="utf-8"))
    nb["cells"] += [dict(hidden, outputs=[]), untagged]
    lab.write_text(json.dumps(nb, indent=1))
    n = len(nb["cells"])
    found = _new_problems(copy, release[1])
    assert f"labs/03_chat_tuning.ipynb cell {n - 2}: a cell tagged hidden-tests" in found
    assert f"labs/03_chat_tuning.ipynb cell {n - 1}: hidden_tests_for metadata" in found


def test_check_finds_solution_code_pasted_into_the_package(copy, release):
    """The block is pasted as written (indented, with its comments): normalisation still finds it."""
    solution = ROOT / "solutions" / "04_knowledge_distillation.ipynb"
    block: list[str] = []
    for cell in _cells(solution):
        lines = _text(cell).split("\n")
        starts = [i for i, line in enumerate(lines) if BEGIN.match(line)]
        if cell["cell_type"] == "code" and starts:
            end = next(i for i in range(starts[0], len(lines)) if END.match(lines[i]))
            block = lines[starts[0] + 1:end]
            if len(block) >= 4:
                break
    target = copy / "anlp_ft" / "evaluate.py"
    target.write_text(target.read_text() + "\n\ndef _helper(*args):\n" + "\n".join(block) + "  # tidy\n")
    found = _new_problems(copy, release[1])
    assert found and all(p.startswith("anlp_ft/evaluate.py: the solution code of solutions/04_") for p in found)


def test_check_finds_outputs_markers_and_fixtures(copy, release):
    lab = copy / "labs" / "01_finetuning_basics.ipynb"
    nb = json.loads(lab.read_text(encoding="utf-8"))
    index = next(i for i, c in enumerate(nb["cells"]) if c["cell_type"] == "code")
    nb["cells"][index]["outputs"] = [{"name": "stdout", "output_type": "stream", "text": ["10.9%\n"]}]
    lab.write_text(json.dumps(nb, indent=1))
    (copy / "recipes" / "notes.yaml").write_text("a: 1\n### BEGIN HIDDEN TESTS\nb: 2\n")
    fixture = next(p for p in (ROOT / "tests" / "fixtures").rglob("*") if p.is_file())
    shutil.copy(fixture, copy / "anlp_ft" / "extra.py")
    found = _new_problems(copy, release[1])
    assert f"labs/01_finetuning_basics.ipynb cell {index}: a lab cell with outputs" in found
    assert "recipes/notes.yaml: marker line '### BEGIN HIDDEN TESTS'" in found
    assert any(p.startswith("anlp_ft/extra.py: a grader fixture") for p in found)


def test_check_command_exits_1_listing_the_problems(copy, release, capsys):
    (copy / "labs" / "README.md").write_text("# BEGIN SOLUTION\n")
    assert main(["release", "--check", str(copy), "--root", str(ROOT)]) == 1
    assert "labs/README.md: marker line '# BEGIN SOLUTION'" in capsys.readouterr().err


def test_release_command_fails_loudly_on_a_leak_and_keeps_the_files(tmp_path, capsys):
    """A course whose package contains a graded answer: the command writes, checks, exits 1 and lists it."""
    course = _course_copy(tmp_path)
    solution = course / "solutions" / "01_finetuning_basics.ipynb"
    code = next(_text(c) for c in _cells(solution) if c["cell_type"] == "code" and "BEGIN SOLUTION" in _text(c))
    (course / "anlp_ft" / "answers.py").write_text(code.replace("# BEGIN SOLUTION", "").replace("# END SOLUTION", ""))
    out = tmp_path / "student"
    assert main(["release", str(out), "--repo-url", URL, "--root", str(course)]) == 1
    assert "anlp_ft/answers.py: the solution code of solutions/01_finetuning_basics.ipynb" in capsys.readouterr().err
    assert (out / "anlp_ft" / "answers.py").exists() and (out / "README.md").exists()
