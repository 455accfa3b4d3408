"""The soak's outputs read back and held to what each trainer recorded.

What must land, per trainer (one category each):

* a trainer that finished (``stop``, flush, exit) — every step it wrote, exactly
  steps 1..N;
* a trainer killed with SIGKILL — every step up to the last one it saw
  acknowledged (``acked``: the step written before a ``flush()`` that returned
  True), and perhaps a few more that reached the journal before the kill but
  whose ack it never read: steps 1..K with ``acked <= K <= last written + 1``
  (the ``+ 1``: a kill between ``write_stats`` and the line saying so).  The
  values it recorded after its last journaled ``write_stats`` are lost with the
  process: nothing can send them after a SIGKILL.

``stats.jsonl`` and TensorBoard (read with TensorBoard's own reader, every event
file) must hold each of those summaries exactly once with exactly its values, and
the same K; the example plugin (a third-party plugin) at least once.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import math
import os
from typing import Any, Dict, List, Mapping, Optional, Tuple

from ..procs import PPO_KEYS
from .trainer import step_values

EXAMPLES = 8
"""Problems quoted per output (all are counted)."""


@dataclasses.dataclass(frozen=True)
class Expected:
    low: int
    """Steps 1..low must land."""
    high: int
    """No step above it may land."""


class Tally:
    """Counts of one output's problems, with the first few quoted."""

    def __init__(self) -> None:
        self.counts: Dict[str, int] = collections.Counter()
        self.examples: List[str] = []
        self.summaries = 0
        self.repeated = 0
        """Summaries delivered more than once (allowed where the rule is "at least once")."""
        self.landed: Dict[str, int] = {}

    def problem(self, kind: str, text: str) -> None:
        self.counts[kind] += 1
        if len(self.examples) < EXAMPLES:
            self.examples.append(f"{kind}: {text}")

    def as_dict(self) -> Dict[str, Any]:
        return {"summaries": self.summaries, "problems": sum(self.counts.values()), **dict(self.counts),
                "repeated": self.repeated, "examples": self.examples}


def _judge_steps(tally: Tally, category: str, steps: List[int], want: Expected, exactly_once: bool) -> int:
    """Hold one category's landed steps to ``want``; the K they show (the highest contiguous step)."""
    counts = collections.Counter(steps)
    landed = 0
    while counts.get(landed + 1):
        landed += 1
    if landed < want.low:
        tally.problem("missing", f"{category}: steps 1..{want.low} must land, {landed + 1} is not there")
    beyond = sorted(s for s in counts if s > want.high or s > landed)
    if beyond:
        tally.problem("unexpected", f"{category}: steps {beyond[:5]} (landed 1..{landed}, at most {want.high})")
    if exactly_once:
        twice = sorted(s for s, n in counts.items() if n > 1)
        if twice:
            tally.problem("duplicated", f"{category}: steps {twice[:5]} more than once ({len(twice)} steps)")
    tally.landed[category] = landed
    return landed


def _read_jsonl(path: str) -> List[Dict[str, Any]]:
    try:
        with open(path, encoding="utf-8") as handle:
            return [json.loads(line) for line in handle if line.strip()]
    except FileNotFoundError:
        return []


def check_stats_jsonl(path: str, expected: Mapping[str, Expected], per_key: int) -> Tally:
    tally = Tally()
    steps: Dict[str, List[int]] = collections.defaultdict(list)
    for line in _read_jsonl(path):
        if "step" not in line:
            continue
        tally.summaries += 1
        category, step = line["category"], line["step"]
        if category not in expected:
            tally.problem("unknown", f"{category} step {step}")
            continue
        steps[category].append(step)
        values = line["values"]
        if set(values) != set(PPO_KEYS):
            tally.problem("wrong", f"{category} step {step}: keys {sorted(values)[:3]}...")
            continue
        for k, key in enumerate(PPO_KEYS):
            want = step_values(step, k, per_key)
            if values[key]["num"] != len(want) or values[key]["sum"] != sum(want):
                tally.problem("wrong", f"{category} step {step} {key}: num {values[key]['num']}, "
                              f"sum {values[key]['sum']} (want {len(want)}, {sum(want)})")
                break
    for category, want in sorted(expected.items()):
        _judge_steps(tally, category, steps.get(category, []), want, exactly_once=True)
    return tally


