"""Load a local model and answer a one-token prompt, in a process of its own.

``cadenza doctor`` runs this as a child (``python -m cadenza.models._probe MODEL``) so that
a native crash — llama.cpp built for instructions this CPU lacks dies with SIGILL or
SIGSEGV — ends the child, not the caller, and can be reported with its fix. Prints one JSON
line with the CPU features llama.cpp was built with first (so it is there even when the
model then crashes), then a JSON line: load and answer times and the reply.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time


async def _probe(name: str) -> dict[str, object]:
    import llama_cpp

    from cadenza.models import ModelRequest, infer_model

    info = llama_cpp.llama_print_system_info()
    text = info.decode(errors="replace") if isinstance(info, bytes) else str(info)
    print("system_info " + " ".join(text.split()), flush=True)
    model = infer_model(name)
    started = time.perf_counter()
    load = getattr(model, "load", None)
    if load is not None:
        await load()
    loaded = time.perf_counter()
    reply = await model.request(ModelRequest.of("Say OK.", max_tokens=1, temperature=0))
    answered = time.perf_counter()
    return {
        "model": name,
        "load_s": round(loaded - started, 3),
        "answer_s": round(answered - loaded, 3),
        "reply": reply.text,
    }


def main() -> None:
    name = sys.argv[1] if len(sys.argv) > 1 else "local:smollm2"
    print(json.dumps(asyncio.run(_probe(name))), flush=True)


if __name__ == "__main__":
    main()
