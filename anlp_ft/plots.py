"""Plots the notebooks draw: loss curves, before/after bars, data-efficiency curves, memory bars and lab 05's
memory calculator (ipywidgets around `anlp_ft.memory.calculate`)."""
from __future__ import annotations

from typing import Callable, Mapping, Sequence

import matplotlib.pyplot as plt

from .memory import GPUS, MODELS, calculate
from .train import History


def plot_loss(histories: Mapping[str, History] | History, *, title: str = "training loss", ax=None):
    """Loss per optimizer step, one line per run."""
    if isinstance(histories, History):
        histories = {"loss": histories}
    ax = ax or plt.subplots(figsize=(6, 3.5))[1]
    for label, h in histories.items():
        ax.plot([s + 1 for s in h.steps], h.loss, label=label)
    ax.set(xlabel="optimizer step", ylabel="loss", title=title)
    if len(histories) > 1:
        ax.legend()
    return ax


def plot_bars(values: Mapping[str, float], *, title: str, ylabel: str = "accuracy", ax=None, ylim=(0, 1)):
    """One bar per setting, labelled with its value: before/after tables made visible."""
    ax = ax or plt.subplots(figsize=(6, 3.5))[1]
    bars = ax.bar(list(values), list(values.values()), color="tab:blue")
    ax.bar_label(bars, labels=[f"{v:.2f}" for v in values.values()])
    ax.set(title=title, ylabel=ylabel)
    if ylim:
        ax.set_ylim(*ylim)
    return ax


def plot_curves(x: Sequence[float], curves: Mapping[str, Sequence[float]], *, xlabel: str, ylabel: str, title: str,
                logx: bool = False, ax=None):
    """Several y-series over a shared x (e.g. held-out loss against number of training examples)."""
    ax = ax or plt.subplots(figsize=(6, 3.5))[1]
    for label, ys in curves.items():
        ax.plot(x, ys, marker="o", label=label)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    if logx:
        ax.set_xscale("log")
    ax.legend()
    return ax


def plot_memory_bar(parts_gb: Mapping[str, float], capacity_gb: float | None = None, *, label: str = "",
                    ax=None, title: str = "memory per GPU"):
    """One stacked bar of the parts, with the GPU's capacity as a dashed line."""
    ax = ax or plt.subplots(figsize=(5, 4))[1]
    bottom = 0.0
    for part, value in parts_gb.items():
        if value > 0:
            ax.bar([label or "step"], [value], bottom=bottom, label=part)
            bottom += value
    if capacity_gb is not None:
        ax.axhline(capacity_gb, color="black", linestyle="--", label=f"GPU: {capacity_gb:g} GB")
    ax.set(ylabel="GB", title=title)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1, 1))
    return ax


def memory_calculator(zero_per_gpu: Callable[[dict[str, float], int, int], dict[str, float]] | None = None):
    """An ipywidgets calculator (model, batch, sequence length, precision, method, checkpointing, GPU) that redraws
    the stacked bar against the chosen GPU; its logic is `calculate`. Given a ZeRO split
    `zero_per_gpu(parts, stage, n_gpus)` (lab 05's exercise 3), it adds a ZeRO stage and a GPU count."""
    import ipywidgets as widgets  # only the calculator needs it

    def draw(zero_stage: int = 0, n_gpus: int = 1, **kw):
        if zero_per_gpu is not None and (zero_stage or n_gpus > 1):
            kw.update(per_gpu=lambda parts: zero_per_gpu(parts, zero_stage, n_gpus),
                      per_gpu_label=f"ZeRO-{zero_stage} on {n_gpus} GPUs" if zero_stage else f"{n_gpus} GPUs")
        try:
            result = calculate(**kw)
        except NotImplementedError:  # the lab's stub, before exercise 3 is done: say so instead of a traceback
            print("ZeRO needs your zero_per_gpu (lab 05, exercise 3), which is not implemented yet")
            return
        fig, ax = plt.subplots(figsize=(5, 4))
        plot_memory_bar(result.parts_gb, result.capacity_gb, label=kw["method"], ax=ax)
        ax.set_title(result.summary, fontsize=8)
        plt.show()

    zero = ({"zero_stage": widgets.fixed(0), "n_gpus": widgets.fixed(1)} if zero_per_gpu is None else
            {"zero_stage": widgets.IntSlider(value=0, min=0, max=3),
             "n_gpus": widgets.IntSlider(value=1, min=1, max=64)})
    return widgets.interactive(
        draw,
        model=widgets.Dropdown(options=list(MODELS), value="1.7B"),
        batch=widgets.IntSlider(value=4, min=1, max=64),
        seq=widgets.Dropdown(options=[256, 512, 1024, 2048, 4096], value=1024),
        precision=widgets.Dropdown(options=["mixed", "fp32"], value="mixed"),
        method=widgets.ToggleButtons(options=["full", "lora", "qlora"], value="full"),
        gradient_checkpointing=widgets.Checkbox(value=False, description="checkpointing"),
        **zero,
        gpu=widgets.Dropdown(options=list(GPUS), value="T4"),
        lora_rank=widgets.fixed(16),
    )
