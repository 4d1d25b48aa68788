"""Installing the course in Colab changes no package Colab preinstalls. Offline: no check here reaches any index.

constraints/colab-gpu-2026-08-19.txt is Colab's published `pip freeze` of its GPU runtime (Python 3.13), and
constraints/colab-added-metadata.json the real dependency metadata (Requires-Dist, Requires-Python, as published on
PyPI) of each package the course adds on top of it (bitsandbytes, gguf, papermill, rouge-score, ... and whatever of
their requirements Colab lacks), recorded once with network. Three checks:

* the declared bounds (pyproject.toml's dependencies, markers evaluated for Colab's Linux / Python 3.13) admit
  Colab's version of every dependency Colab has: plain `packaging`, runs everywhere;
* the recorded metadata covers what the course adds: every requirement of the course, and of each recorded
  package, that Colab lacks is recorded, at a version the requirement admits; plain `packaging`, runs everywhere;
* pip's resolver, run by Python 3.13 into a stand-in for Colab: a venv holding a metadata-only `.dist-info` for
  each of Colab's packages (name and version, no files), where `pip install --dry-run --report --no-index
  --find-links PLACEHOLDERS` installs the dependencies as the notebooks' install cell does (no --upgrade).
  PLACEHOLDERS holds a metadata-only wheel for each recorded added package, so pip honours their real requirements:
  any of them that needs another version of a Colab package makes the resolution fail (no other version is on
  offer), and so does a course bound above Colab's version. pip runs without this machine's configuration
  (PIP_CONFIG_FILE=/dev/null, no PIP_* variables). It does not cover Colab's own packages' requirements among
  themselves (the stand-ins declare none; Colab's image is consistent as shipped), nor CUDA builds, nor whether the
  code runs there. Skipped only without Python 3.13.

When the course gains a dependency (or a bound that the recorded version no longer meets), record the metadata
again, with network, and commit the result:

    .venv/bin/python constraints/record_added_metadata.py

It runs the same resolver against https://pypi.org/simple only and rewrites constraints/colab-added-metadata.json.
"""
from __future__ import annotations

import glob
import json
import os
import re
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
COLAB_LIST = ROOT / "constraints" / "colab-gpu-2026-08-19.txt"
ADDED_METADATA = ROOT / "constraints" / "colab-added-metadata.json"
RECORD_COMMAND = ".venv/bin/python constraints/record_added_metadata.py  (needs network; commit the JSON it writes)"
COLAB_ENV = {"python_version": "3.13", "python_full_version": "3.13.15", "platform_system": "Linux",
             "sys_platform": "linux", "platform_machine": "x86_64", "os_name": "posix"}


def colab_versions() -> dict[str, str]:
    """Colab's `name==version` lines by canonical name (its few `name @ URL` lines are not on an index anyway)."""
    pins = (re.match(r"^([A-Za-z0-9._-]+)==(\S+)$", line.strip()) for line in COLAB_LIST.read_text().splitlines())
    return {canonicalize_name(m[1]): m[2] for m in pins if m}


def course_requirements() -> list[Requirement]:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return [r for r in map(Requirement, deps) if r.marker is None or r.marker.evaluate(COLAB_ENV)]


def added_metadata() -> dict[str, dict]:
    """The recorded metadata of the packages the course adds to Colab, by canonical name."""
    return json.loads(ADDED_METADATA.read_text())["packages"]


def python313() -> str | None:
    """A working Python 3.13: pyenv's newest, else python3.13 on PATH (a pyenv shim there may not run)."""
    root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    candidates = [*sorted(glob.glob(f"{root}/versions/3.13*/bin/python3.13"), reverse=True), shutil.which("python3.13")]
    for python in filter(None, candidates):
        run = subprocess.run([python, "-c", "import sys; print(sys.version_info[:2] == (3, 13))"],
                             capture_output=True, text=True)
        if run.stdout.strip() == "True":
            return python
    return None


PYTHON313 = python313()


def pip_environment() -> dict[str, str]:
    """The environment pip runs in: no configuration file, no PIP_* variable (no index, find-links, constraint)."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("PIP_")}
    return {**env, "PIP_CONFIG_FILE": os.devnull, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}


def colab_standin(python: str, env: Path) -> Path:
    """A venv holding a metadata-only .dist-info for each of Colab's packages; returns its python."""
    subprocess.run([python, "-m", "venv", "--without-pip", str(env)], check=True)
    site = next(env.glob("lib/python3.13/site-packages"))
    for name, version in colab_versions().items():
        info = site / f"{name.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    return env / "bin" / "python"


