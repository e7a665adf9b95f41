"""A tiny OpenAI-compatible server with vLLM's command line, for fast router race and fault tests.

Started by the same backend code as vLLM (BATON_SERVER_MODULE=tests.fake_vllm). It answers
each completion with `<served-name> says: <prompt words>` one word per chunk; a chat completion
answers the same to its messages' text joined (what a chat template that concatenates does). Behaviour knobs
come from `fake.json` in the model directory, so one engine can hold versions that behave
differently: startup_s (delay before /health is 200), hang (never healthy), token_delay_s
(pause between chunks), exit_at_start (exit at once with code 3), stall_after (stop sending
tokens after that many, keeping the connection and /health fine), log_line_bytes (print one
line that long for every request), ignore_sigterm (only SIGKILL ends it), error_rate (that share of
completions is answered 500, spread evenly: 0.2 fails every fifth), first_token_delay_s (a pause
before the first chunk: a slow version), answer_as (the name its answers start with instead of its
served name: two versions that answer alike), prefix (what an answer starts with instead of
`<answer_as> says:`; "" answers the prompt's last words alone: with the template "{text}" an echo of
the text), echo_prompt (answer with the whole prompt it got, after the prefix: what the template made of
the request), answer (the whole answer, whatever the prompt: a version that answers in one language), log_requests (print `request: METHOD PATH` for every request it gets: a test can tell
that nothing reached it), log_env (print `env: NAME NAME ...`, the names of its environment variables,
at start: a test can tell what a backend inherits). Like vLLM, it takes ignore_eos (the answer goes on
to max_tokens, padded with "on") and min_tokens (padded to that many). Like vLLM, it refuses (400) a request whose prompt plus max_tokens exceeds
--max-model-len (prompt words count as tokens), and /v1/* without its API key (401).

A test can also start it by itself, as a remote server outside Baton:
`python -m tests.fake_vllm --host 127.0.0.1 --port P --model DIR --served-model-name M` with the key
in VLLM_API_KEY.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route


def build_app(served_name: str, api_key: str, knobs: dict, max_model_len: int) -> Starlette:
    started = time.monotonic()
    startup_s = float(knobs.get("startup_s", 0))
    hang = bool(knobs.get("hang"))
    delay = float(knobs.get("token_delay_s", 0.01))
    stall_after = knobs.get("stall_after")
    log_line_bytes = int(knobs.get("log_line_bytes", 0))
    error_rate = float(knobs.get("error_rate", 0))
    first_token_delay = float(knobs.get("first_token_delay_s", 0))
    answered = [0]
    speaker = str(knobs.get("answer_as", served_name))
    prefix = str(knobs.get("prefix", f"{speaker} says:"))
    echo_prompt = bool(knobs.get("echo_prompt"))
    fixed_answer = knobs.get("answer")
    log_requests = bool(knobs.get("log_requests"))

    def authorized(request: Request) -> bool:
        if log_requests:
            print(f"request: {request.method} {request.url.path}", flush=True)
        return request.headers.get("authorization") == f"Bearer {api_key}"

    async def health(request: Request) -> JSONResponse:
        authorized(request)  # vLLM's /health needs no key
        ok = not hang and time.monotonic() - started >= startup_s
        return JSONResponse({}, status_code=200 if ok else 503)

    async def completions(request: Request):
        return await answer(request, chat=False)

    async def chat_completions(request: Request):
        return await answer(request, chat=True)

    async def answer(request: Request, chat: bool):
        if not authorized(request):
            return JSONResponse({"error": "unauthorized"}, status_code=401)
        body = await request.json()
        if log_line_bytes:
            print("x" * log_line_bytes, flush=True)
        if body.get("model") != served_name:
            return JSONResponse({"error": {"message": "no such model"}}, status_code=404)
        answered[0] += 1
        if int(answered[0] * error_rate) > int((answered[0] - 1) * error_rate):
            return JSONResponse({"error": {"message": "fake: error_rate", "type": "InternalServerError"}},
                                status_code=500)
        prompt = "".join(m["content"] for m in body["messages"]) if chat else body["prompt"]
        prompt_tokens = len(prompt.split())
        max_tokens = body.get("max_tokens")
        if max_tokens is not None and prompt_tokens + max_tokens > max_model_len:
            message = (f"'max_tokens' is too large: {max_tokens}. This model's maximum context length is "
                       f"{max_model_len} tokens and your request has {prompt_tokens} input tokens.")
            return JSONResponse({"error": {"message": message, "type": "BadRequestError", "code": 400}}, status_code=400)
        words = (str(fixed_answer).split() if fixed_answer is not None else
                 ([prefix] if prefix else []) + prompt.split()[0 if echo_prompt else -6:])
        words = words[: max(1, max_model_len - prompt_tokens if max_tokens is None else max_tokens)]
        # vLLM's ignore_eos (go on to max_tokens) and min_tokens: the answer is padded with "on".
        floor = max_tokens if body.get("ignore_eos") and max_tokens else int(body.get("min_tokens") or 0)
        words += ["on"] * (floor - len(words))
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": len(words), "total_tokens": prompt_tokens + len(words)}

        def choice(text: str, finish: str | None, first: bool = False) -> dict:
            if chat:
                delta = {"role": "assistant", "content": text} if first else {"content": text}
                return {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
            return {"index": 0, "text": text, "finish_reason": finish, "logprobs": None}

        def chunk(text: str, finish: str | None, with_usage: bool = False, first: bool = False) -> str:
            data = {"id": "cmpl-fake", "object": "chat.completion.chunk" if chat else "text_completion",
                    "created": 0, "model": served_name,
                    "choices": [] if with_usage else [choice(text, finish, first)]}
            if with_usage:
                data["usage"] = usage
            return f"data: {json.dumps(data, separators=(',', ':'))}\n\n"  # compact, as vLLM writes it

        if not body.get("stream"):
            text = " ".join(words)
            whole = ({"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "length"} if chat
                     else {"index": 0, "text": text, "finish_reason": "length"})
            return JSONResponse({"id": "cmpl-fake", "object": "chat.completion" if chat else "text_completion",
                                 "created": 0, "model": served_name, "choices": [whole], "usage": usage})

        async def events():
            if chat:
                yield chunk("", None, first=True)
            await asyncio.sleep(first_token_delay)
            for i, word in enumerate(words):
                await asyncio.sleep(delay)
                if stall_after is not None and i >= stall_after:
                    await asyncio.sleep(3600)
                last = i == len(words) - 1
                yield chunk(("" if i == 0 else " ") + word, "stop" if last else None)
            if (body.get("stream_options") or {}).get("include_usage"):
                yield chunk("", None, with_usage=True)
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    async def models(request: Request) -> JSONResponse:
        if not authorized(request):
            return JSONResponse({"error": "unauthorized"}, status_code=401)
        return JSONResponse({"object": "list", "data": [{"id": served_name, "object": "model", "max_model_len": max_model_len}]})

    return Starlette(routes=[Route("/health", health), Route("/v1/models", models),
                             Route("/v1/completions", completions, methods=["POST"]),
                             Route("/v1/chat/completions", chat_completions, methods=["POST"])])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--served-model-name", required=True)
    parser.add_argument("--max-model-len", type=int, default=2048)
    args, _unknown = parser.parse_known_args()  # vLLM flags are accepted and ignored
    knobs_file = Path(args.model) / "fake.json"
    knobs = json.loads(knobs_file.read_text()) if knobs_file.exists() else {}
    if knobs.get("exit_at_start"):
        print("fake: refusing to start (exit_at_start)", flush=True)
        sys.exit(3)
    print(f"fake server for {args.served_model_name} on {args.host}:{args.port}", flush=True)
    if knobs.get("log_env"):
        print("env: " + " ".join(sorted(os.environ)), flush=True)
    app = build_app(args.served_model_name, os.environ["VLLM_API_KEY"], knobs, args.max_model_len)
    server = uvicorn.Server(uvicorn.Config(app, host=args.host, port=args.port, log_level="warning"))
    if knobs.get("ignore_sigterm"):
        server.handle_exit = lambda *_: None  # type: ignore[method-assign]  # only SIGKILL ends it
    server.run()


if __name__ == "__main__":
    main()