def check_tensorboard(run_dir: str, expected: Mapping[str, Expected], per_key: int) -> Tally:
    """Every event file of each category's directory, through TensorBoard's reader; and its accumulator."""
    from tensorboard.backend.event_processing import event_accumulator as ea
    from tensorboard.backend.event_processing.event_file_loader import LegacyEventFileLoader

    tag = PPO_KEYS[0]
    tally = Tally()
    for category, want in sorted(expected.items()):
        directory = os.path.join(run_dir, category)
        names = sorted(n for n in os.listdir(directory) if n.startswith("events.out.tfevents")) \
            if os.path.isdir(directory) else []
        raw: List[int] = []
        for name in names:
            for event in LegacyEventFileLoader(os.path.join(directory, name)).Load():
                for value in event.summary.value if event.HasField("summary") else ():
                    if value.tag != tag:
                        continue
                    raw.append(event.step)
                    mean = math.fsum(step_values(event.step, 0, per_key)) / per_key
                    if not math.isclose(value.simple_value, mean, rel_tol=1e-6):
                        tally.problem("wrong", f"{category} step {event.step}: {value.simple_value} (want {mean})")
        tally.summaries += len(raw)
        landed = _judge_steps(tally, category, raw, want, exactly_once=True)
        if names:
            accumulator = ea.EventAccumulator(directory, size_guidance={ea.SCALARS: 0})
            accumulator.Reload()
            shown = [event.step for event in accumulator.Scalars(tag)]
            if shown != list(range(1, landed + 1)):
                tally.problem("shown", f"{category}: TensorBoard shows {len(shown)} points, not steps 1..{landed}")
    return tally


def check_example(path: str, expected: Mapping[str, Expected]) -> Tally:
    """The example plugin's ``<category> <step> ...`` lines: at least once each (a third-party plugin)."""
    tally = Tally()
    steps: Dict[str, List[int]] = collections.defaultdict(list)
    try:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                fields = line.split(" ", 2)
                if len(fields) >= 2:
                    tally.summaries += 1
                    steps[fields[0]].append(int(fields[1]))
    except FileNotFoundError:
        pass
    for category in sorted(set(steps) - set(expected)):
        tally.problem("unknown", category)
    for category, want in sorted(expected.items()):
        _judge_steps(tally, category, steps.get(category, []), want, exactly_once=False)
    tally.repeated = sum(len(s) - len(set(s)) for s in steps.values())
    return tally


def disagreements(tallies: Mapping[str, Tally], reference: str = "stats.jsonl") -> List[str]:
    """Categories where an output landed a different K than ``reference`` (the journal holds one truth)."""
    ref = tallies[reference].landed
    found = []
    for name, tally in tallies.items():
        for category, landed in sorted(tally.landed.items()):
            if name != reference and landed != ref.get(category):
                found.append(f"{name}: {category} has 1..{landed}, {reference} 1..{ref.get(category)}")
    return found


def expected_of(lines: List[Dict[str, Any]], killed: bool) -> Tuple[Expected, Optional[Dict[str, Any]]]:
    """What one trainer's summaries must be, from its stdout lines; and its final report (None if killed)."""
    done = next((line for line in lines if line.get("done")), None)
    written = max([line["w"] for line in lines if "w" in line], default=0)
    if done is not None and not killed:
        return Expected(done["steps"], done["steps"]), done
    acked = max([line["acked"] for line in lines if "acked" in line], default=0)
    return Expected(acked, written + 1), None


def dropped_values(lines: List[Dict[str, Any]]) -> int:
    return max([int(line.get("values_dropped") or 0) for line in lines], default=0)