def pip_dry_run(python: str, target: Path, requirements: list[str], work: Path,
                source: list[str]) -> tuple[subprocess.CompletedProcess, list[dict]]:
    """`pip install --dry-run --report` of REQUIREMENTS into TARGET's environment from SOURCE (index options)."""
    work.mkdir(parents=True, exist_ok=True)
    (work / "requirements.txt").write_text("\n".join(requirements) + "\n")
    report = work / "report.json"
    run = subprocess.run([python, "-m", "pip", "--python", str(target), "install", "--dry-run",
                          *source, "--report", str(report), "-r", str(work / "requirements.txt")],
                         capture_output=True, text=True, timeout=300, env=pip_environment())
    return run, json.loads(report.read_text())["install"] if run.returncode == 0 else []


def write_placeholder_wheels(packages: dict[str, dict], folder: Path) -> Path:
    """A metadata-only wheel (METADATA, WHEEL, empty RECORD) for each recorded package, for pip's --find-links."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, package in packages.items():
        dist = f"{re.sub(r'[-_.]+', '_', name)}-{package['version']}"
        metadata = ["Metadata-Version: 2.1", f"Name: {package['name']}", f"Version: {package['version']}",
                    *([f"Requires-Python: {package['requires_python']}"] if package.get("requires_python") else []),
                    *(f"Provides-Extra: {extra}" for extra in package.get("provides_extra") or []),
                    *(f"Requires-Dist: {requirement}" for requirement in package.get("requires_dist") or [])]
        with zipfile.ZipFile(folder / f"{dist}-py3-none-any.whl", "w") as wheel:
            wheel.writestr(f"{dist}.dist-info/METADATA", "\n".join(metadata) + "\n")
            wheel.writestr(f"{dist}.dist-info/WHEEL", "Wheel-Version: 1.0\nGenerator: tests/test_colab_install.py\n"
                                                      "Root-Is-Purelib: true\nTag: py3-none-any\n")
            wheel.writestr(f"{dist}.dist-info/RECORD", "")
    return folder


def colab_problems(python: str, target: Path, requirements: list[str], wheels: Path, work: Path,
                   ) -> tuple[list[str], list[tuple[str, str]]]:
    """What would go wrong installing REQUIREMENTS into Colab (pip refusing, or a Colab package at another version),
    and the (name, version) pip would install; offline, from the placeholder wheels in WHEELS only."""
    run, installs = pip_dry_run(python, target, requirements, work, ["--no-index", "--find-links", str(wheels)])
    if run.returncode != 0:
        noise = ("Looking in links", "Requirement already satisfied", "Processing ", "INFO: pip is looking")
        errors = "\n".join(line for line in (run.stdout + run.stderr).splitlines()
                           if not line.startswith(noise) and "is neither a file nor a directory" not in line)
        return [f"pip cannot install {requirements} beside Colab's packages, offline from the recorded metadata "
                f"(a Colab package needed at another version, or a package {ADDED_METADATA.name} lacks: record it "
                f"with {RECORD_COMMAND}):\n{errors}"], []
    installs = [(canonicalize_name(i["metadata"]["name"]), i["metadata"]["version"]) for i in installs]
    colab = colab_versions()
    return [f"{name} {colab[name]} -> {version}" for name, version in installs if name in colab], installs


def uncovered(requirements: list[Requirement], recorded: dict[str, dict], colab: dict[str, str]) -> list[str]:
    """The requirements, followed through the recorded packages' own, that Colab lacks and the record does not meet."""
    found, seen, todo = [], set(), [(r, "pyproject.toml") for r in requirements]
    while todo:
        requirement, wanted_by = todo.pop()
        name = canonicalize_name(requirement.name)
        if name in colab or (name, frozenset(requirement.extras)) in seen:
            continue
        seen.add((name, frozenset(requirement.extras)))
        if name not in recorded:
            found.append(f"{requirement} (wanted by {wanted_by}): not recorded")
            continue
        package = recorded[name]
        if not requirement.specifier.contains(Version(package["version"]), prereleases=True):
            found.append(f"{requirement} (wanted by {wanted_by}): {package['version']} recorded")
            continue
        for line in package.get("requires_dist") or []:
            r = Requirement(line)
            if r.marker is None or any(r.marker.evaluate({**COLAB_ENV, "extra": e}) for e in {"", *requirement.extras}):
                todo.append((r, f"{name}=={package['version']}"))
    return sorted(found)


