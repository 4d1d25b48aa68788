"""The grading worker's bookkeeping around a kernel run (no kernel is started here; see test_assignments_sandbox)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from anlp_ft.assignments import grade_worker


def test_evidence_keeps_small_regular_files_and_never_follows_links(tmp_path) -> None:
    scratch, dest = tmp_path / "scratch", tmp_path / "evidence"
    (scratch / "sub").mkdir(parents=True)
    (scratch / "answer.txt").write_text("42")
    (scratch / "sub" / "log.txt").write_text("ok")
    (scratch / "big.bin").write_bytes(b"x" * (grade_worker.EVIDENCE_FILE_CAP + 1))
    secret = tmp_path / "solutions.txt"
    secret.write_text("hidden tests")
    os.symlink(secret, scratch / "link.txt")
    os.symlink(tmp_path, scratch / "linked-folder")
    grade_worker._keep_evidence(scratch, dest)
    kept = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
    assert kept == ["answer.txt", "sub/log.txt"]


def test_remove_tree_gets_past_folders_the_kernel_locked(tmp_path) -> None:
    locked = tmp_path / "base" / "work" / "locked"
    locked.mkdir(parents=True)
    (locked / "f").write_text("x")
    locked.chmod(0)
    grade_worker._remove_tree(tmp_path / "base")
    assert not (tmp_path / "base").exists()


def test_protections_come_from_the_sandbox_report(tmp_path) -> None:
    report = tmp_path / "sandbox.json"
    report.write_text(json.dumps({"network": "off", "masked": "applied to 3 paths", "pid_namespace": False,
                                  "processes": "no pid namespace: turned off (--no-pid-namespace)", "threads": 2}))
    reaper = grade_worker.Reaper()
    reaper.close()
    assert grade_worker.protections(report, 2, 3, reaper) == {
        "network": "off", "masked": "applied to 3 paths", "swept": 3, "threads": 2,
        "processes": "subreaper sweep only: no pid namespace: turned off (--no-pid-namespace)"}


def test_a_missing_report_is_not_taken_for_protection(tmp_path) -> None:
    protections = grade_worker.protections(Path(tmp_path / "absent.json"), 4, 0, None)
    assert protections["network"].startswith("unknown: the sandbox wrote no report")
    assert protections["masked"].startswith("not applied")
    assert protections["threads"] == 4
