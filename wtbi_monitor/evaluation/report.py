"""Evaluation reports: report.md, results.json and PNG plots in one folder.

Plots: ROC curves per protocol; score timelines of a few test turbines with icing shaded
(red), unlabelled transitions shaded (grey), the threshold, and alarms marked; per-channel
contribution shares of the alarms that overlapped icing, for models with a decoder.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import matplotlib as mpl

mpl.use("Agg")  # files only, never a display

import matplotlib.pyplot as plt
import numpy as np
import orjson

from wtbi_monitor.data.wtbi import TurbineFrame, runs
from wtbi_monitor.domain import Label
from wtbi_monitor.evaluation.protocols import MemberResult, ProtocolResult
from wtbi_monitor.families import PAPER_TABLE_III


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if np.isnan(value):
            return "-"
        return f"{value:.{digits}f}"
    return str(value)


def _slug(member: str) -> str:
    return member.replace(":", "-").replace("+", "-")


def plot_roc(protocol: ProtocolResult, path: Path) -> None:
    """All members' ROC curves on one protocol."""
    fig, ax = plt.subplots(figsize=(6.5, 6))
    for r in protocol.members:
        if r.roc["fpr"]:
            ax.plot(
                r.roc["fpr"],
                r.roc["tpr"],
                lw=1.2,
                label=f"{r.member} ({_fmt(r.window.get('auroc'))})",
            )
    if not any(r.roc["fpr"] for r in protocol.members):
        ax.text(0.5, 0.5, "no ROC: the test set lacks icing or normal windows", ha="center")
    ax.plot([0, 1], [0, 1], ls=":", c="grey", lw=1, label="chance")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    title = (
        "ROC, time-ordered protocol"
        if protocol.name == "time_ordered"
        else ("ROC, paper protocol (LEAKY random split)")
    )
    ax.set_title(title)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_timeline(result: MemberResult, frames: dict[str, TurbineFrame], path: Path) -> None:
    """Score over time for the timeline turbines, icing shaded, alarms marked."""
    turbines = list(result.timeline)
    if not turbines:
        return
    fig, axes = plt.subplots(len(turbines), 1, figsize=(12, 2.6 * len(turbines)), squeeze=False)
    for ax, tid in zip(axes[:, 0], turbines, strict=True):
        times, scores = result.timeline[tid]
        days = (times - times[0]) / 86_400_000 if times.size else times
        ax.plot(days, scores, lw=0.4, c="tab:blue")
        ax.axhline(result.threshold, c="k", ls="--", lw=0.8, label="threshold")
        frame = frames.get(tid)
        if frame is not None and times.size:
            t = frame.times_ms
            for label, colour in ((Label.ICING, "red"), (Label.UNKNOWN, "grey")):
                for a, b in runs(frame.labels == label):
                    if t[b] < times[0] or t[a] > times[-1]:
                        continue
                    ax.axvspan(
                        (t[a] - times[0]) / 86_400_000,
                        (t[b] - times[0]) / 86_400_000,
                        color=colour,
                        alpha=0.18,
                        lw=0,
                    )
        for alarm in result.alarms:
            if alarm.turbine_id == tid and times.size:
                x0 = (alarm.raised_ms - times[0]) / 86_400_000
                x1 = (alarm.end_ms - times[0]) / 86_400_000
                ax.plot(
                    [x0, max(x1, x0)],
                    [result.threshold] * 2,
                    c="darkorange",
                    lw=5,
                    solid_capstyle="butt",
                )
        lo, hi = np.quantile(scores, [0.001, 0.999]) if scores.size else (0, 1)
        ax.set_ylim(lo - 0.1 * abs(hi - lo), hi + 0.3 * abs(hi - lo))
        ax.set_ylabel(f"turbine {tid}\nscore", fontsize=8)
    axes[-1, 0].set_xlabel(
        "days into the test period (red: icing, grey: unlabelled, orange: alarms)"
    )
    fig.suptitle(f"{result.member}: time-ordered test period", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def channel_shares(result: MemberResult) -> dict[str, float]:
    """Mean contribution share per channel over alarms that overlapped icing."""
    sums: dict[str, float] = {}
    true_alarms = [a for a in result.alarms if a.verdict == "true" and a.top_channels]
    for alarm in true_alarms:
        for name, share in alarm.top_channels:
            sums[name] = sums.get(name, 0.0) + share
    return {k: v / len(true_alarms) for k, v in sums.items()} if true_alarms else {}


def plot_contributions(result: MemberResult, path: Path) -> bool:
    """Bar chart of `channel_shares`; False when there is nothing to plot."""
    shares = channel_shares(result)
    if not shares:
        return False
    items = sorted(shares.items(), key=lambda kv: kv[1])
    fig, ax = plt.subplots(figsize=(6, 0.35 * len(items) + 1.2))
    ax.barh([k for k, _ in items], [v for _, v in items], color="tab:purple")
    ax.set_xlabel("mean share among the top channels of alarms that overlapped icing")
    ax.set_title(f"{result.member}: which channels raised the alarms", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def write_report(
    out_dir: Path,
    protocols: list[ProtocolResult],
    frames: list[TurbineFrame],
    context: dict[str, Any],
    timeline_members: int = 2,
) -> Path:
    """Write report.md, results.json and the plots; return the report's path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    by_id = {f.turbine_id: f for f in frames}
    lines = [
        "# wtbi-monitor evaluation report",
        "",
        (
            f"Generated {datetime.now(UTC).isoformat(timespec='seconds')} by "
            f"`{context.get('command', '')}`."
        ),
        "",
        (
            f"Data: {context.get('data', '')} ({len(frames)} turbines, "
            f"{sum(len(f) for f in frames):,} readings). Model preset: "
            f"`{context.get('preset')}`, device: `{context.get('device')}`."
        ),
        "",
    ]
    results: dict[str, Any] = {"context": context, "protocols": {}}
    for protocol in protocols:
        results["protocols"][protocol.name] = {
            "description": protocol.description,
            "members": [m.to_json() for m in protocol.members],
            "single_channel": protocol.single_channel,
        }
        plot_roc(protocol, out_dir / f"roc_{protocol.name}.png")
        if protocol.name == "paper":
            lines += [
                "## Paper protocol (LEAKY: random split of overlapping stride-1 windows)",
                "",
                "Comparable to the paper's Table III only in form. Neighbouring windows share",
                "25 of 26 rows, so a random split puts near-copies of training windows in the",
                "test set.",
                "",
                "| member | AUROC | AUPRC | paper Table III AUROC | train windows | fit s |",
                "|---|---|---|---|---|---|",
            ]
            for m in protocol.members:
                lines.append(
                    f"| {m.member} | {_fmt(m.window['auroc'])} | {_fmt(m.window['auprc'])} | "
                    f"{_fmt(PAPER_TABLE_III.get(m.member))} | {m.train_windows} | "
                    f"{m.fit_seconds:.0f} |"
                )
            lines += ["", f"![ROC paper](roc_{protocol.name}.png)", ""]
            continue
        d = protocol.description
        lines += [
            "## Time-ordered protocol (honest)",
            "",
            (
                f"Test windows: {d['test_windows']:,} ({d['test_windows_evaluable']:,} outside "
                f"transition zones, {d['test_icing_windows']:,} icing)."
            ),
            "",
            (
                "| member | AUROC | AUPRC | episodes detected | median delay (min) | "
                "false alarms / turbine-day | alarm time on icing | recall@thr | FPR@thr | "
                "scoring win/s |"
            ),
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for m in protocol.members:
            e = m.events or {}
            lines.append(
                f"| {m.member} | {_fmt(m.window['auroc'])} | {_fmt(m.window['auprc'])} | "
                f"{e.get('episodes_detected', '-')}/{e.get('episodes', '-')} | "
                f"{_fmt(e.get('median_delay_min'), 0)} | "
                f"{_fmt(e.get('false_alarms_per_turbine_day'), 2)} | "
                f"{_fmt(e.get('alarm_time_icing_fraction'), 2)} | "
                f"{_fmt(m.window.get('recall_at_threshold'), 2)} | "
                f"{_fmt(m.window.get('fpr_at_threshold'), 3)} | {m.scoring_windows_per_s:,.0f} |"
            )
        if protocol.single_channel:
            lines += [
                "",
                "Single-channel ORACLE detectors (window mean of one channel, direction chosen",
                "on the test labels: an upper bound for any one-channel threshold rule):",
                "",
                "| channel | AUROC (oracle) | direction |",
                "|---|---|---|",
            ]
            for name, v in protocol.single_channel.items():
                lines.append(f"| {name} | {_fmt(v['auroc_oracle'])} | {v['direction']} |")
        lines += ["", f"![ROC time-ordered](roc_{protocol.name}.png)", ""]
        for m in protocol.members[:timeline_members]:
            name = f"timeline_{_slug(m.member)}.png"
            plot_timeline(m, by_id, out_dir / name)
            lines += [f"![timeline {m.member}]({name})", ""]
            bars = f"contributions_{_slug(m.member)}.png"
            if plot_contributions(m, out_dir / bars):
                lines += [f"![contributions {m.member}]({bars})", ""]
    (out_dir / "results.json").write_bytes(
        orjson.dumps(results, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY)
    )
    report = out_dir / "report.md"
    report.write_text("\n".join(lines) + "\n")
    return report
