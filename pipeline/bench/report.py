"""The benchmark's targets, judged against the figures, and the printed table."""

from __future__ import annotations

import math
from typing import Any, Dict, List, NamedTuple, Optional


class Row(NamedTuple):
    figure: str
    measure: str
    statbus: str
    reference: str
    target: str
    passed: Optional[bool]  # None: reported, no target


def _unchanged(value: float, normal: float, absolute: float) -> bool:
    """'Unchanged within noise' on a shared 2-core machine: at most 1.5x the normal figure plus a little."""
    return value <= normal * 1.5 + absolute


def _us(value: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if value >= 10_000:
        return f"{value / 1000:,.1f} ms"
    return f"{value:,.1f} µs"


def _spread(s: Dict[str, float]) -> str:
    return f"{_us(s['p50'])} / {_us(s['p99'])} / {_us(s['max'])}"


def _rate(value: float) -> str:
    return f"{value:,.0f}/s"


def hotpath_rows(h: Dict[str, Any]) -> List[Row]:
    rows: List[Row] = []
    nb, ns = h["normal"]["baseline"], h["normal"]["statbus"]
    rows.append(Row("1 hot path", "add_stat, ns/call (training thread, wall)", f"{ns['add_stat_ns']:,.0f}",
                    f"{nb['add_stat_ns']:,.0f}", "≤ 1/2 baseline", ns["add_stat_ns"] <= nb["add_stat_ns"] / 2))
    rows.append(Row("1 hot path", "add_stat, CPU ns/value (incl. sender thread)", f"{ns['add_stat_cpu_ns']:,.0f}",
                    f"{nb['add_stat_cpu_ns']:,.0f}", "≤ 1/2 baseline",
                    ns["add_stat_cpu_ns"] <= nb["add_stat_cpu_ns"] / 2))
    rows.append(Row("1 hot path", "write_stats 12 keys p50/p99/max", _spread(ns["write_stats_us"]),
                    _spread(nb["write_stats_us"]), "p50 ≤ 1/20 baseline",
                    ns["write_stats_us"]["p50"] <= nb["write_stats_us"]["p50"] / 20))
    rows.append(Row("1 hot path", "other thread's add_stat max", _us(ns["other_thread_add_stat_us"]["max"]),
                    _us(nb["other_thread_add_stat_us"]["max"]), "", None))
    for scenario, label in (("sleepy", "+50 ms writer"), ("raising", "+raising writer"), ("down", "collector down")):
        if scenario not in h:
            continue
        s = h[scenario]["statbus"]
        b = h[scenario].get("baseline")
        same = (_unchanged(s["add_stat_cpu_ns"], ns["add_stat_cpu_ns"], 100.0)
                and _unchanged(s["write_stats_us"]["p50"], ns["write_stats_us"]["p50"], 5.0)
                and s["raised_into_training"] == 0)
        rows.append(Row("1 hot path", f"{label}: add_stat ns/call, CPU ns/value",
                        f"{s['add_stat_ns']:,.0f}, {s['add_stat_cpu_ns']:,.0f}",
                        f"{b['add_stat_ns']:,.0f}, {b['add_stat_cpu_ns']:,.0f}" if b else "-", "statbus unchanged", None))
        rows.append(Row("1 hot path", f"{label}: write_stats p50/p99/max", _spread(s["write_stats_us"]),
                        _spread(b["write_stats_us"]) if b else "-", "statbus unchanged", same))
        if b:
            rows.append(Row("1 hot path", f"{label}: other thread's add_stat max",
                            _us(s["other_thread_add_stat_us"]["max"]), _us(b["other_thread_add_stat_us"]["max"]),
                            "", None))
            rows.append(Row("1 hot path", f"{label}: write_stats raised into training",
                            f"{s['raised_into_training']} of {s['write_stats_calls']}",
                            f"{b['raised_into_training']} of {b['write_stats_calls']}", "statbus 0",
                            s["raised_into_training"] == 0))
    return rows


def throughput_rows(t: Dict[str, Any]) -> List[Row]:
    rows: List[Row] = []
    for n, f in t["values"].items():
        label = f"{n} trainer{'s' if n != '1' else ''}"
        rows.append(Row("2 throughput", f"{label}: values acked (journaled)", _rate(f["acked_values_per_s"]),
                        _rate(f["raw_values_per_s"]) + " raw", "≥ 1,000,000/s",
                        f["acked_values_per_s"] >= 1_000_000))
        rows.append(Row("2 throughput", f"{label}: values delivered to 4 plugins", _rate(f["delivered_values_per_s"]),
                        "", "≥ 1,000,000/s", f["delivered_values_per_s"] >= 1_000_000))
        rows.append(Row("2 throughput", f"{label}: values, share of raw pyzmq", f"{f['ratio_to_raw']:.1%}",
                        "100%", "≥ 50%", f["ratio_to_raw"] >= 0.5))
        if "intake_values_per_s" in f:
            rows.append(Row("2 throughput", f"{label}: same frames into a collector alone",
                            _rate(f["intake_values_per_s"]), f"{f['intake_ratio_to_raw']:.1%} of raw", "", None))
    for n, f in t["summaries"].items():
        label = f"{n} trainer{'s' if n != '1' else ''}"
        rows.append(Row("2 throughput", f"{label}: summaries acked", _rate(f["acked_summaries_per_s"]),
                        _rate(f["raw_summaries_per_s"]) + " raw", "≥ 10,000/s",
                        f["acked_summaries_per_s"] >= 10_000))
        rows.append(Row("2 throughput", f"{label}: summaries delivered to 4 plugins",
                        _rate(f["delivered_summaries_per_s"]), "", "≥ 10,000/s",
                        f["delivered_summaries_per_s"] >= 10_000))
        rows.append(Row("2 throughput", f"{label}: summaries, share of raw pyzmq", f"{f['ratio_to_raw']:.1%}",
                        "100%", "≥ 50%", f["ratio_to_raw"] >= 0.5))
        if "intake_summaries_per_s" in f:
            rows.append(Row("2 throughput", f"{label}: same frames into a collector alone",
                            _rate(f["intake_summaries_per_s"]), f"{f['intake_ratio_to_raw']:.1%} of raw", "", None))
    return rows


def recovery_rows(r: Dict[str, Any]) -> List[Row]:
    w, c = r["worker_kill_to_caught_up_s"], r["collector_restart_to_caught_up_s"]
    return [
        Row("3 recovery", f"worker kill -9 → caught up, p50 / max ({r['worker_kills']} kills)",
            f"{w['p50']:.2f} s / {w['max']:.2f} s", "", "p50 ≤ 1 s", w["p50"] <= 1.0),
        Row("3 recovery", f"collector kill -9, restart → all caught up ({r['collector_kills']} kills)",
            f"{c['p50']:.2f} s / {c['max']:.2f} s", "", "p50 ≤ 2 s", c["p50"] <= 2.0),
        Row("3 recovery", "collector restart → answering, p50 / max",
            f"{r['collector_restart_to_ready_s']['p50']:.2f} s / {r['collector_restart_to_ready_s']['max']:.2f} s",
            "", "", None),
    ]


def trainer_bounded(t: Dict[str, Any]) -> bool:
    """Growth of the trainer's RSS within its buffer (x1.5 for Python objects) plus 16 MiB of fixed cost."""
    return t["overflowed"] and t["rss_growth_mb"] <= 1.5 * t["buffer_mb"] + 16.0


def memory_rows(m: Dict[str, Any]) -> List[Row]:
    c, t = m["collector"], m["trainer"]
    workers = ", ".join(f"{k} {v:.0f}" for k, v in c["worker_rss_peak_mb"].items())
    return [
        Row("4 memory", f"collector RSS peak, {c['values']:,} values, 1 plugin stalled",
            f"{c['collector_rss_peak_mb']:.0f} MB", f"lag {c['stalled_lag_mb']:.0f} MB on disk", "< 200 MB",
            c["collector_rss_peak_mb"] < 200),
        Row("4 memory", "worker RSS peaks (MB)", workers, "", "", None),
        Row("4 memory", f"trainer RSS, collector down, {t['buffer_mb']:.0f} MiB buffer",
            f"+{t['rss_growth_mb']:.0f} MB (full {t['rss_full_mb']:.0f}, peak {t['rss_peak_mb']:.0f})",
            f"{t['values_dropped']:,} values dropped", "≤ 1.5×buffer + 16 MB", trainer_bounded(t)),
        Row("4 memory", "trainer: most events queued before the sender took them",
            f"{t.get('queued_events_max', 0):,}", "not bounded by the buffer", "", None),
    ]


def startup_rows(s: Dict[str, Any]) -> List[Row]:
    heavy = ", ".join(s["heavy_modules_imported"]) or "none"
    return [
        Row("5 start-up", "collector cold start → answering", f"{s['collector_ready_s']:.2f} s", "", "", None),
        Row("5 start-up", f"→ every worker ready ({len(s['plugins'])} plugins)", f"{s['workers_ready_s']:.2f} s",
            "", "", None),
        Row("5 start-up", "import statbus.pipeline: time", f"{s['import_s']:.3f} s", "", "< 0.3 s",
            s["import_s"] < 0.3),
        Row("5 start-up", "import statbus.pipeline: process RSS", f"{s['import_rss_mb']:.1f} MiB",
            f"bare python {s['interpreter_rss_mb']:.1f} MiB", "< 40 MiB", s["import_rss_mb"] < 40),
        Row("5 start-up", "writer/tensorboard modules a trainer imports", heavy, "", "none",
            not s["heavy_modules_imported"]),
    ]


def frameworks_rows(f: Dict[str, Any]) -> List[Row]:
    if "skipped" in f:
        return [Row("6 frameworks", "add_scalar: torch, tensorboardX, statbus", "skipped", f["skipped"], "", None)]
    rows: List[Row] = []
    for scenario, label in (("normal", ""), ("sleepy", "+50 ms writer: ")):
        s, t, x = (f[scenario][kind] for kind in ("statbus", "torch", "tensorboardX"))
        rows.append(Row("6 frameworks", f"{label}add_scalar, ns/call (caller, wall)", f"{s['ns_per_call']:,.0f}",
                        f"torch {t['ns_per_call']:,.0f}, tensorboardX {x['ns_per_call']:,.0f}", "≤ 1/10 torch",
                        s["ns_per_call"] <= t["ns_per_call"] / 10))
        rows.append(Row("6 frameworks", f"{label}add_scalar, CPU ns/call (all threads)", f"{s['cpu_ns_per_call']:,.0f}",
                        f"torch {t['cpu_ns_per_call']:,.0f}, tensorboardX {x['cpu_ns_per_call']:,.0f}", "", None))
    normal, sleepy = f["normal"]["statbus"]["ns_per_call"], f["sleepy"]["statbus"]["ns_per_call"]
    rows.append(Row("6 frameworks", "+50 ms writer: statbus add_scalar ns/call, with / without", f"{sleepy:,.0f}",
                    f"{normal:,.0f}", "statbus unchanged", _unchanged(sleepy, normal, 1000.0)))  # ~1 µs calls: noise
    return rows



def media_rows(figure: Dict[str, Any]) -> List[Row]:
    from .figures.media import rows

    return rows(figure, Row, _unchanged)


def learn_rows(figure: Dict[str, Any]) -> List[Row]:
    if "skipped" in figure:
        return [Row("7 learn", "ML-Agents training", "skipped", "", figure["skipped"], None)]
    rows: List[Row] = []
    normal = figure["default"]
    for name, label in (("default", "default writers"), ("slow_plugin", "+50 ms plugin"),
                        ("installed", "every installed plugin")):
        if name not in figure:
            continue
        f = figure[name]
        s, p = f["statbus"], f["plain"]
        speed_target, speed_passed, steps_target, steps_passed = "", None, "", None
        if name == "default":
            # Judged within pairs: the host's drift moves both runs of a pair alike.
            speed_target, speed_passed = "≥ 0.97× mlagents-learn", f["paired_ratio_geomean"] >= 0.97
        elif name == "slow_plugin":
            steps_target = "statbus unchanged"
            steps_passed = s["steps_per_s"] >= normal["statbus"]["steps_per_s"] * 0.9
        low, high = f["paired_ratio_ci95"]
        rows.append(Row("7 learn", f"{label}: speed ratio of each alternated pair, geometric mean [95% interval]",
                        f"{f['paired_ratio_geomean']:.2f}× [{low:.2f}–{high:.2f}]", "", speed_target, speed_passed))
        rows.append(Row("7 learn", f"{label}: training steps/s, median (ratio of medians; pairs' median)",
                        f"{s['steps_per_s']:,.0f} ({f['speed_ratio']:.2f}×; {f['paired_ratio_median']:.2f}×)",
                        f"{p['steps_per_s']:,.0f} mlagents-learn", steps_target, steps_passed))
        rows.append(Row("7 learn", f"{label}: wall time", f"{s['wall_s']:.1f} s", f"{p['wall_s']:.1f} s", "", None))
        rows.append(Row("7 learn", f"{label}: CPU, training process / statbus processes",
                        f"{s['training_process_cpu_s']:.1f} s / {s['statbus_processes_cpu_s']:.1f} s",
                        f"{p['training_process_cpu_s']:.1f} s / -", "", None))
        rows.append(Row("7 learn", f"{label}: CPU of the training loop's thread",
                        f"{s['training_thread_cpu_s']:.1f} s", f"{p['training_thread_cpu_s']:.1f} s", "", None))
        rows.append(Row("7 learn", f"{label}: training loop's thread not running (loop's wall - its CPU)",
                        f"{s['training_thread_waited_s']:.2f} s", f"{p['training_thread_waited_s']:.2f} s", "", None))
        rows.append(Row("7 learn", f"{label}: of which ready to run, no core free (Linux schedstat)",
                        f"{s['training_thread_run_delay_s']:.2f} s", f"{p['training_thread_run_delay_s']:.2f} s",
                        "", None))
        timed = f.get("writers_on_training_thread")
        if timed:
            rows.append(Row("7 learn", f"{label}: writers on the training thread, CPU (one more pair, each call "
                            "timed)", _writers_cell(timed["statbus"]), _writers_cell(timed["plain"]), "", None))
        for key, what in (("paired_thread_cpu", "1, thread's CPU for the same work, mlagents-learn / statbus"),
                          ("paired_on_cpu", "2, share of the loop's time the thread ran, statbus / mlagents-learn")):
            low, high = f[f"{key}_ci95"]
            rows.append(Row("7 learn", f"{label}: pair ratio's factor {what}",
                            f"{f[f'{key}_geomean']:.3f}× [{low:.3f}–{high:.3f}]", "", "", None))
    return rows


def _writers_cell(writers: Dict[str, Dict[str, float]]) -> str:
    cpu = sum(w["cpu_s"] for w in writers.values())
    calls = sum(int(w["calls"]) for w in writers.values())
    names = ", ".join(sorted(writers))
    return f"{cpu:.3f} s, {calls:,} calls ({names})"


def idle_rows(figure: Dict[str, Any]) -> List[Row]:
    if "skipped" in figure:
        return [Row("8 idle", "idle collector CPU", "skipped", "", figure["skipped"], None)]
    share = figure["percent_of_one_core"]
    workers = ", ".join(f"{name} {value:.2f}" for name, value in share.items() if name != "collector")
    return [
        Row("8 idle", f"collector + {len(share) - 1} plugins idle, % of one core", f"{figure['total_percent']:.2f}%",
            "", "< 0.5%", figure["total_percent"] < 0.5),
        Row("8 idle", "collector / workers (%)", f"{share.get('collector', 0.0):.2f} / {workers}", "", "", None),
    ]


def _slope(resources: Dict[str, Any], prefix: str) -> Optional[Dict[str, Any]]:
    """The series under ``prefix`` (one per worker for ``worker_...:``) whose slope is the steepest."""
    found = [(name, r) for name, r in resources.items() if name == prefix or name.startswith(prefix + ":")]
    found = [(name, r) for name, r in found if r.get("slope_per_min") is not None]
    if not found:
        return None
    name, r = max(found, key=lambda item: abs(item[1]["slope_per_min"]))
    return {"name": name.partition(":")[2], **r}


SOAK_FLAT = {"collector_rss_mb": 1.0, "worker_rss_mb": 1.0, "collector_fds": 1.0, "worker_fds": 1.0,
             "journal_mb": 1.0}
"""Largest slope per minute (after the first minute) that still counts as flat, judged on runs of 5 minutes or more."""


def soak_rows(f: Dict[str, Any]) -> List[Row]:
    if "skipped" in f:
        return [Row("9 soak", "kills for minutes, nothing lost", "skipped", "", f["skipped"], None)]
    kills = f["kills"]
    outputs = f["outputs"]
    rows = [
        Row("9 soak", f"{f['trainers']} trainers ({f['trainer_processes']} processes), {f['seconds'] / 60:.0f} min, "
            f"seed {f['seed']}, restarted by {f['restart_by']}",
            f"{f['summaries']:,} summaries, {f['values']:,} values",
            f"{f['values_per_s_per_trainer']:,.0f} values/s per trainer", "", None),
        Row("9 soak", "SIGKILLs: collector / workers / trainers",
            f"{kills['collector']} / {sum(kills['workers'].values())} / {kills['trainers']}",
            ", ".join(f"{k} {v}" for k, v in sorted(kills["workers"].items())), "", None),
        Row("9 soak", "collector SIGKILL → serving again, p50 / max",
            f"{f['collector_kill_to_serving_s']['p50']:.2f} s / {f['collector_kill_to_serving_s']['max']:.2f} s",
            f"of which start → serving {f['collector_start_to_serving_s']['p50']:.2f} s / "
            f"{f['collector_start_to_serving_s']['max']:.2f} s", "", None),
    ]
    for name, rule in (("stats.jsonl", "exactly once"), ("tensorboard", "exactly once"), ("example", "at least once")):
        if name in outputs:
            o = outputs[name]
            rows.append(Row("9 soak", f"{name}: every acked summary {rule} (problems)", f"{o['problems']}",
                            f"{o['summaries']:,} summaries read", "0", o["problems"] == 0))
    rows.append(Row("9 soak", "outputs disagreeing / trainers not flushed / values dropped",
                    f"{len(f['disagreements'])} / {f['not_flushed']} / {f['values_dropped']}", "", "0 / 0 / 0",
                    not f["disagreements"] and not f["not_flushed"] and not f["values_dropped"]))
    judged = f["seconds"] >= 300
    for prefix, unit in (("collector_rss_mb", "MB"), ("worker_rss_mb", "MB"), ("collector_fds", "fds"),
                         ("worker_fds", "fds"), ("journal_mb", "MB")):
        r = _slope(f["resources"], prefix)
        if r is None:
            continue
        label = prefix.replace("_mb", "").replace("_", " ") + (f" (steepest: {r['name']})" if r["name"] else "")
        rows.append(Row("9 soak", f"{label}: slope after the first minute",
                        f"{r['slope_per_min']:+.2f} {unit}/min", f"last {r['last']:.1f}, max {r['max']:.1f}",
                        f"|slope| ≤ {SOAK_FLAT[prefix]:g}/min" if judged else "",
                        abs(r["slope_per_min"]) <= SOAK_FLAT[prefix] if judged else None))
    rows.append(Row("9 soak", "journal once every plugin caught up (retention)", f"{f['journal_mb_caught_up']:.1f} MB",
                    f"segments of {f['segment_mb']:g} MB", "", None))
    s = f["status"]
    rows.append(Row("9 soak", "status: polls answered / violations / wrong `statbus status`",
                    f"{s['answered']}/{s['polls']} / {s['violations']} / {len(s['cli_wrong'])}",
                    f"{s['cli_runs']} CLI runs", "all / 0 / 0",
                    s["answered"] == s["polls"] and not s["violations"] and not s["cli_wrong"]
                    and not f["status_count_mismatches"]))
    rows.append(Row("9 soak", "worker hosts left by killed collectors: most at once / at the end",
                    f"{f['strays_max']} / {f['strays_end']}", "", "- / 0", f["strays_end"] == 0))
    return rows


def scale_rows(figure: Dict[str, Any]) -> List[Row]:
    if "skipped" in figure:
        return [Row("10 scale", "1 to 128 trainer processes", "skipped", "", figure["skipped"], None)]
    rows: List[Row] = []
    for n, f in figure.items():
        label = f"{n} process{'es' if n != '1' else ''}"
        if "error" in f:
            rows.append(Row("10 scale", label, "error", "", f["error"][:100], False))
            continue
        rows.append(Row("10 scale", f"{label}: values/s delivered to jsonl (acked, exits included)",
                        f"{_rate(f['delivered_values_per_s'])} ({_rate(f['acked_values_per_s'])})",
                        f"{f['values']:,} values", "every value once", f["exact"]))
        rows.append(Row("10 scale", f"{label}: collector CPU per million values",
                        f"{f['collector_cpu_s_per_million']:.2f} s",
                        f"± {0.01 / (f['values'] / 1e6):.2f} s (10 ms CPU ticks)", "", None))
        rows.append(Row("10 scale", f"{label}: add_stat p99 / worst (all processes)",
                        f"{_us(f['add_stat_p99_us'])} / {_us(f['add_stat_max_us'])}",
                        f"plain loop {_us(f['plain_p99_us'])} / {_us(f['plain_max_us'])}", "", None))
    return rows


ROW_MAKERS = {"hotpath": hotpath_rows, "throughput": throughput_rows, "recovery": recovery_rows,
              "memory": memory_rows, "startup": startup_rows, "frameworks": frameworks_rows, "media": media_rows,
              "learn": learn_rows, "idle": idle_rows, "scale": scale_rows, "soak": soak_rows}


def rows_for(figures: Dict[str, Any]) -> List[Row]:
    rows: List[Row] = []
    for name, make in ROW_MAKERS.items():
        if name in figures:
            rows.extend(make(figures[name]))
    return rows


def format_table(rows: List[Row]) -> str:
    header = Row("figure", "measure", "statbus", "baseline / raw", "target", None)
    cells = [list(header[:5]) + ["pass"]]
    for row in rows:
        mark = "" if row.passed is None else ("PASS" if row.passed else "FAIL")
        cells.append([row.figure, row.measure, row.statbus, row.reference, row.target, mark])
    widths = [max(len(line[i]) for line in cells) for i in range(6)]
    lines = []
    for index, line in enumerate(cells):
        lines.append("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(line)).rstrip())
        if index == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)
