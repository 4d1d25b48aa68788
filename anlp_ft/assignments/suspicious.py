"""Static evidence of tampering in the code a student wrote, for the gradebook's ``suspicious: ...`` status.

Nothing here changes points: it points a human at cells whose code reaches into the interpreter the hidden tests
share (patched modules or builtins, trace hooks, IPython hooks), into files outside the submission's folder, into
processes or the network. A static scan can be evaded (computed names,
objects passed through containers or functions); it aims to be cheap and silent on ordinary lab code.
"""

from __future__ import annotations

import ast
import builtins
import functools
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

PHRASES = {  # kind -> the summary's words; "patch" findings are summarized by their own detail
    "patch": "", "hook": "installs interpreter hooks", "ipython": "hooks IPython", "process": "starts processes",
    "path": "reads paths outside its folder", "package-path": "reads paths derived from the installed package/home",
    "exec": "runs generated code", "network": "uses the network", "unparsable": "does not parse",
    "reference": "calls the course's own version of an exercise"}
# Dotted names, resolved through imports and aliases, that are evidence wherever referenced ("x*": any x prefix).
RULES = {kind: tuple(words.split()) for kind, words in {
    "hook": """sys.settrace sys.setprofile threading.settrace* threading.setprofile* sys.addaudithook sys.meta_path
        sys.path_hooks sys.path_importer_cache sys.path.append sys.path.insert sys.path.extend sys.modules.pop
        sys.modules.update sys.modules.setdefault sys.monitoring sys.excepthook sys.displayhook sys._getframe
        sys._current_frames importlib.reload imp gc.get_objects gc.get_referrers gc.get_referents inspect.currentframe
        inspect.stack inspect.trace inspect.getouterframes ctypes _ctypes cffi unittest.mock""",
    "ipython": """get_ipython() IPython.core.interactiveshell IPython.core.inputtransformer* IPython.core.magic
        ipykernel""",
    "process": """subprocess os.system os.popen os.fork* os.exec* os.spawn* os.posix_spawn* os.kill* pty multiprocessing
        torch.multiprocessing threading.Thread threading.Timer _thread concurrent.futures signal.signal signal.alarm
        signal.setitimer asyncio.create_subprocess_* pexpect""",
    "package-path": """inspect.getfile inspect.getsource* inspect.getabsfile sys.prefix sys.exec_prefix sys.base_prefix
        sys.base_exec_prefix site sysconfig pathlib.Path.home importlib.util.find_spec importlib.resources
        importlib.metadata pkgutil""",
    "exec": """runpy marshal codeop zipimport types.CodeType types.FunctionType code.Interactive*
        importlib.util.spec_from_file_location importlib.util.module_from_spec importlib.machinery""",
    "network": """socket urllib.request urllib.urlopen urllib3 requests http.client http.server httpx aiohttp ftplib
        smtplib telnetlib paramiko""",
    # Package functions that compute what a graded exercise asks for (the lectures and recipes need them):
    # used in a student's cell, they are evidence for a human, whatever the judges say.
    "reference": """anlp_ft.memory_measure.forward_retained_bytes anlp_ft.memory_measure.measure_training_step
        anlp_ft.memory.memory_breakdown anlp_ft.memory.activation_bytes anlp_ft.formatting.encode_chat
        anlp_ft.formatting.training_template anlp_ft.formatting.SMOLLM2_TEMPLATE
        anlp_ft.formatting.CHATML_TEMPLATE"""}.items()}
TAINT = (*RULES["package-path"], "os.environ", "os.getenv", "os.path.expanduser", "os.path.expandvars")
SETTINGS = ("os.environ", "torch.backends", "torch._dynamo.config", "matplotlib.rcParams", "matplotlib.pyplot.rcParams",
            "pandas.options")  # module state that lab code sets legitimately
ATTR_KINDS = {  # attribute names that are evidence on any object
    **dict.fromkeys("""f_back f_globals f_locals f_builtins tb_frame gi_frame cr_frame __globals__ __code__ __closure__
        __subclasses__ __defaults__ __kwdefaults__""".split(), "hook"),
    **dict.fromkeys("__file__ __path__ __spec__ __loader__ __cached__".split(), "package-path"),
    **dict.fromkeys("""input_transformers_cleanup input_transformers_post input_transformer_manager input_splitter
        ast_transformers set_custom_exc custom_exceptions showtraceback _showtraceback showsyntaxerror run_cell
        run_cell_async run_line_magic run_cell_magic register_magic_function register_magics magics_manager user_ns
        user_global_ns set_hook""".split(), "ipython")}
