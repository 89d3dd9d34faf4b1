"""``spiral serve``: an OpenAI-compatible completions server on the continuous-batching engine.

``POST /v1/completions`` takes OpenAI's fields (model, prompt, max_tokens, temperature,
top_p, stop, seed, stream) and answers a ``text_completion`` object, or, with
``"stream": true``, server-sent events — one ``data: {chunk}`` per piece of text and a
final ``data: [DONE]`` — so the official ``openai`` client works unchanged. ``GET
/v1/models`` lists the one model. Errors use OpenAI's shape, ``{"error": {"message",
"type", "param", "code"}}``, with a 4xx status: malformed JSON, an unknown model, a prompt
plus max_tokens beyond the context, a temperature outside [0, 2]. Our models have no chat
template, so ``/v1/chat/completions`` answers 404 saying so. Built on Starlette (ASGI) and
uvicorn (the ``serve`` extra); one engine thread batches every live request
(:mod:`spiral.inference.service`). Chapter: stage 17 (inference).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

from spiral.inference.scheduler import Engine, Request
from spiral.inference.service import EngineService

__all__ = ["ServeConfig", "build_app", "load_model"]


@dataclass(frozen=True)
class ServeConfig:
    block_size: int = 16
    max_batch: int = 8
    num_blocks: int | None = None  # None: room for max_batch full-context sequences
    prefix_cache: bool = True  # share a common prompt prefix's blocks between requests


class ApiError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None,
                 code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code

    def body(self) -> dict[str, Any]:
        kind = "invalid_request_error" if self.status < 500 else "server_error"
        return {"error": {"message": self.message, "type": kind, "param": self.param,
                          "code": self.code}}


def load_model(source: str) -> tuple[Any, Any, str]:
    """(model, tokenizer, served name) from a run directory of ``spiral train`` or a
    pretrained name or folder; only models a KV cache can drive are accepted."""
    from pathlib import Path

    from spiral.inference.kv_cache import supports_cache

    path = Path(source)
    if (path / "config.json").is_file() and (path / "checkpoint.safetensors").is_file():
        from spiral.runs import load_run

        model, tok, _ = load_run(path)
    else:
        from spiral.models.pretrained import load_pretrained

        pre = load_pretrained(source)
        model, tok = pre.model, pre.tokenizer
    if not supports_cache(model):
        raise ValueError(f"{source}: only GPT models can be served (they decode with a cache)")
    model.eval()
    return model, tok, path.name if path.is_dir() else source


def _number(body: dict[str, Any], key: str, default: Any, kind: type, lo: float,
            hi: float) -> Any:
    v = body.get(key, default)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, (int, float) if kind is float else int):
        raise ApiError(400, f"'{key}' must be a {kind.__name__}, got {v!r}", key)
    if not lo <= v <= hi:
        raise ApiError(400, f"'{key}' must lie in [{lo}, {hi}], got {v}", key)
    return kind(v)


def parse_completion(body: Any, model_name: str, tokenizer: Any, context: int
                     ) -> tuple[Request, list[str], bool]:
    """Validate a /v1/completions body into (request, stop strings, stream) or raise."""
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    if body.get("model") != model_name:
        raise ApiError(404, f"The model '{body.get('model')}' does not exist; this server "
                            f"serves '{model_name}'", "model", "model_not_found")
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1:
        prompt = prompt[0]
    if not isinstance(prompt, str) or not prompt:
        raise ApiError(400, "'prompt' must be one non-empty string", "prompt")
    if body.get("n", 1) != 1:
        raise ApiError(400, "only n = 1 is supported", "n")
    max_tokens = _number(body, "max_tokens", 16, int, 1, 1 << 20)
    temperature = _number(body, "temperature", 1.0, float, 0.0, 2.0)
    top_p = _number(body, "top_p", 1.0, float, 1e-9, 1.0)
    seed = _number(body, "seed", None, int, 0, 2**63 - 1)
    stop = body.get("stop") or []
    stop = [stop] if isinstance(stop, str) else stop
    if not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop):
        raise ApiError(400, "'stop' must be a string or a list of strings", "stop")
    try:
        ids = tokenizer.encode(prompt)
    except ValueError as err:  # a character-level model meets a character it never saw
        raise ApiError(400, f"the prompt cannot be tokenized: {err}", "prompt") from None
    if len(ids) + max_tokens > context:
        raise ApiError(400, f"This model's maximum context length is {context} tokens; the "
                            f"prompt has {len(ids)} and max_tokens asks for {max_tokens}",
                       "max_tokens", "context_length_exceeded")
    if seed is None:
        seed = uuid.uuid4().int % (2**63)
    req = Request(ids, max_tokens, temperature=temperature, top_p=top_p, seed=seed)
    return req, stop, bool(body.get("stream", False))


class _Decoder:
    """Token ids -> new text, holding back an incomplete UTF-8 character; applies stops."""

    def __init__(self, tokenizer: Any, stop: list[str]) -> None:
        self.tok, self.stop, self.sent = tokenizer, stop, ""
        self.ids: list[int] = []

    def push(self, token: int) -> tuple[str, bool]:
        """Add a token; return (text safe to send now, whether a stop string matched)."""
        self.ids.append(token)
        text = self.tok.decode(self.ids)
        for s in self.stop:
            if s in text:
                return self._emit(text[:text.index(s)]), True
        safe = len(text) - 1 if text.endswith("\ufffd") else len(text)
        for s in self.stop:  # hold back a tail that may grow into a stop string
            for k in range(min(len(s) - 1, safe), 0, -1):
                if text[:safe].endswith(s[:k]):
                    safe -= k
                    break
        return self._emit(text[:safe]), False

    def _emit(self, upto: str) -> str:
        delta = upto[len(self.sent):] if upto.startswith(self.sent) else ""
        self.sent = max(self.sent, upto, key=len)
        return delta

    def flush(self) -> str:
        """What is left when the request ends without a stop string."""
        return self._emit(self.tok.decode(self.ids))


def _error(err: ApiError) -> Any:
    from starlette.responses import JSONResponse

    return JSONResponse(err.body(), status_code=err.status)


def build_app(model: Any, tokenizer: Any, model_name: str,
              config: ServeConfig = ServeConfig()) -> Any:
    """The Starlette application; its engine thread starts now and stops on shutdown."""
    from starlette.applications import Starlette
    from starlette.requests import Request as HttpRequest
    from starlette.responses import JSONResponse, StreamingResponse
    from starlette.routing import Route

    ctx = int(model.context_length)
    blocks = config.num_blocks or config.max_batch * -(-ctx // config.block_size)
    service = EngineService(Engine(model, blocks, config.block_size, config.max_batch,
                                   prefix_cache=config.prefix_cache))

    def chunk(cid: str, text: str, finish: str | None) -> dict[str, Any]:
        return {"id": cid, "object": "text_completion", "created": int(time.time()),
                "model": model_name, "choices": [{"text": text, "index": 0, "logprobs": None,
                                                  "finish_reason": finish}]}

    async def completions(http: HttpRequest) -> Any:
        try:
            try:
                body = json.loads(await http.body())
            except (json.JSONDecodeError, UnicodeDecodeError) as err:
                raise ApiError(400, f"the request body is not valid JSON: {err}") from None
            req, stop, stream = parse_completion(body, model_name, tokenizer, ctx)
        except ApiError as err:
            return _error(err)
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[tuple[str, str | None, str | None]] = asyncio.Queue()
        decoder = _Decoder(tokenizer, stop)
        gone = [False]  # the client went away: the engine stops this request at its next token

        def listener(token: int | None, finish: str | None, error: str | None) -> bool:
            text, hit = decoder.push(token) if token is not None else ("", False)
            if finish or hit or error:
                text += "" if hit or error else decoder.flush()
                finish = "stop" if hit or finish == "stop" else finish
            if text or finish or error:  # a held-back partial character sends nothing yet
                loop.call_soon_threadsafe(events.put_nowait, (text, finish, error))
            return hit or gone[0]

        service.submit(req, listener)
        cid = f"cmpl-{uuid.uuid4().hex[:24]}"

        async def pieces() -> Any:
            while True:
                text, finish, error = await events.get()
                if error:
                    raise ApiError(500, error)
                yield text, finish
                if finish:
                    return

        if stream:
            async def sse() -> Any:
                try:
                    async for text, finish in pieces():
                        yield f"data: {json.dumps(chunk(cid, text, finish))}\n\n"
                except ApiError as err:
                    yield f"data: {json.dumps(err.body())}\n\n"
                finally:
                    gone[0] = True
                yield "data: [DONE]\n\n"
            return StreamingResponse(sse(), media_type="text/event-stream")
        out, reason = [], None
        try:
            async for text, finish in pieces():
                out.append(text)
                reason = finish
        except ApiError as err:
            return _error(err)
        body = chunk(cid, "".join(out), reason)
        n_out = len(req.output)
        body["usage"] = {"prompt_tokens": len(req.prompt), "completion_tokens": n_out,
                         "total_tokens": len(req.prompt) + n_out}
        return JSONResponse(body)

    async def models(_: HttpRequest) -> Any:
        return JSONResponse({"object": "list", "data": [
            {"id": model_name, "object": "model", "created": 0, "owned_by": "spiral"}]})

    async def chat(_: HttpRequest) -> Any:
        return _error(ApiError(404, f"'{model_name}' has no chat template; use "
                                    "/v1/completions", None, "chat_not_supported"))

    async def health(_: HttpRequest) -> Any:
        return JSONResponse({"status": "ok", **service.stats()})

    @contextlib.asynccontextmanager
    async def lifespan(_: Any) -> Any:
        yield
        service.close()

    app = Starlette(routes=[Route("/v1/completions", completions, methods=["POST"]),
                            Route("/v1/chat/completions", chat, methods=["POST"]),
                            Route("/v1/models", models), Route("/health", health)],
                    lifespan=lifespan)
    app.state.service = service
    return app
