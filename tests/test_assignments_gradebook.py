"""anlp_ft.assignments.gradebook: the CSV written the same way every time, and shards merged into it."""
import pytest

from anlp_ft.assignments.gradebook import Row, merge_gradebooks, read_gradebook, write_gradebook

EXERCISES = ["ex1", "ex2"]


def rows(*names: str) -> list[Row]:
    return [Row(n, {"ex1": 1.0, "ex2": 2 / 3}, 1.67, 3.0, "ok") for n in names]


def test_numbers_are_written_as_stable_text(tmp_path):
    write_gradebook(rows("b.ipynb"), EXERCISES, tmp_path / "g.csv")
    assert read_gradebook(tmp_path / "g.csv") == [
        {"submission": "b.ipynb", "ex1": "1", "ex2": "0.67", "total": "1.67", "max_total": "3", "percent": "55.7",
         "status": "ok"}]
    with pytest.raises(FileExistsError):
        write_gradebook(rows("c.ipynb"), EXERCISES, tmp_path / "g.csv")


def test_merged_shards_equal_one_gradebook_byte_for_byte(tmp_path):
    write_gradebook(rows("a", "b", "c", "d"), EXERCISES, tmp_path / "one.csv")
    write_gradebook(rows("a", "c"), EXERCISES, tmp_path / "p1.csv")
    write_gradebook(rows("b", "d"), EXERCISES, tmp_path / "p2.csv")
    assert merge_gradebooks([tmp_path / "p2.csv", tmp_path / "p1.csv"], tmp_path / "all.csv") == 4
    assert (tmp_path / "all.csv").read_bytes() == (tmp_path / "one.csv").read_bytes()


def test_merge_refuses_other_labs_repeated_rows_and_existing_files(tmp_path):
    write_gradebook(rows("a"), EXERCISES, tmp_path / "p1.csv")
    write_gradebook(rows("a"), EXERCISES, tmp_path / "p2.csv")
    write_gradebook([Row("b", {"ex1": 1.0}, 1.0, 1.0, "ok")], ["ex1"], tmp_path / "other.csv")
    with pytest.raises(ValueError, match="graded in two"):
        merge_gradebooks([tmp_path / "p1.csv", tmp_path / "p2.csv"], tmp_path / "m1.csv")
    with pytest.raises(ValueError, match="other columns"):
        merge_gradebooks([tmp_path / "p1.csv", tmp_path / "other.csv"], tmp_path / "m2.csv")
    with pytest.raises(FileExistsError):
        merge_gradebooks([tmp_path / "p1.csv"], tmp_path / "p2.csv")