EXEC_CALLS = {"builtins.exec", "builtins.eval", "builtins.compile", "builtins.__import__", "importlib.import_module"}
SETATTR_CALLS = {"builtins.setattr", "builtins.delattr", "builtins.object.__setattr__", "builtins.type.__setattr__"}
PATH_FUNCS = set("""open Path PurePath PosixPath listdir scandir walk glob iglob rglob load loadtxt genfromtxt fromfile
    save savez savetxt read_csv read_json read_parquet read_text read_bytes write_text write_bytes join exists isfile
    isdir stat chdir copy copy2 copyfile copytree rmtree move remove unlink rename mkdir makedirs savefig
    load_from_disk save_to_disk to_csv to_json FileIO read read_notebook load_dataset from_pretrained save_pretrained
    abspath realpath getsize access symlink""".split())
PATH_MAKERS = set("""Path PurePath PosixPath join joinpath dirname abspath realpath relpath normpath expanduser
    expandvars resolve absolute str fspath glob iglob rglob listdir get getenv getfile getsourcefile with_name
    with_suffix""".split())  # calls whose result is a path made of their arguments
CLIMBERS = {"cwd", "getcwd", "home", "resolve", "absolute", "abspath", "realpath", "expanduser"}
SHADOWED = set("""all any len isinstance issubclass abs round print bool float int str repr hasattr getattr setattr
    callable AssertionError Exception exec eval compile open super sorted globals vars __import__ __name__""".split())
KNOWN = {  # names the protected set-up cells bind: student code uses them without importing
    **{m: m for m in """sys os json builtins subprocess socket ctypes threading multiprocessing importlib inspect gc
        shutil glob pathlib io signal pty runpy marshal site pkgutil urllib requests http math random re time copy
        statistics warnings torch transformers peft datasets anlp_ft numpy get_ipython""".split()},
    "np": "numpy", "F": "torch.nn.functional", "nn": "torch.nn", "plt": "matplotlib.pyplot", "pd": "pandas",
    "Path": "pathlib.Path", "__builtins__": "builtins", "reference": "anlp_ft.lora", "memory": "anlp_ft.memory",
    "memory_measure": "anlp_ft.memory_measure", "distill": "anlp_ft.distill", "Checker": "anlp_ft.assignments.Checker",
    "attempt": "anlp_ft.assignments.attempt", **{f"lab0{i}": f"anlp_ft.assignments.public.lab0{i}" for i in range(9)}}
SHELL_MAGICS = set("bash sh script system sx sc perl ruby python python2 python3 pypy pip conda mamba alias".split())
PY_MAGICS = {"time", "timeit", "prun", "capture"}  # their argument (or cell body) is Python: scanned too
MAGIC = re.compile(r"^(\s*)(?:([\w.,\s\[\]]+?)\s*=\s*)?(!!?|%%?)(\w*)(.*)$")
Note = tuple[int, str, str]  # (line, kind, what) found before the tree exists


@dataclass(frozen=True)
class Finding:
    cell: str
    line: int
    kind: str
    detail: str

    def __str__(self) -> str:
        return f"{self.cell} line {self.line}: {self.detail}"


@functools.cache
def _regex(patterns: tuple[str, ...]) -> re.Pattern[str]:
    return re.compile("|".join(re.escape(p[:-1]) + ".*" if p.endswith("*") else re.escape(p) + r"(\..*)?"
                               for p in patterns))


def _match(name: str, patterns: tuple[str, ...]) -> bool:
    """name is one of patterns or inside one ("x*" matches any name that starts with x)."""
    return _regex(patterns).fullmatch(name) is not None


def _outside(s: str, start: bool) -> bool:
    """A literal that climbs (anywhere in a path), or is absolute (where it starts a path)."""
    return bool(re.search(r"(^|[/\\])\.\.([/\\]|$)", s.strip()) or start and re.match(r"/|~|[A-Za-z]:[/\\]", s.strip()))


