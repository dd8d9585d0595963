"""Every fenced block of README.md and docs/ is loaded or run, so that no snippet rots (issue 16, item 7).

- YAML blocks load with `rheostat validate`'s reader and have no error; JSON and TOML blocks parse.
- Shell blocks run, page by page, in order, in a fresh sandbox (tests/docs_rig.py says how), with a
  controller of their own when they talk to one. The README's quick start is run end to end by
  tests/test_bootstrap_quickstart.py and not again here.
- A block under `<!-- illustrative -->` is skipped, counted and listed; a marker above anything else fails.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.docs_rig import (
    LOADED,
    SHELL,
    SHOWN,
    YAML,
    Block,
    broken_links,
    load_errors,
    needs_controller,
    pages,
    read_blocks,
    sandbox_for,
    stray_markers,
    yaml_errors,
)

ALL = [b for page in pages() for b in read_blocks(page)]
LOADABLE = [b for b in ALL if b.lang in LOADED and not b.illustrative]
RUN_PAGES = [
    page
    for page in pages()
    if any(b.lang in SHELL and not b.illustrative and not b.quick_start for b in read_blocks(page))
]


def test_every_block_has_a_language_the_doc_test_knows() -> None:
    unknown = [f"{b.where} ```{b.lang}" for b in ALL if b.lang not in SHELL | LOADED | SHOWN]
    assert not unknown, f"give these blocks a language that is run, loaded or shown: {unknown}"


def test_illustrative_markers_sit_right_above_a_block() -> None:
    stray = [f"{page}:{line}" for page in pages() for line in stray_markers(page)]
    assert not stray, f"`<!-- illustrative -->` must be the line right above a fence: {stray}"


def test_illustrative_blocks_are_few_and_listed(capsys: pytest.CaptureFixture[str]) -> None:
    shown = [b for b in ALL if b.illustrative]
    checked = [b for b in ALL if not b.illustrative and b.lang in SHELL | LOADED]
    with capsys.disabled():
        print(f"\n{len(checked)} blocks run or loaded; {len(shown)} illustrative, not run:")
        for b in shown:
            print(f"  {b.where} ```{b.lang} ({b.section})")
    assert all(b.lang in SHELL | LOADED for b in shown), "only a block that would be run or loaded is marked"
    assert len(shown) < len(checked), "illustrative is the exception"


@pytest.mark.parametrize("block", LOADABLE, ids=[b.where for b in LOADABLE])
def test_block_loads(block: Block, tmp_path: Path) -> None:
    if block.lang in YAML:
        page = read_blocks(block.page)
        errors = yaml_errors(block, tmp_path, [b for b in page if b.line < block.line and not b.illustrative])
    else:
        errors = load_errors(block)
    assert not errors, f"{block.where} ({block.section}):\n" + "\n".join(errors) + f"\n---\n{block.text}"


def run_page(page: str, root: Path) -> str | None:
    """A page's shell blocks in order, in a sandbox of their own: None, or what failed."""
    blocks = [b for b in read_blocks(page) if not b.illustrative and not b.quick_start]
    try:
        with contextlib.contextmanager(sandbox_for)(root, needs_controller(blocks)) as box:
            for b in blocks:
                if b.saved_as and b.lang in LOADED:
                    box.save(b)
                if b.lang not in SHELL:
                    continue
                out = box.sh(b)
                if out.returncode != 0:
                    logs = box.run_output() if box.run is not None else ""
                    return (
                        f"{b.where} ({b.section}) exited {out.returncode}:\n{b.text}\n"
                        f"--- stdout ---\n{out.stdout}\n--- stderr ---\n{out.stderr}\n{logs}"
                    )
    except BaseException as exc:  # pytest.fail and the rig's own asserts, from a worker thread
        return f"{page}: {type(exc).__name__}: {exc}"
    return None


# The pages mostly wait (for a controller to start, for a release's intervals), so a few run at once; each
# has its own folder, ports and controller. DOCS_PARALLEL=1 runs them one after the other.
PARALLEL = int(os.environ.get("DOCS_PARALLEL", "3"))


@pytest.fixture(scope="session")
def page_runs(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Future[str | None]]]:
    """Starts every selected page at once (a few at a time), so that their waits overlap."""
    selected = [
        item.callspec.params["page"]
        for item in request.session.items
        if getattr(item, "originalname", "") == "test_shell_blocks_run_in_order" and hasattr(item, "callspec")
    ]
    with ThreadPoolExecutor(max_workers=PARALLEL, thread_name_prefix="docs-page") as pool:
        yield {
            page: pool.submit(run_page, page, tmp_path_factory.mktemp(page.replace("/", "-")))
            for page in selected
        }


@pytest.mark.e2e
@pytest.mark.timeout(1200)
@pytest.mark.parametrize("page", RUN_PAGES)
def test_shell_blocks_run_in_order(page: str, page_runs: dict[str, Future[str | None]]) -> None:
    failure = page_runs[page].result()
    if failure is not None:
        pytest.fail(failure)


@pytest.mark.parametrize("page", pages())
def test_links_point_at_files_and_headings_that_exist(page: str) -> None:
    assert not broken_links(page), f"{page}: {broken_links(page)}"


def test_the_quick_start_skipped_here_is_the_one_test_bootstrap_quickstart_runs() -> None:
    from tests.test_bootstrap_quickstart import quick_start

    skipped = [b.text for b in read_blocks("README.md") if b.quick_start and b.lang in SHELL]
    assert skipped, "the README's quick start section has shell blocks"
    assert skipped == [text for lang, text in quick_start() if lang in SHELL]
