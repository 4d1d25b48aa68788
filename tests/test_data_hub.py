"""anlp_ft.data.hub: the lecture's hub datasets, offline, as generated rows in the hub's schema."""
from anlp_ft.data.hub import SOURCES, load_lecture_dataset


def test_lecture_datasets_offline_keep_the_hub_schema(capsys):
    expected = {"scientific_papers": {"article", "abstract"},
                "competition_math": {"problem", "solution", "level", "type"},
                "openorca": {"system_prompt", "question", "response"}, "lmsys_chat": {"conversation", "turn"}}
    for name in SOURCES:
        rows = load_lecture_dataset(name, 3)
        assert len(rows) == 3, name
        assert expected[name] <= set(rows[0]), name
        assert "generated rows in the same schema" in capsys.readouterr().out
