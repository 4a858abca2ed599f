"""The README's first command: ``python -m dspex_actors demo``."""

from __future__ import annotations

import re

from dspex_actors import demo


def test_demo_walks_a_session_from_local_to_shared() -> None:
    lines: list[str] = []
    demo.run(out=lines.append)
    text = "\n".join(lines)
    assert re.search(r"session sess_[0-9a-f]{32} started on local state", text)
    assert "rejected: ValidationError: variable 'temperature'" in text
    assert "(rule 'max', value 3.5)" in text
    assert "temperature is still 0.7" in text
    assert re.search(r"switched local -> bridged in [0-9.]+ ms; bridge at 127\.0\.0\.1:\d+", text)
    assert "worker: temperature 0.7 -> 1.3 (version 1)" in text
    assert "the original handle sees temperature = 1.3 (version 1)" in text
    assert lines[-1].startswith("supervisor stopped")
