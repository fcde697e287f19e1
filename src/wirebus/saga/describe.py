"""Sagas in words and in pictures: ``App.describe()`` lines and a Mermaid flowchart per saga.

Example::

    print(mermaid(checkout))
    # flowchart LR
    #   start(["OrderPlaced"]) --> s0["reserve stock"]
    #   ...
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .definition import Saga

__all__ = ["describe_sagas", "mermaid"]


def describe_sagas(sagas: Iterable[Saga[Any]]) -> list[str]:
    """Lines for ``App.describe()``: each saga, what starts it, its steps and compensations."""
    lines = ["sagas:"]
    for saga in sagas:
        starts = ", ".join(t.__qualname__ for t in saga.start_on) or "Sagas.start"
        key = saga.key_field or "a key function"
        lines.append(f"  {saga.name} (key {key}; started by {starts})")
        for index, step in enumerate(saga.steps, 1):
            lines.append(f"    {index}. {_step_line(step)}")
    return lines


def _step_line(step: Any) -> str:
    if step.send is not None:
        replies = ", ".join(
            f"{tp.__qualname__}={m if isinstance(m, str) else 'fn'}"
            for tp, m in step.replies.items()
        )
        text = f"{step.name}: sends, waits for {replies}"
        if step.timeout is not None:
            text += f" (timeout {step.timeout:g}s)"
    else:
        text = f"{step.name}: in-process"
    if step.compensate is not None:
        text += f"; compensated by {step.compensate.__qualname__}"
    return text


def mermaid(saga: Saga[Any]) -> str:
    """A Mermaid flowchart of ``saga``: steps forwards, compensations backwards, timeouts.

    Solid arrows go forwards; a failure (an error, a ``fail`` reply, a
    timeout) leaves a step by a dotted arrow to the compensation of the step
    before it, and compensations run backwards to ``compensated``.
    """
    lines = ["flowchart LR"]
    starts = " / ".join(t.__name__ for t in saga.start_on) or "Sagas.start"
    lines.append(f'  start(["{saga.name}: {starts}"]) --> s0')
    count = len(saga.steps)
    for index, step in enumerate(saga.steps):
        label = step.name if step.send is None else f"{step.name}<br/>sends, waits for reply"
        lines.append(f'  s{index}["{label}"]')
        after = f"s{index + 1}" if index + 1 < count else "done"
        ok = [tp.__name__ for tp, m in step.replies.items() if m != "fail"]
        lines.append(f"  s{index} -->|{' / '.join(ok) or 'ok'}| {after}")
        failures = [tp.__name__ for tp, m in step.replies.items() if m == "fail"]
        if step.send is None:
            failures.append("error")
        if step.timeout is not None:
            failures.append(f"timeout {step.timeout:g}s")
        lines.append(f"  s{index} -.->|{' / '.join(failures)}| {_compensation_before(saga, index)}")
        if step.compensate is not None:
            lines.append(f'  c{index}[/"undo {step.name}"/]')
            lines.append(f"  c{index} --> {_compensation_before(saga, index)}")
    lines.append('  done(["completed"])')
    lines.append('  compensated(["compensated"])')
    return "\n".join(lines)


def _compensation_before(saga: Saga[Any], index: int) -> str:
    """The node a failure at ``index`` goes to: the nearest earlier compensation."""
    for earlier in range(index - 1, -1, -1):
        if saga.steps[earlier].compensate is not None:
            return f"c{earlier}"
    return "compensated"
