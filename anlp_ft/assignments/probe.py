"""The code the grader injects into a submission's kernel, as real Python (linted and tested like the rest).

`hidden_tests` runs one hidden-tests cell's parts in the kernel's namespace and writes one line
``<nonce> <json>`` with, for each part, whether it ran without raising and the values it handed over with
``emit(name, value)`` (numbers, strings, lists, dicts, tensors as safetensors bytes: data, never pickle). For a
part with a judge, those values are all the grader uses: it compares them with the reference kernel's in its own
process (:mod:`.judge`), so nothing the kernel says about passing counts. ``GRADER_SEED`` (the batch's secret)
is in the namespace while the parts run, for inputs the student cannot have seen. The grader sends this source
text into the kernel (`injected_source`), so nothing of the grader is imported from the student's process. See
CONTRIBUTING.md, "Grading", for the protocol.
"""
from __future__ import annotations

import inspect


def hidden_tests(nonce: str, exercise: str, module_name: str, module_path: str | None, parts: list[str],
                 seed: int = 0) -> None:
    """Run `parts` (source strings) in the kernel's namespace; report each part's pass/fail and data on stdout."""
    import base64
    import importlib.util
    import json
    import sys
    import traceback

    from IPython import get_ipython

    ns = get_ipython().user_ns
    # Hidden tests draw random numbers; the lab's later cells must see the same ones as in an ungraded run.
    rng = {"random": sys.modules["random"].getstate()} if "random" in sys.modules else {}
    if "numpy" in sys.modules:
        rng["numpy"] = sys.modules["numpy"].random.get_state()
    if "torch" in sys.modules:
        rng["torch"] = sys.modules["torch"].random.get_rng_state()
    package_name, _, attr = module_name.rpartition(".")
    package = sys.modules.get(package_name)
    saved = sys.modules.get(module_name), getattr(package, attr, None), ns.get("check"), ns.get("emit")
    results: list[dict] = []
    data: dict = {}

    def encode(value):  # plain data only: the grader decodes JSON and safetensors, never pickle
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        if isinstance(value, (list, tuple)):
            return [encode(v) for v in value]
        if isinstance(value, dict) and all(isinstance(k, str) for k in value):
            return {k: encode(v) for k, v in value.items()}
        torch = sys.modules.get("torch")
        if torch is not None and isinstance(value, torch.Tensor):
            from safetensors.torch import save

            raw = save({"t": value.detach().cpu().contiguous().clone()})
            return {"__tensor__": base64.b64encode(raw).decode("ascii")}
        raise TypeError(f"emit: {type(value).__name__} is not data (numbers, strings, lists, dicts, tensors)")

    def emit(name, value):
        data[str(name)] = encode(value)
    try:
        fresh = None
        if module_path:
            # A fresh copy from the file: patches to the imported module or to `check` do not reach it.
            spec = importlib.util.spec_from_file_location(module_name, module_path)
            fresh = importlib.util.module_from_spec(spec)
            sys.modules[module_name] = fresh
            spec.loader.exec_module(fresh)
            if package is not None:
                setattr(package, attr, fresh)

        def check(name, *args, **kwargs):  # strict: a stub fails here instead of being reported
            if fresh is None:
                raise RuntimeError("this lab has no public checks module")
            getattr(fresh, name)(*args, **kwargs)
            return True

        ns["check"], ns["emit"], ns["GRADER_SEED"] = check, emit, seed
        for number, source in enumerate(parts, start=1):
            data.clear()
            try:
                exec(compile(source, f"<hidden tests {exercise} part {number}>", "exec"), ns)
                results.append({"passed": True})
            except BaseException as error:
                results.append({"passed": False, "error": f"{type(error).__name__}: {error}"[:300]})
                traceback.print_exc()
            if data:
                results[-1]["data"] = dict(data)
    except BaseException as error:
        results = [{"passed": False, "error": f"grader: {type(error).__name__}: {error}"[:300]}] * len(parts)
    finally:
        if "random" in rng:
            sys.modules["random"].setstate(rng["random"])
        if "numpy" in rng:
            sys.modules["numpy"].random.set_state(rng["numpy"])
        if "torch" in rng:
            sys.modules["torch"].random.set_rng_state(rng["torch"])
        if saved[0] is None:
            sys.modules.pop(module_name, None)
        else:
            sys.modules[module_name] = saved[0]
        if package is not None and saved[1] is not None:
            setattr(package, attr, saved[1])
        for name, value in (("check", saved[2]), ("emit", saved[3])):
            if value is None:
                ns.pop(name, None)
            else:
                ns[name] = value
        ns.pop("GRADER_SEED", None)
    sys.stdout.write("\n" + nonce + " " + json.dumps({"exercise": exercise, "parts": results}) + "\n")
    sys.stdout.flush()


def injected_source(nonce: str, exercise: str, module_name: str, module_path: str | None, parts: list[str],
                    seed: int = 0) -> str:
    """The text of one injected cell: `hidden_tests`' own source, one call, and its removal from the namespace."""
    name = "_anlp_ft_hidden_tests"
    body = inspect.getsource(hidden_tests).replace("def hidden_tests(", f"def {name}(", 1)
    call = f"{name}({nonce!r}, {exercise!r}, {module_name!r}, {module_path!r}, {parts!r}, {seed!r})"
    return (f"# Hidden tests for {exercise}, injected by the anlp-ft grader (not part of the submission).\n"
            f"{body}\n\n{call}\ndel {name}\n")
