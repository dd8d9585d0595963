"""Runs the lessons: says what happens, waits for Enter (unless non-interactive), acts, and checks."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from rich.console import Console
from rich.markup import escape

from rheostat.tutorial import actions as a
from rheostat.tutorial import checks, files
from rheostat.tutorial.lessons import LESSONS, Lesson, Step
from rheostat.tutorial.sandbox import Sandbox
from rheostat.tutorial.state import Check, Session

_VAR = re.compile(r"\{(\w+)\}")


class StepFailed(Exception):
    def __init__(self, lesson: int, step: str, why: str) -> None:
        super().__init__(f"lesson {lesson}, step '{step}': {why}")
        self.step = step


def fill(text: str, values: dict[str, str]) -> str:
    """Put the session's values into a text; other braces (JSON in a curl command) stay as they are."""
    return _VAR.sub(lambda m: values.get(m.group(1), m.group(0)), text)


@dataclass
class Runner:
    sandbox: Sandbox
    console: Console
    interactive: bool

    def __post_init__(self) -> None:
        self.session = Session(self.sandbox)

    def say(self, text: str, style: str = "") -> None:
        line = escape(fill(text, self.session.vars()))
        self.console.print(f"[{style}]{line}[/{style}]" if style else line, highlight=False)

    def first_lesson(self, requested: int | None) -> int | None:
        if requested is not None:
            return requested
        done = self.sandbox.progress.done
        nxt = max(done) + 1 if done else 1
        return nxt if nxt <= len(LESSONS) else None

    def run(self, start: int) -> None:
        if self.sandbox.set_aside():
            self.say(
                f"Uncommitted changes in {self.sandbox.repo} (from an interrupted lesson) are set aside: "
                "`git stash list` shows them.",
                "yellow",
            )
        for lesson in LESSONS[start - 1 :]:
            self.ensure_sandbox(lesson)
            self.lesson(lesson)
            progress = self.sandbox.progress
            progress.done = sorted(set(progress.done) | {lesson.number})
            self.sandbox.save()
            self.say(f"Lesson {lesson.number} done.", "bold green")
        self.say("\nEvery lesson is done.", "bold green")

    def ensure_sandbox(self, lesson: Lesson) -> None:
        """Lesson 1 builds the sandbox step by step; a later lesson (resumed, or jumped to) gets it quietly."""
        if lesson.number == 1 or self.sandbox.running():
            return
        sb = self.sandbox
        self.say(f"Starting the sandbox again: `rheostat run` on {sb.repo} (output in {sb.log}) ...", "dim")
        if sb.read(files.WORKLOAD) is None:  # jumped to a later lesson in a new folder
            first = a.Commit(a.first_files)
            first.prompt(self.session)
            self.say(first.run(self.session), "dim")
        sb.start()
        self.wait("the sandbox", checks.at_rest, 90.0, lesson.number)
        self.say(f"The sandbox is up: dashboard {sb.api}/, service {sb.service}/", "dim")

    def lesson(self, lesson: Lesson) -> None:
        self.console.rule(f"Lesson {lesson.number} of {len(LESSONS)}: {lesson.title}")
        for step in lesson.steps:
            self.step(lesson, step)

    def step(self, lesson: Lesson, step: Step) -> None:
        self.console.print()
        if step.action is not None:
            what = step.action.prompt(self.session)  # may remember versions the text names
            self.say(step.text)
            diff = step.action.show(self.session)
            if diff:
                self.console.print(escape(diff), style="dim", highlight=False, soft_wrap=True)
            if self.interactive:
                self.say(f"Next: {what}.", "bold")
                ask = (
                    "Press Enter and the tutorial does it (or do it yourself, then press Enter) "
                    if step.action.by_hand
                    else "Press Enter to go on "
                )
                try:
                    self.console.input(ask)
                except EOFError:  # stdin closed: go on as if Enter was pressed
                    self.console.print()
            else:
                self.say(f"→ {what}", "dim")
            self.say(step.action.run(self.session), "dim")
        else:
            self.say(step.text)
        for look in step.look:
            self.say(f"  look: {look}", "cyan")
        if step.check is not None:
            self.wait(step.name, step.check, step.timeout_s, lesson.number)

    def wait(self, name: str, check: Check, timeout_s: float, lesson: int) -> None:
        """Poll a check, printing each new state, until it is ok; raise StepFailed when it cannot be."""
        started = time.monotonic()
        last = ""
        while True:
            seen = check(self.session)
            if seen.ok:
                self.say(f"✓ {name}: {seen.state}", "green")
                return
            if seen.broken:
                self.say(f"✗ {name}: {seen.broken}", "red")
                raise StepFailed(lesson, name, seen.broken)
            if seen.state != last:
                self.say(f"  [{time.monotonic() - started:4.0f}s] {seen.state}", "dim")
                last = seen.state
            if time.monotonic() - started > timeout_s:
                why = f"not done after {timeout_s:.0f}s; last seen: {seen.state}"
                self.say(f"✗ {name}: {why}", "red")
                raise StepFailed(lesson, name, why)
            time.sleep(0.3)