def test_declared_bounds_admit_colabs_versions():
    colab = colab_versions()
    assert {"torch", "transformers", "ipywidgets"} <= colab.keys(), "the Colab list did not parse"
    refused = [f"{r} refuses Colab's {r.name}=={colab[canonicalize_name(r.name)]}" for r in course_requirements()
               if canonicalize_name(r.name) in colab
               and not r.specifier.contains(Version(colab[canonicalize_name(r.name)]), prereleases=True)]
    assert not refused, "pyproject.toml's bounds would replace Colab's packages:\n" + "\n".join(refused)
    assert Marker("platform_system != 'Darwin'").evaluate(COLAB_ENV)


def test_recorded_metadata_covers_what_the_course_adds():
    header = json.loads(ADDED_METADATA.read_text())["recorded"]
    recorded = added_metadata()
    assert header["date"] and header["sources"] and header["versions"], f"{ADDED_METADATA.name} lacks its header"
    assert {"bitsandbytes", "gguf", "papermill", "rouge-score"} <= recorded.keys()
    assert not recorded.keys() & colab_versions().keys(), "a recorded package is one Colab preinstalls"
    missing = uncovered(course_requirements(), recorded, colab_versions())
    assert not missing, (f"{ADDED_METADATA.relative_to(ROOT)} does not cover what installing the course adds to Colab "
                         f"(the offline resolver check cannot see its requirements):\n  " + "\n  ".join(missing)
                         + f"\nrecord it again: {RECORD_COMMAND}")
    # The check has teeth: a course dependency Colab lacks and the record lacks is named.
    without_gguf = {name: package for name, package in recorded.items() if name != "gguf"}
    assert [m for m in uncovered(course_requirements(), without_gguf, colab_versions()) if m.startswith("gguf")]


@pytest.mark.skipif(PYTHON313 is None, reason="Python 3.13 (Colab's) not found: no python3.13 on PATH nor in "
                                                "pyenv's versions/3.13*; the resolver check needs it")
def test_installing_the_course_in_colab_replaces_nothing(tmp_path, capsys):
    recorded = added_metadata()
    target = colab_standin(PYTHON313, tmp_path / "colab")
    wheels = write_placeholder_wheels(recorded, tmp_path / "placeholders")
    problems, installs = colab_problems(PYTHON313, target, [str(r) for r in course_requirements()], wheels,
                                        tmp_path / "course")
    assert not problems, "installing the course in Colab would replace a package Colab ships:\n" + "\n".join(problems)
    unrecorded = [f"{n}=={v}" for n, v in installs if recorded.get(n, {}).get("version") != v]
    assert not unrecorded, f"pip would install {unrecorded}, not in {ADDED_METADATA.name}: record with {RECORD_COMMAND}"
    with capsys.disabled():
        print(f"\nthe course adds to Colab: {', '.join(f'{n}=={v}' for n, v in sorted(installs)) or 'nothing'}")

    # The check has teeth: bounds above Colab's versions are caught, not silently satisfied ...
    for too_new in ["ipywidgets>=8.0", "transformers>=5.16"]:
        problems, _ = colab_problems(PYTHON313, target, [too_new], wheels, tmp_path / too_new)
        assert problems and f"No matching distribution found for {too_new}" in problems[0], \
            f"{too_new} in Colab went unnoticed"
    # ... and so is an added package's requirement of another version of a Colab package.
    papermill = recorded["papermill"]
    tampered = {**recorded, "papermill": {**papermill, "requires_dist": [*papermill["requires_dist"], "nbformat>=99"]}}
    wheels = write_placeholder_wheels(tampered, tmp_path / "tampered")
    problems, _ = colab_problems(PYTHON313, target, [str(r) for r in course_requirements()], wheels,
                                 tmp_path / "tampered-course")
    assert problems and f"papermill {papermill['version']} depends on nbformat>=99" in problems[0], \
        "papermill requiring nbformat>=99 in Colab went unnoticed"
