"""`rheostat tutorial`: an interactive walkthrough on the sandbox, each step checked before the next."""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from types import FrameType

import click
from rich.console import Console

from rheostat.tutorial.lessons import LESSONS
from rheostat.tutorial.runner import Runner, StepFailed
from rheostat.tutorial.sandbox import Sandbox, SandboxError


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@click.command("tutorial")
@click.option(
    "--dir",
    "folder",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("rheostat-tutorial"),
    show_default=True,
    help="The tutorial's folder: its Git repository, the controller's data, and your progress.",
)
@click.option(
    "--lesson",
    type=click.IntRange(1, len(LESSONS)),
    default=None,
    help="Start at this lesson (default: the one after the last you finished).",
)
@click.option("--reset", is_flag=True, help="Forget the progress and the repository, and start over.")
@click.option(
    "--non-interactive",
    is_flag=True,
    help="Do every step without waiting for Enter (for tests and CI); exit 1 naming the step that failed.",
)
def tutorial_cmd(folder: Path, lesson: int | None, reset: bool, non_interactive: bool) -> None:
    """Learn Rheostat on this machine: a canary, a rollback, an A/B test, a blue/green switch, a flag
    rollout and a policy, with a real Envoy and local processes. Each step is checked before the next.

    \b
    Lessons:
      1. your first canary           4. a blue/green switch
      2. a failed release, rollback  5. a feature flag rolled out to a share of users
      3. an A/B test                 6. a policy that blocks a commit

    \b
    Examples:
      rheostat tutorial                  # continue where you left off
      rheostat tutorial --lesson 3       # jump to the A/B test
      rheostat tutorial --reset          # start over

    Everything it starts (`rheostat run`, Envoy, the application) is stopped when it ends or on Ctrl-C.
    """
    console = Console(highlight=False, soft_wrap=not sys.stdout.isatty())  # a pipe gets whole lines
    sandbox = Sandbox(folder)
    # Ctrl-C, SIGTERM and a closed terminal end the tutorial through the cleanup below (SIGINT too: a
    # parent may have left it ignored).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)
    code = 0
    try:
        if reset:
            sandbox.reset()
            console.print(f"Starting over in {sandbox.folder}.")
        sandbox.open()
        runner = Runner(sandbox, console, interactive=not non_interactive)
        start = runner.first_lesson(lesson)
        if start is None:
            console.print(
                f"You have done every lesson in {sandbox.folder}. `rheostat tutorial --lesson N` repeats one; "
                "`--reset` starts over."
            )
            return
        if sandbox.progress.done and lesson is None:
            console.print(f"Welcome back: continuing at lesson {start}.")
        runner.run(start)
    except StepFailed as exc:
        console.print(f"[red]The tutorial stopped:[/red] {exc}. The controller's output is in {sandbox.log}.")
        code = 1
    except SandboxError as exc:
        console.print(f"[red]error:[/red] {exc}")
        code = 1
    except KeyboardInterrupt:
        console.print("\nInterrupted. `rheostat tutorial` continues at the lesson you were in.")
        code = 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the cleanup short
        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        if sandbox.running():
            console.print("Stopping `rheostat run`, Envoy and the application ...")
        sandbox.stop()
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if code == 0:
        console.print(
            f"Everything the tutorial started is stopped. To look around again: "
            f"`rheostat run --repo {sandbox.repo} --data-dir {sandbox.data} "
            f"--listen 127.0.0.1:{sandbox.progress.api_port}`"
        )
    sys.exit(code)
