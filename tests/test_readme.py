"""The README's Python snippets, run verbatim: each prints what its ``# prints:``
comments say, in order (``…`` stands for any text, such as a port).

Each snippet runs in a fresh interpreter, as a reader would paste it; one that reads
``SESSION_ID`` gets a session of its own on a server that ``DSPEX_BRIDGE_ADDRESS``
names, holding ``temperature`` = 0.7. The compliance-kit snippet is written to a
test file beside a ``my_package`` whose ``MyBackend`` is a LocalState, and run by
pytest. The streaming snippet runs 100 more times in this process, verbatim and with
its backend swapped for BridgedState and RedisState: leaving its ``with`` block must
have delivered its line every time.
"""

from __future__ import annotations

import contextlib
import io
import re
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from bridge_support import REPO_ROOT, python_env, run_python, server_process

from dspex_actors import BridgedState

README = REPO_ROOT / "README.md"
PRINTS = re.compile(r"#\s*prints:\s?(.*)$")
STREAMING_RUNS = 100


def snippets() -> list[str]:
    """The README's ```python blocks, in order."""
    return re.findall(r"^```python\n(.*?)^```$", README.read_text(), flags=re.M | re.S)


def expected_lines(snippet: str) -> list[str]:
    """What the ``# prints:`` comments say, in order."""
    return [m.group(1).rstrip() for line in snippet.splitlines() if (m := PRINTS.search(line))]


def assert_printed(snippet: str, output: str) -> None:
    """``output`` is, line for line, what the snippet says it prints."""
    expected = expected_lines(snippet)
    got = output.splitlines()
    assert len(got) == len(expected), f"printed {got!r}, the README says {expected!r}"
    for line, wanted in zip(got, expected, strict=True):
        pattern = ".*".join(re.escape(part) for part in wanted.split("…"))
        assert re.fullmatch(pattern, line), f"printed {line!r}, the README says {wanted!r}"


def test_every_python_snippet_is_checked() -> None:
    found = snippets()
    assert len(found) == 9, f"{len(found)} Python snippets: update this test's list"
    silent = [s for s in found if not expected_lines(s) and "StateProviderContract" not in s]
    assert not silent, f"snippets that say nothing they print: {silent!r}"


@contextlib.contextmanager
def a_session(address: str) -> Iterator[str]:
    """A session on the server at ``address`` with ``temperature`` = 0.7, closed after."""
    with BridgedState.init(address=address) as owner:
        owner.register_variable("temperature", "float", 0.7, constraints={"min": 0, "max": 2})
        yield owner.session_id


def run_snippet(snippet: str, env: dict[str, str], cwd: Path) -> str:
    """Run ``snippet`` as a reader would save and run it: from a file, so that
    processes it spawns can import it (``python -c`` code they cannot)."""
    script = cwd / "snippet.py"
    script.write_text(snippet)
    return run_python(str(script), env=env, cwd=cwd, what=f"the snippet\n{snippet}")


@pytest.mark.parametrize("index", range(9))
def test_a_readme_snippet_prints_what_it_says(index: int, tmp_path: Path) -> None:
    snippet = snippets()[index]
    if "StateProviderContract" in snippet:
        run_the_kit_snippet(snippet, tmp_path)
        return
    if "SESSION_ID" not in snippet:
        assert_printed(snippet, run_snippet(snippet, python_env(), tmp_path))
        return
    with server_process() as server, a_session(server.address) as session_id:
        env = python_env(SESSION_ID=session_id, DSPEX_BRIDGE_ADDRESS=server.address)
        assert_printed(snippet, run_snippet(snippet, env, tmp_path))


def run_the_kit_snippet(snippet: str, root: Path) -> None:
    """The snippet as ``tests/test_my_backend.py``, beside a ``my_package`` whose
    backend is LocalState under another name; the whole kit must pass."""
    (root / "tests").mkdir()
    (root / "tests" / "test_my_backend.py").write_text(snippet)
    (root / "my_package.py").write_text(
        textwrap.dedent(
            """
            from dspex_actors import LocalState

            class MyBackend(LocalState):
                pass
            """
        )
    )
    output = run_python(
        *("-m", "pytest", "-q", "-p", "no:randomly", "-p", "no:cacheprovider"),
        "tests/test_my_backend.py",
        env=python_env(PYTHONPATH=f"{root}:{REPO_ROOT}"),
        cwd=root,
        what="the kit snippet's tests",
        timeout=300,
    )
    assert re.search(r"\b\d+ passed\b", output), output[-2000:]


def streaming_snippet() -> str:
    (found,) = [s for s in snippets() if "subscribe(" in s]
    return found


def run_in_process(snippet: str, runs: int) -> list[str]:
    """Run ``snippet`` ``runs`` times here; what each printed."""
    code = compile(snippet, "README.md", "exec")
    outputs = []
    for _ in range(runs):
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):  # the subscriber's thread prints here too
            exec(code, {"__name__": "__readme__"})
        outputs.append(printed.getvalue())
    return outputs


@pytest.mark.parametrize("backend", ["LocalState", "BridgedState", "RedisState"])
def test_the_streaming_snippet_prints_its_line_every_time(
    backend: str, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    snippet = streaming_snippet()
    if backend == "RedisState":
        monkeypatch.setenv("DSPEX_REDIS_URL", request.getfixturevalue("redis_url"))
    monkeypatch.delenv("DSPEX_BRIDGE_ADDRESS", raising=False)
    code = snippet.replace("LocalState", backend)
    outputs = run_in_process(code, STREAMING_RUNS)
    (wanted,) = expected_lines(snippet)
    missed = [i for i, out in enumerate(outputs) if out != wanted + "\n"]
    print(f"{backend}: the line printed in {STREAMING_RUNS - len(missed)} of {STREAMING_RUNS}")
    assert not missed, f"runs {missed[:10]} printed {outputs[missed[0]]!r}, not {wanted!r}"