def _path_parts(node: ast.AST, start: bool = True) -> Iterator[tuple[ast.AST, bool]]:
    """The pieces a path expression is made of, each with whether it begins the path (a later absolute piece of
    join() or / restarts it). Calls are entered only where they make paths, not where they read data."""
    yield node, start
    if isinstance(node, ast.JoinedStr):
        for i, v in enumerate(node.values):
            yield from _path_parts(v.value if isinstance(v, ast.FormattedValue) else v, start and i == 0)
    elif isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Div)):
        yield from _path_parts(node.left, start)
        yield from _path_parts(node.right, isinstance(node.op, ast.Div))
    elif isinstance(node, (ast.Attribute, ast.Subscript)):
        yield from _path_parts(node.value, start)
    elif isinstance(node, ast.Call):
        yield from _path_parts(node.func, start)
        name = getattr(node.func, "attr", None) or getattr(node.func, "id", None)
        for a in [*node.args, *(k.value for k in node.keywords)] if name in PATH_MAKERS else []:
            yield from _path_parts(a, start)


def _imported(node: ast.Import | ast.ImportFrom) -> list[tuple[str, str]]:
    """(name bound, dotted name) for each name an import statement binds ("*" for a star import)."""
    if isinstance(node, ast.Import):
        return [(a.asname or a.name.split(".")[0], a.name if a.asname else a.name.split(".")[0]) for a in node.names]
    base = "." * node.level + (node.module or "")
    return [(a.asname or a.name, base if a.name == "*" else f"{base}.{a.name}") for a in node.names]


def _literal(node: ast.AST | None) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


