"""Record the dependency metadata of what installing the course adds to Colab: needs network; no test runs it.

    .venv/bin/python constraints/record_added_metadata.py

Runs pip's resolver (Python 3.13, as tests/test_colab_install.py finds it) into the same stand-in for Colab's runtime
as the test, against https://pypi.org/simple only (no local index, no pip configuration), and writes, for each
package pip would install, the metadata pip read from the file it picked (the wheel's METADATA, or the metadata the
sdist builds): name, version, Requires-Python, Provides-Extra, Requires-Dist, with the file's URL and sha256, to
constraints/colab-added-metadata.json. The offline test builds placeholder wheels from that file. Commit the result.
"""
from __future__ import annotations

import datetime
import json
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import test_colab_install as check  # noqa: E402  (the test's own stand-in, requirements and pip environment)

INDEX = "https://pypi.org/simple"


def main() -> None:
    if check.PYTHON313 is None:
        sys.exit("no Python 3.13 found (pyenv's versions/3.13* or python3.13 on PATH)")
    with tempfile.TemporaryDirectory() as tmp:
        target = check.colab_standin(check.PYTHON313, Path(tmp) / "colab")
        requirements = [str(r) for r in check.course_requirements()]
        run, installs = check.pip_dry_run(check.PYTHON313, target, requirements, Path(tmp) / "work",
                                          ["--isolated", "--index-url", INDEX])
    if run.returncode != 0:
        sys.exit(f"pip failed:\n{run.stdout}{run.stderr}")
    pip_version = subprocess.run([check.PYTHON313, "-m", "pip", "--version"], capture_output=True, text=True,
                                 env=check.pip_environment()).stdout.split()[1]
    python_version = subprocess.run([check.PYTHON313, "-c", "import platform; print(platform.python_version())"],
                                    capture_output=True, text=True).stdout.strip()
    packages = {}
    for item in installs:
        metadata, download = item["metadata"], item["download_info"]
        name = check.canonicalize_name(metadata["name"])
        hashes = download.get("archive_info", {}).get("hashes", {})
        packages[name] = {"name": metadata["name"], "version": metadata["version"],
                          "requires_python": metadata.get("requires_python"),
                          "provides_extra": metadata.get("provides_extra", []),
                          "requires_dist": metadata.get("requires_dist", []),
                          "source": download["url"], "sha256": hashes.get("sha256")}
    packages = dict(sorted(packages.items()))
    recorded = {
        "date": datetime.date.today().isoformat(),
        "how": f"{Path(__file__).relative_to(check.ROOT)}: pip {pip_version} of Python {python_version} "
               f"({platform.system()} {platform.machine()}), `install --dry-run --report` of pyproject.toml's "
               f"dependencies into a stand-in for {check.COLAB_LIST.name}, from {INDEX} only; the metadata as pip "
               f"read it from each file it picked (sources)",
        "index": INDEX,
        "course_requirements": requirements,
        "versions": {name: p["version"] for name, p in packages.items()},
        "sources": {name: p["source"] for name, p in packages.items()},
    }
    out = Path(__file__).with_name("colab-added-metadata.json")
    out.write_text(json.dumps({"recorded": recorded, "packages": packages}, indent=1) + "\n")
    print(f"wrote {out}: " + ", ".join(f"{n}=={v}" for n, v in recorded["versions"].items()))


if __name__ == "__main__":
    main()
