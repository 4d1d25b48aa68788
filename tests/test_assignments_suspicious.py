"""anlp_ft.assignments.suspicious: a static scan of the code students wrote, for the gradebook's ``suspicious:``
status. Ordinary lab code (every exercise of the real solutions included) gives nothing; each kind of tampering
graders have seen, or that the threat model names, is found in the right cell, on the right line."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from anlp_ft.assignments.suspicious import Finding, scan, summary

ROOT = Path(__file__).resolve().parents[1]


def found(src: str, cell: str = "ex1", *before: tuple[str, str]) -> list[tuple[str, int, str]]:
    return [(f.cell, f.line, f.kind) for f in scan([*before, (cell, textwrap.dedent(src).strip("\n"))])]


CLEAN = {
    "training loop": """
        import torch
        import torch.nn.functional as F
        from torch import nn

        model = nn.Linear(4, 2)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        model.train()
        for step in range(10):
            x, y = torch.randn(8, 4), torch.randint(0, 2, (8,))
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad()
        torch.backends.cuda.matmul.allow_tf32 = True
        """,
    "peft and tokenizer": """
        from peft import LoraConfig, get_peft_model
        cfg = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
        model = get_peft_model(model, cfg)
        model.print_trainable_parameters()
        tokenizer.pad_token = tokenizer.eos_token
        batch = tokenizer(["2+2=", "3+5="], return_tensors="pt", padding=True)
        with torch.no_grad():
            out = model.generate(**batch, max_new_tokens=8)
        texts = tokenizer.batch_decode(out, skip_special_tokens=True)
        model.config.use_cache = False
        model.lora_A = None
        setattr(model.get_submodule("layers.0"), "q_proj", model.lora_A)
        """,
    "plots and files": """
        import json
        import matplotlib.pyplot as plt
        from pathlib import Path
        fig, ax = plt.subplots()
        ax.plot([1, 2, 3], label="loss")
        ax.set_title("loss / step")
        ax.legend()
        plt.rcParams["figure.figsize"] = (6, 4)
        out = Path("out") / "x.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"loss": 1.0}))
        with open("notes.txt", "w") as f:
            f.write(f"{100 * 0.5:.1f}% of /step")
        rows = [line.split("/") for line in open("data/ratios.csv")]
        print("see " + "/".join(["a", "b"]))
        """,
    "a class with attributes": """
        import os
        os.environ["TOKENIZERS_PARALLELISM"] = "false"

        class Accumulator:
            def __init__(self, steps):
                self.steps, self.total = steps, 0.0
                self.history = []

            def add(self, value):
                self.total += value
                self.history.append(value)
                return self.total / max(len(self.history), 1)

        acc = Accumulator(4)
        F = Accumulator(2)  # a name the set-up cell gives torch.nn.functional, rebound by the student
        F.total = 1.0
        input = "What is 2+2?"
        print(acc.add(1.0), os.path.join("runs", "a"))
        """,
    "ipython display magics": """
        %matplotlib inline
        %load_ext autoreload
        %autoreload 2
        %time result = sum(range(10))
        %timeit -n 10 -r 1 sum(range(10))
        print(result % 3)
        """,
    "paths and numbers inside the folder": """
        import glob, os
        os.makedirs("checkpoints", exist_ok=True)
        files = sorted(glob.glob("out/*.json")) + sorted(Path("out").glob("*.json"))
        for step, path in enumerate(files):
            with open(os.path.join("runs", f"{step}.json"), "w") as fh:
                fh.write(Path(path).read_text())
        torch.save(model.state_dict(), os.path.join("out", "m.pt"))
        model.save_pretrained("./lora")
        plt.savefig(f"plots/{step}.png")
        ppl = math.exp(sum(losses) / len(losses))
        clean = "a/../b".replace("../", "")
        """,
    "a string that mentions magics": '''
        DOC = """
        !not a command
        %not a magic
        """
        ''',
}


@pytest.mark.parametrize("name", CLEAN)
def test_ordinary_lab_code_gives_nothing(name: str) -> None:
    assert found(CLEAN[name]) == []


def test_every_exercise_of_the_real_solutions_gives_nothing() -> None:
    cells = []
    for path in sorted((ROOT / "solutions").glob("*.ipynb")):
        nb = json.loads(path.read_text())
        cells += [(f"{path.stem[:2]}-{i}", "".join(c["source"])) for i, c in enumerate(nb["cells"])
                  if c["cell_type"] == "code" and "# BEGIN SOLUTION" in "".join(c["source"])]
    assert len(cells) > 10
    assert [str(f) for f in scan(cells)] == []


# The cheats graders have seen.
def test_json_dumps_wrapped_to_report_passed() -> None:
    src = """
        import json
        _real = json.dumps
        def _always_passed(obj, *a, **k):
            if isinstance(obj, dict) and "status" in obj:
                obj = {**obj, "status": "passed"}
            return _real(obj, *a, **k)
        json.dumps = _always_passed
        """
    [f] = scan([("ex2", textwrap.dedent(src).strip("\n"))])
    assert (f.cell, f.line, f.kind, str(f)) == ("ex2", 7, "patch", "ex2 line 7: patches json.dumps")
    assert summary([f]) == "suspicious: patches json.dumps (ex2)"


def test_solutions_located_from_the_package_and_execd() -> None:
    src = """
        import anlp_ft, glob, json, os
        root = os.path.dirname(os.path.dirname(anlp_ft.__file__))
        nb = json.load(open(glob.glob(os.path.join(root, "solutions", "05_*.ipynb"))[0]))
        cell = [c for c in nb["cells"] if "def peak" in "".join(c["source"])][0]
        exec("".join(cell["source"]))
        """
    assert found(src, "added-3") == [("added-3", 2, "package-path"), ("added-3", 3, "package-path"),
                                     ("added-3", 5, "exec")]


def test_three_detached_processes() -> None:
    src = """
        import subprocess, sys
        for i in range(3):
            subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
        """
    assert found(src, "added-12") == [("added-12", 1, "process"), ("added-12", 3, "process")]


def test_builtins_print_patched() -> None:
    assert found("import builtins\nbuiltins.print = lambda *a, **k: None") == [("ex1", 2, "patch")]


def test_ipython_input_transformer() -> None:
    src = "def f(lines):\n    return lines\nget_ipython().input_transformers_post.append(f)"
    assert found(src) == [("ex1", 3, "ipython")]


def test_settrace() -> None:
    assert found("import sys\n\ndef f(frame, event, arg):\n    return f\nsys.settrace(f)") == [("ex1", 5, "hook")]


def test_check_module_patched_through_an_alias() -> None:
    [f] = scan([("ex4", "import anlp_ft.assignments.checks as c\nc.require = lambda *a: None")])
    assert (f.line, f.kind, f.detail) == (2, "patch", "patches anlp_ft.assignments.checks.require")


# One cheat per kind and form.
@pytest.mark.parametrize("src, line", [
    ("import json as j\nj.dumps = str", 2),
    ("from anlp_ft.assignments import checks\nchecks.require = print", 2),
    ("import sys\nsetattr(sys, 'stdout', None)", 2),
    ("sys.stdout = open('log.txt', 'w')", 1),  # sys imported by the set-up cell
    ("torch.allclose = lambda *a, **k: True", 1),
    ("anlp_ft.results.expect = print", 1),
    ("__builtins__['print'] = len", 1),
    ("b = globals()['__builtins__']", 1),
    ("import builtins\ndelattr(builtins, 'input')", 2),
    ("m = __import__('json')\nm.loads = eval", 2),
    ("import json\njson.__dict__['dumps'] = str", 2),
    ("import json\nvars(json)['dumps'] = str", 2),
    ("import sys\nsys.modules['json'].dumps = str", 2),
    ("import json\nfor json.dumps in [str]:\n    pass", 2),
    ("import json\ndel json.dumps", 2),
    ("nn.Module.__call__ = lambda self, *a: 0", 1),
    ("nn = nn\nnn.Linear.forward = print", 2),  # rebinding a set-up name to itself
    ("def f():\n    global all\n    all = lambda xs: True", 2),
    ("all = lambda xs: True", 1),
    ("def isinstance(a, b):\n    return True", 1),
])
def test_patches(src: str, line: int) -> None:
    assert found(src) == [("ex1", line, "patch")]


def test_import_in_an_earlier_cell_names_the_module() -> None:
    assert found("j.dumps = str", "ex2", ("ex1", "import json as j")) == [("ex2", 1, "patch")]


def test_a_name_the_courses_own_cells_import_is_that_function_unless_the_student_binds_it() -> None:
    course = ["!pip install -q anlp-ft", "from anlp_ft.formatting import IGNORE_INDEX, encode_chat as enc"]
    call = "def build(tokenizer, messages):\n    return enc(tokenizer, messages)"
    assert [(f.cell, f.line, f.kind) for f in scan([("ex2", call)], course)] == [("ex2", 2, "reference")]
    assert scan([("ex2", call)]) == []  # without the course's cells, enc is nothing known
    own = "def enc(tokenizer, messages):\n    return {}\n" + call
    assert scan([("ex2", own)], course) == []


@pytest.mark.parametrize("src, line, kind", [
    ("import threading\nthreading.settrace(print)", 2, "hook"),
    ("import sys\nsys.setprofile(print)", 2, "hook"),
    ("import sys\nsys.addaudithook(print)", 2, "hook"),
    ("import sys\nsys.meta_path.insert(0, object())", 2, "hook"),
    ("import sys\nsys.modules['anlp_ft.assignments.checks'] = None", 2, "hook"),
    ("import importlib, json\nimportlib.reload(json)", 2, "hook"),
    ("import gc\nobjs = gc.get_objects()", 2, "hook"),
    ("import inspect\nframe = inspect.currentframe().f_back", 2, "hook"),
    ("from unittest import mock\nmock.patch('json.dumps', str).start()", 2, "hook"),
    ("import sys\nsys.path.insert(0, 'elsewhere')", 2, "hook"),
    ("import sys\nsys._getframe(1).f_globals['check'] = print", 2, "hook"),
    ("x = 1\nimport ctypes", 2, "hook"),
    ("ip = get_ipython()\nip.input_transformers_cleanup.append(str)", 2, "ipython"),
    ("get_ipython().ast_transformers.append(object())", 1, "ipython"),
    ("get_ipython().events.register('post_run_cell', print)", 1, "ipython"),
    ("get_ipython().set_custom_exc((AssertionError,), print)", 1, "ipython"),
    ("ip = get_ipython()\nip.showtraceback = print", 2, "ipython"),
    ("get_ipython().run_cell('x = 1')", 1, "ipython"),
    ("get_ipython().user_ns['check'] = print", 1, "ipython"),
    ("import os\nos.system('ls')", 2, "process"),
    ("from os import popen\npopen('ls')", 1, "process"),
    ("import os\nif os.fork() == 0:\n    os.execv('/bin/sh', ['sh'])", 2, "process"),
    ("from threading import Thread", 1, "process"),
    ("from concurrent.futures import ThreadPoolExecutor", 1, "process"),
    ("import signal\nsignal.signal(signal.SIGALRM, print)", 2, "process"),
    ("x = 1\n!pip install requests", 2, "process"),
    ("files = !ls\nprint(files)", 1, "process"),
    ("%%bash\nsleep 1000 &", 1, "process"),
    ("%%script bash\nls", 1, "process"),
    ("%system ls", 1, "process"),
    ("text = open('/etc/passwd').read()", 1, "path"),
    ("name = 'passwd'\ntext = open(f'/etc/{name}').read()", 2, "path"),
    ("from pathlib import Path\nsrc = Path('../solutions/05_memory_accounting.ipynb').read_text()", 2, "path"),
    ("import os\nos.listdir('..')", 2, "path"),
    ("import glob\nnbs = glob.glob('~/course/solutions/*.ipynb')", 2, "path"),
    ("import shutil\nshutil.copy('a.txt', '/tmp/a.txt')", 2, "path"),
    ("import numpy as np\nw = np.load('/srv/answers.npy')", 2, "path"),
    ("state = torch.load(Path('out') / '..' / '..' / 'ref.pt')", 1, "path"),
    ("from pathlib import Path\nroot = Path.cwd().parent", 2, "path"),
    ("%cd ..", 1, "path"),
    ("import os\nhome = os.environ['HOME']\nkey = open(home + '/.ssh/id_rsa').read()", 3, "package-path"),
    ("from pathlib import Path\ndata = (Path.home() / 'x').read_text()", 2, "package-path"),
    ("import sys\nsite = sys.prefix", 2, "package-path"),
    ("import inspect\nsrc = open(inspect.getfile(lab05)).read()", 2, "package-path"),
    ("code = 'x' + '=1'\nexec(code)", 2, "exec"),
    ("eval(input())", 1, "exec"),
    ("import importlib\nname = 'sub' + 'process'\nmod = importlib.import_module(name)", 3, "exec"),
    ("%run ../solutions/helper.py", 1, "exec"),
    ("import os\ngetattr(os, 'sys' + 'tem')('ls')", 2, "exec"),
    ("getattr(__import__('o' + 's'), 'system')('ls')", 1, "exec"),
    ("from types import FunctionType", 1, "exec"),
    ("import socket\ns = socket.socket()", 1, "network"),
    ("import urllib.request\nurllib.request.urlopen('http://x')", 1, "network"),
    ("import requests", 1, "network"),
    ("import http.client", 1, "network"),
    ("def f(:\n    pass", 1, "unparsable"),
])
def test_each_kind(src: str, line: int, kind: str) -> None:
    findings = found(src, "added-7")
    assert ("added-7", line, kind) in findings, [str(f) for f in scan([("added-7", src)])]


def test_code_inside_an_exec_literal_is_scanned_on_the_calls_line() -> None:
    assert found("x = 1\nexec('import json; json.dumps = str')") == [("ex1", 2, "patch")]
    assert found("exec('exec(\"import os; os.system(1)\")')") == [("ex1", 1, "process")]


def test_python_inside_magics_is_scanned_with_its_line_numbers() -> None:
    assert found("%%capture\n!pip install x\nimport json\njson.dumps = str") == [("ex1", 2, "process"),
                                                                                   ("ex1", 4, "patch")]
    assert found("x = %time sum(range(3))\nimport sys\nsys.settrace(None)") == [("ex1", 3, "hook")]
    assert found("%%writefile helper.py\nimport json\njson.dumps = str") == [("ex1", 3, "patch")]
    assert found("%%writefile notes.txt\njson.dumps = str") == []
    assert found("%%html\n<b>!ls</b>") == []


def test_a_cell_that_does_not_parse_is_reported_not_raised() -> None:
    [f] = scan([("ex3", "x = (1,\n")])
    assert (f.cell, f.kind) == ("ex3", "unparsable")
    for hostile in ["(" * 5000, "x = json" + ".a" * 1200 + "\nx.b = 1", "x = " + " + ".join(["'a'"] * 5000), "\x00"]:
        assert scan([("ex3", hostile)])[0].kind == "unparsable"


def test_summary_groups_by_what_in_order_and_is_short() -> None:
    findings = scan([("ex2", "import json\njson.dumps = str"), ("added-12", "import subprocess"),
                     ("ex3", "json.loads = eval\njson.dumps = repr")])
    assert summary(findings) == ("suspicious: patches json.dumps (ex2, ex3), starts processes (added-12), "
                                 "patches json.loads (ex3)")
    assert summary([]) == ""
    many = [Finding(f"added-{i}", 1, "patch", f"patches torch.function_number_{i}") for i in range(40)]
    text = summary(many)
    assert len(text) <= 200 and text.startswith("suspicious: patches torch.function_number_0 (added-0)")
    assert text.endswith("more") and text == summary(many)
    long = [Finding("x" * 300, 1, "process", "starts processes: x")]
    assert len(summary(long)) <= 200
    with pytest.raises(AttributeError):
        long[0].line = 2  # frozen
