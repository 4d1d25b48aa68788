"""anlp_ft.results: the outcome table printed and collected for `anlp-ft course`, and expect(), which reports a
MISSING outcome and fails a real miss."""

import json

import pytest

from anlp_ft.results import MISSING, expect, read_outcomes, record_outcomes


def test_outcomes_are_printed_and_collected(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ANLP_FT_RESULTS", str(tmp_path / "r.jsonl"))
    record_outcomes("01_demo", {"accuracy before": 0.0625, "accuracy after": 0.9375})
    assert "accuracy after   0.938" in capsys.readouterr().out
    assert read_outcomes(tmp_path / "r.jsonl") == {"01_demo": {"accuracy before": 0.0625, "accuracy after": 0.9375}}
    assert json.loads((tmp_path / "r.jsonl").read_text())["notebook"] == "01_demo"


def test_expect_reports_missing_and_fails_real_misses(capsys: pytest.CaptureFixture[str]) -> None:
    expect("accuracy", MISSING, at_least=0.9)
    assert "not checked, its exercise is not implemented yet" in capsys.readouterr().out
    expect("accuracy", 0.95, at_least=0.9)
    with pytest.raises(AssertionError, match="accuracy = 0.5, expected at least 0.9"):
        expect("accuracy", 0.5, at_least=0.9)