class _Names:
    """What names mean across all the student's cells (the kernel shares one namespace, so scopes are merged)."""

    def __init__(self, given: dict[str, str] | None = None) -> None:
        self.given = given or {}  # names the course's own cells import: meant unless the student binds them
        self.modules: dict[str, str] = {}  # name -> dotted origin: imports and aliases (j = json, ip = get_ipython())
        self.local: set[str] = set()  # bound otherwise: never taken for a set-up module or a builtin
        self.tainted: set[str] = set()  # assigned from package/home-derived paths

    def bind(self, trees: Sequence[ast.AST]) -> None:
        try:
            self._bind([n for tree in trees for n in ast.walk(tree)])
        except RecursionError:  # hostile nesting, reported by the scan itself
            pass

    def _bind(self, nodes: list[ast.AST]) -> None:
        aliasing = {id(t) for n in nodes if isinstance(n, ast.Assign) and isinstance(n.value, (ast.Name, ast.Attribute))
                    for t in n.targets}  # `nn = nn` must not hide the set-up's nn: decided with the aliases below
        for node in nodes:  # locals first: then aliases resolve against them
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                self.modules.update((bound, full) for bound, full in _imported(node) if bound != "*")
            elif isinstance(node, (ast.Name, ast.arg, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                if not isinstance(node, ast.Name) or isinstance(node.ctx, ast.Store) and id(node) not in aliasing:
                    self.local.add(getattr(node, "id", None) or getattr(node, "arg", None) or node.name)
        for _ in range(3):  # aliases of aliases
            for node in nodes:
                if isinstance(node, (ast.Assign, ast.AnnAssign, ast.NamedExpr)) and node.value is not None:
                    for t in getattr(node, "targets", None) or [node.target]:
                        if isinstance(t, ast.Name) and (r := self.resolve(node.value)) is not None:
                            self.modules[t.id] = r
                        elif isinstance(t, ast.Name) and any(self.derived(n) for n, _ in _path_parts(node.value)):
                            self.tainted.add(t.id)

    def resolve(self, node: ast.AST) -> str | None:
        """The dotted name an expression stands for when it is rooted in a module, builtins or IPython."""
        if isinstance(node, ast.Name):
            if node.id in self.modules or node.id in self.local:
                return self.modules.get(node.id)
            return self.given.get(node.id) or KNOWN.get(node.id) or \
                (f"builtins.{node.id}" if hasattr(builtins, node.id) else None)
        if isinstance(node, ast.Attribute):
            return f"{r}.{node.attr}" if (r := self.resolve(node.value)) else None
        if isinstance(node, ast.Subscript) and self.resolve(node.value) == "sys.modules":
            return _literal(node.slice)
        if isinstance(node, ast.Call) and (f := self.resolve(node.func)):
            first, second = (node.args + [None, None])[:2]
            if f in ("get_ipython", "IPython.get_ipython", "IPython.core.getipython.get_ipython"):
                return "get_ipython()"
            if f in ("builtins.__import__", "importlib.import_module"):
                return _literal(first)
            if f == "builtins.getattr" and (r := self.resolve(first)) and _literal(second):
                return f"{r}.{_literal(second)}"
            if f == "builtins.vars" and first is not None and (r := self.resolve(first)):
                return f"{r}.__dict__"
        return None

    def derived(self, node: ast.AST) -> str | None:
        """What makes this sub-expression a package/home-derived path, if anything."""
        if isinstance(node, ast.Name) and (node.id in self.tainted or node.id == "__file__"):
            return node.id
        if isinstance(node, ast.Attribute) and ATTR_KINDS.get(node.attr) == "package-path":
            return f".{node.attr}"
        r = self.resolve(node) if isinstance(node, (ast.Name, ast.Attribute, ast.Call)) else None
        return r if r and _match(r, TAINT) else None


class _Scanner(ast.NodeVisitor):
    def __init__(self, names: _Names, cell: str, out: list[Finding], line: int | None = None) -> None:
        self.names, self.cell, self.out, self.line = names, cell, out, line  # line: all findings there (exec'd text)

    def flag(self, node: ast.AST, kind: str, detail: str) -> None:
        detail = detail if kind == "patch" else f"{PHRASES[kind]}: {detail}"
        self.out.append(Finding(self.cell, self.line or getattr(node, "lineno", 1), kind, detail[:120]))

    def rules(self, node: ast.AST, r: str) -> None:
        if ".__dict__" in r:
            self.flag(node, "patch", f"touches {r}")
        for kind in (kind for kind, patterns in RULES.items() if _match(r, patterns)):
            self.flag(node, kind, r)

    def patched(self, node: ast.AST, owner: str, what: str) -> None:
        if owner.startswith("get_ipython()"):
            self.flag(node, "ipython", f"{owner}.{what}")
        elif owner == "sys.modules":
            self.flag(node, "hook", f"sys.modules[{what}]")
        elif not _match(f"{owner}.{what}", SETTINGS):
            self.flag(node, "patch", f"patches {owner.removesuffix('.__dict__')}.{what}")

    def visit_Import(self, node: ast.Import | ast.ImportFrom) -> None:
        for name in [a.name for a in node.names] if isinstance(node, ast.Import) else [f for _, f in _imported(node)]:
            self.rules(node, name)

    visit_ImportFrom = visit_Import

    def visit_Global(self, node: ast.Global) -> None:
        for name in sorted(SHADOWED.intersection(node.names)):
            self.flag(node, "patch", f"shadows builtin {name}")

    def visit_Constant(self, node: ast.Constant) -> None:
        if node.value == "__builtins__":
            self.flag(node, "patch", "touches __builtins__")

    def visit_Name(self, node: ast.Name) -> None:
        if node.id == "__file__":
            self.flag(node, "package-path", "__file__")
        elif isinstance(node.ctx, ast.Load) and (r := self.names.resolve(node)):
            self.rules(node, r)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if isinstance(node.ctx, (ast.Store, ast.Del)) and (owner := self.names.resolve(node.value)):
            self.patched(node, owner, node.attr)
        if kind := ATTR_KINDS.get(node.attr):
            self.flag(node, kind, f".{node.attr}")
        elif node.attr == "register" and getattr(node.value, "attr", None) == "events":
            self.flag(node, "ipython", "events.register")
        elif node.attr in ("parent", "parents") and self._climbs(node.value):
            self.flag(node, "path", f"climbs with .{node.attr}")
        if isinstance(node.ctx, ast.Load) and (r := self.names.resolve(node)):
            return self.rules(node, r)  # the whole chain is judged: its prefixes are not judged again
        self.generic_visit(node)

    def visit_Subscript(self, node: ast.Subscript) -> None:
        if isinstance(node.ctx, (ast.Store, ast.Del)) and (owner := self.names.resolve(node.value)):
            self.patched(node, owner, _literal(node.slice) or "[...]")
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        f, (first, second) = self.names.resolve(node.func) or "", (node.args + [None, None])[:2]
        if r := self.names.resolve(node):
            self.rules(node, r)
        if f in EXEC_CALLS and (src := _literal(first)) is None:
            self.flag(node, "exec", f"{f.removeprefix('builtins.')}(<computed>)")
        elif f in ("builtins.exec", "builtins.eval", "builtins.compile") and src is not None:  # code in a literal
            _scan_source(src, self.cell, self.names, self.out, self.line or node.lineno)
        elif f in SETATTR_CALLS and first is not None and (owner := self.names.resolve(first)):
            self.patched(node, owner, _literal(second) or "<computed>")
        elif f == "builtins.getattr" and second is not None and _literal(second) is None and \
                (owner := self.names.resolve(first)) in ("builtins", "os", "sys", "subprocess", "importlib"):
            self.flag(node, "exec", f"getattr({owner}, <computed>)")
        last = (f or getattr(node.func, "attr", None) or getattr(node.func, "id", "")).rsplit(".", 1)[-1]
        if last in PATH_FUNCS and _literal(getattr(node.func, "value", None)) is None:  # not "sep".join(...)
            self._path_args([*node.args, *(k.value for k in node.keywords)])
        elif last == "dirname" and self._climbs(node):
            self.flag(node, "path", "climbs with dirname")
        self.generic_visit(node)

    def visit_BinOp(self, node: ast.BinOp) -> None:
        if isinstance(node.op, ast.Div) and any(isinstance(n, (ast.Constant, ast.JoinedStr)) for n in
                                                (node.left, node.right)):  # pathlib's /, not arithmetic
            self._path_args([node])
        self.generic_visit(node)

    def _path_args(self, args: list[ast.AST]) -> None:
        for arg in args:
            for n, start in _path_parts(arg):
                if (s := _literal(n)) is not None and _outside(s, start):
                    self.flag(n, "path", repr(s[:60]))
                elif src := self.names.derived(n):
                    self.flag(n, "package-path", src)

    def _climbs(self, node: ast.AST) -> bool:
        return any(isinstance(n, ast.Call) and (getattr(n.func, "attr", None) or getattr(n.func, "id", None)) in
                   CLIMBERS for n in ast.walk(node))


def _strip_magics(src: str) -> tuple[str | None, list[Note]]:
    """IPython syntax to plain Python with the same line numbers, plus what the magics themselves do; None for
    the text when the cell's body is not Python (``%%bash``, ``%%html``; a ``%%writefile x.py`` body is)."""
    lines, notes = src.split("\n"), []
    first = next((i for i, s in enumerate(lines) if s.strip()), 0)
    for i, line in enumerate(lines):
        if not (m := MAGIC.match(line)):
            continue
        indent, target, bang, name, rest = m.groups()
        command, keep = f"{bang}{name}{rest}".strip()[:60], "pass"
        if bang.startswith("!") or name in SHELL_MAGICS:
            notes.append((i + 1, "process", command))
        elif name in ("run", "load", "loadpy", "macro") or name == "load_ext" and rest.strip() != "autoreload":
            notes.append((i + 1, "exec", command))
        elif name in ("cd", "pushd", "writefile", "save", "logstart") and any(_outside(w, True) for w in rest.split()):
            notes.append((i + 1, "path", command))
        elif name in PY_MAGICS and bang == "%":
            keep = re.sub(r"^\s*(?:-\w+(?:\s+\d+)?\s+)*", "", rest).strip() or "pass"  # drop %timeit's options
        if bang == "%%" and i == first and name not in PY_MAGICS and not (name == "writefile" and rest.endswith(".py")):
            return None, notes
        lines[i] = indent + (f"{target} = {'None' if keep == 'pass' else keep}" if target else keep)
    return "\n".join(lines), notes


def _parse(src: str) -> tuple[ast.AST | None, list[Note]]:
    """The cell's tree (None when there is no Python to scan) and what was found on the way."""
    try:
        return ast.parse(src), []
    except (SyntaxError, ValueError, RecursionError, MemoryError):  # IPython syntax, or broken, or hostile
        text, notes = _strip_magics(src)
    try:
        return (ast.parse(text) if text is not None else None), notes
    except (SyntaxError, ValueError, RecursionError, MemoryError) as e:
        return None, [*notes, (getattr(e, "lineno", None) or 1, "unparsable", getattr(e, "msg", type(e).__name__))]


def _scan_tree(tree: ast.AST | None, notes: list[Note], cell: str, names: _Names, out: list[Finding],
               line: int | None = None) -> None:
    out.extend(Finding(cell, line or n, kind, f"{PHRASES[kind]}: {what}") for n, kind, what in notes)
    if tree is None:
        return
    scanner, stack = _Scanner(names, cell, out, line), list(getattr(tree, "body", []))
    try:
        scanner.visit(tree)
        while stack:  # names bound at cell level shadow the builtins the hidden tests call
            node = stack.pop()
            name = getattr(node, "asname", None) or getattr(node, "name", None) or getattr(node, "id", None)
            binds = isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.alias)) or \
                isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store)
            if binds and name in SHADOWED:
                scanner.flag(node, "patch", f"shadows builtin {name}")
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda, ast.ListComp,
                                     ast.SetComp, ast.DictComp, ast.GeneratorExp)):  # scopes of their own
                stack.extend(ast.iter_child_nodes(node))
    except RecursionError:  # hostile nesting: that alone deserves a look
        out.append(Finding(cell, line or 1, "unparsable", f"{PHRASES['unparsable']}: too deeply nested to scan"))


