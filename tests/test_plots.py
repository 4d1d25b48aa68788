"""anlp_ft.plots: what each plot draws (lines and bars hold the values given, axes are labelled) and lab 05's
memory calculator widget, built without a browser."""
import matplotlib
import matplotlib.pyplot as plt
import pytest

from anlp_ft.plots import memory_calculator, plot_bars, plot_curves, plot_loss, plot_memory_bar
from anlp_ft.train import History


@pytest.fixture(autouse=True)
def no_display():
    """Draw off-screen, and close what a test drew."""
    backend = matplotlib.get_backend()
    plt.switch_backend("agg")
    yield
    plt.close("all")
    plt.switch_backend(backend)


def test_plot_loss_draws_one_line_per_run_over_steps_from_one():
    ax = plot_loss(History(steps=[0, 1, 2], loss=[3.0, 2.0, 1.5]))
    [line] = ax.get_lines()
    assert list(line.get_xdata()) == [1, 2, 3]
    assert list(line.get_ydata()) == [3.0, 2.0, 1.5]
    assert ax.get_xlabel() == "optimizer step"
    assert ax.get_ylabel() == "loss"
    assert ax.get_title() == "training loss"
    assert ax.get_legend() is None  # one run needs no legend

    two = plot_loss({"full": History(steps=[0, 1], loss=[2.0, 1.0]), "lora": History(steps=[0, 1], loss=[2.0, 1.5])},
                    title="runs")
    assert [line.get_label() for line in two.get_lines()] == ["full", "lora"]
    assert [t.get_text() for t in two.get_legend().get_texts()] == ["full", "lora"]
    assert two.get_title() == "runs"


def test_plot_bars_heights_are_the_values_and_labelled():
    values = {"before": 0.125, "after": 0.9}
    ax = plot_bars(values, title="held-out accuracy")
    assert [bar.get_height() for bar in ax.patches] == [0.125, 0.9]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["before", "after"]
    assert [t.get_text() for t in ax.texts] == ["0.12", "0.90"]  # each bar carries its value
    assert ax.get_title() == "held-out accuracy"
    assert ax.get_ylabel() == "accuracy"
    assert ax.get_ylim() == (0.0, 1.0)


def test_plot_curves_one_line_per_series_over_the_shared_x():
    x = [16, 64, 256]
    ax = plot_curves(x, {"pre-trained": [2.0, 1.5, 1.2], "random init": [5.0, 4.4, 3.9]}, xlabel="examples",
                     ylabel="held-out loss", title="data efficiency", logx=True)
    lines = ax.get_lines()
    assert [line.get_label() for line in lines] == ["pre-trained", "random init"]
    assert [list(line.get_xdata()) for line in lines] == [x, x]
    assert [list(line.get_ydata()) for line in lines] == [[2.0, 1.5, 1.2], [5.0, 4.4, 3.9]]
    assert ax.get_xlabel() == "examples"
    assert ax.get_ylabel() == "held-out loss"
    assert ax.get_title() == "data efficiency"
    assert ax.get_xscale() == "log"
    assert plot_curves(x, {"a": [1, 2, 3]}, xlabel="n", ylabel="y", title="t").get_xscale() == "linear"


def test_plot_memory_bar_stacks_the_parts_under_the_capacity_line():
    ax = plot_memory_bar({"parameters": 1.0, "gradients": 0.5, "activations": 0.0, "Adam": 2.0}, 15.0, label="full")
    bars = ax.patches
    assert [bar.get_height() for bar in bars] == [1.0, 0.5, 2.0]  # parts of zero are not drawn
    assert [bar.get_y() for bar in bars] == [0.0, 1.0, 1.5]  # each part stacked on the ones before
    assert [t.get_text() for t in ax.get_xticklabels()] == ["full"]
    [capacity] = ax.get_lines()
    assert list(capacity.get_ydata()) == [15.0, 15.0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["GPU: 15 GB", "parameters", "gradients", "Adam"]
    assert ax.get_ylabel() == "GB"
    assert ax.get_title() == "memory per GPU"
    assert plot_memory_bar({"parameters": 1.0}).get_lines() == []  # no capacity, no line


def test_memory_calculator_widget_builds_without_a_browser():
    widget = memory_calculator()  # builds without a browser; its callback is calculate + a plot
    descriptions = {getattr(c, "description", None) for c in widget.children}
    expected = {"model", "batch", "seq", "precision", "method", "checkpointing", "gpu"}
    assert expected <= descriptions
    assert not {"zero_stage", "n_gpus"} & descriptions  # ZeRO needs the student's split
    calls = []

    def split(parts, stage, n):
        calls.append((stage, n))
        return parts

    widget = memory_calculator(zero_per_gpu=split)
    sliders = {c.description: c for c in widget.children if getattr(c, "description", None) in ("zero_stage", "n_gpus")}
    assert set(sliders) == {"zero_stage", "n_gpus"}
    assert calls == []  # stage 0 on one GPU: nothing to split
    sliders["zero_stage"].value, sliders["n_gpus"].value = 2, 8
    assert calls[-1] == (2, 8)


def test_memory_calculator_names_the_missing_exercise(capsys):
    def stub(parts, stage, n):
        raise NotImplementedError

    widget = memory_calculator(zero_per_gpu=stub)
    next(c for c in widget.children if getattr(c, "description", None) == "zero_stage").value = 1
    assert "zero_per_gpu (lab 05, exercise 3), which is not implemented yet" in capsys.readouterr().out
