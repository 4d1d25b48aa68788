"""Plots the notebooks draw: loss curves, before/after bars and data-efficiency curves."""
from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.pyplot as plt

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
