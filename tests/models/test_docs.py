"""docs/models.md is executable: its ```python blocks run in order in one namespace."""

from __future__ import annotations

import ast
import re
import types
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "models.md"


async def test_models_doc_examples_run() -> None:
    blocks = re.findall(r"^```python\n(.*?)^```$", DOC.read_text(), flags=re.DOTALL | re.MULTILINE)
    assert len(blocks) >= 6
    namespace: dict[str, object] = {"__name__": "models_doc"}
    for index, source in enumerate(blocks):
        code = compile(
            source,
            f"{DOC}:block{index}",
            "exec",
            flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT,
            dont_inherit=True,  # not this file's `from __future__ import annotations`
        )
        result = types.FunctionType(code, namespace)()
        if result is not None:  # the block awaited something
            await result