def _scan_source(src: str, cell: str, names: _Names, out: list[Finding], line: int) -> None:
    """Code given to exec/eval as a literal, scanned like a cell, every finding on the call's line."""
    tree, notes = _parse(src)
    names.bind([tree] if tree is not None else [])
    _scan_tree(tree, notes, cell, names, out, line)


def scan(cells: Sequence[tuple[str, str]], course: Sequence[str] = ()) -> list[Finding]:
    """Findings in (cell label, source) pairs of the code the student wrote, in cell order, then line order;
    one per cell, line and kind (the first found). `course`: the sources of the notebook's own cells, whose
    imports name what the student's code may use without importing it."""
    trees = [node for tree, _ in map(_parse, course) for node in getattr(tree, "body", [])]
    given = {bound: full for node in trees if isinstance(node, (ast.Import, ast.ImportFrom))
             for bound, full in _imported(node) if bound != "*"}
    parsed, names, out = [(cell, *_parse(src)) for cell, src in cells], _Names(given), []
    names.bind([tree for _, tree, _ in parsed if tree is not None])  # one namespace: any cell's import counts
    for cell, tree, notes in parsed:
        _scan_tree(tree, notes, cell, names, out)
    order = {cell: i for i, (cell, _) in enumerate(cells)}
    unique = {(f.cell, f.line, f.kind): f for f in reversed(out)}  # reversed: the first found wins
    return sorted(unique.values(), key=lambda f: (order[f.cell], f.line, f.kind, f.detail))


def summary(findings: Sequence[Finding], limit: int = 200) -> str:
    """``suspicious: patches json.dumps (ex2), starts processes (added-12)``, or "" when nothing was found."""
    groups: dict[str, list[str]] = {}
    for f in findings:
        cells = groups.setdefault(f.detail if f.kind == "patch" else PHRASES[f.kind], [])
        if f.cell not in cells:
            cells.append(f.cell)
    parts, kept, head = [f"{what} ({', '.join(cells)})" for what, cells in groups.items()], [], "suspicious: "
    for i, part in enumerate(parts):
        reserve = len(f", +{len(parts) - i - 1} more") if i < len(parts) - 1 else 0
        if not kept and len(head + part) + reserve > limit:  # the first part always shows, cut to fit
            part = part[: limit - len(head) - reserve - 3] + "..."
        elif kept and len(head + ", ".join([*kept, part])) + reserve > limit:
            break
        kept.append(part)
    more = f", +{len(parts) - len(kept)} more" if len(kept) < len(parts) else ""
    return head + ", ".join(kept) + more if parts else ""
