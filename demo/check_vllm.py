"""Check that real vLLM serves a model built by demo/build_model.py with the same answers.

    .venv-vllm/bin/python demo/check_vllm.py --model /tmp/demo-v2 [--n 40] [--port 18555]

Starts `python -m vllm.entrypoints.openai.api_server` on 127.0.0.1 in its own process
group (CPU flags: --dtype float32 --enforce-eager --max-model-len 512,
VLLM_CPU_KVCACHE_SPACE=1), waits for /health, then for N phrasebook rows compares
POST /v1/completions (temperature 0, stop ["\\n"]) with the local greedy decode,
checks one streamed request with stream_options.include_usage, prints start-up time
and peak RSS of the server's process group, and kills the whole group at the end.
Exit code 0 when every answer matched and the stream was well-formed.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import build_model as bm


def group_mem_kb(pgid: int) -> tuple[int, int]:
    """(sum of RSS, sum of PSS) in KiB over the processes of the group. RSS counts
    shared pages once per process; PSS splits them, so its sum is the real footprint."""
    rss = pss = 0
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            if os.getpgid(int(d)) != pgid:
                continue
            with open(f"/proc/{d}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Rss:"):
                        rss += int(line.split()[1])
                    elif line.startswith("Pss:"):
                        pss += int(line.split()[1])
        except (OSError, ProcessLookupError):
            continue
    return rss, pss


def group_alive(pgid: int) -> list[int]:
    pids = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                if os.getpgid(int(d)) == pgid:
                    pids.append(int(d))
            except (OSError, ProcessLookupError):
                pass
    return pids


def request(url: str, key: str, body: dict | None, timeout: float = 60):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method="POST" if body else "GET")
    req.add_header("Authorization", f"Bearer {key}")
    if body is not None:
        req.add_header("Content-Type", "application/json")
    return urllib.request.urlopen(req, timeout=timeout)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, type=Path)
    ap.add_argument("--port", type=int, default=18555)
    ap.add_argument(
        "--python", default=sys.executable, help="interpreter of the vLLM venv"
    )
    ap.add_argument(
        "--n", type=int, default=40, help="phrasebook rows to compare (0 = all)"
    )
    ap.add_argument("--phrasebook", type=Path, default=bm.DEFAULT_PHRASEBOOK)
    ap.add_argument("--start-timeout", type=float, default=240)
    ap.add_argument(
        "--log",
        type=Path,
        default=None,
        help="server log (default: DIR/../vllm-PORT.log)",
    )
    args = ap.parse_args(argv)

    rows = bm.load_phrasebook(args.phrasebook)
    if args.n:
        step = max(1, len(rows) // args.n)
        rows = rows[::step][: args.n]
    key = secrets.token_hex(8)
    base = f"http://127.0.0.1:{args.port}"
    log_path = args.log or Path(f"/tmp/vllm-{args.port}.log")
    cmd = [
        args.python,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--host",
        "127.0.0.1",
        "--port",
        str(args.port),
        "--model",
        str(args.model),
        "--served-model-name",
        "tiny",
        "--dtype",
        "float32",
        "--enforce-eager",
        "--max-model-len",
        "512",
        "--api-key",
        key,
    ]
    env = dict(os.environ, VLLM_CPU_KVCACHE_SPACE="1")
    print(
        "$ VLLM_CPU_KVCACHE_SPACE=1 " + " ".join(cmd).replace(key, "<key>"), flush=True
    )
    logf = open(log_path, "wb")  # noqa: SIM115 - closed in finally, outlives a with-block
    t0 = time.monotonic()
    proc = subprocess.Popen(
        cmd, stdout=logf, stderr=subprocess.STDOUT, env=env, start_new_session=True
    )
    pgid = proc.pid
    peak = {"rss": 0, "pss": 0}
    stop_sampling = threading.Event()

    def sample():
        while not stop_sampling.wait(0.5):
            rss, pss = group_mem_kb(pgid)
            peak["rss"], peak["pss"] = max(peak["rss"], rss), max(peak["pss"], pss)

    threading.Thread(target=sample, daemon=True).start()
    failures = 0
    try:
        while True:
            if proc.poll() is not None:
                print(
                    f"server exited with {proc.returncode} during start-up; see {log_path}"
                )
                return 2
            try:
                with request(base + "/health", key, None, timeout=2) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            if time.monotonic() - t0 > args.start_timeout:
                print(f"no /health 200 after {args.start_timeout}s; see {log_path}")
                return 2
            time.sleep(0.5)
        startup = time.monotonic() - t0
        print(f"ready: /health 200 after {startup:.1f}s", flush=True)

        # local greedy decode for the same prompts
        import torch
        from transformers import AutoTokenizer, LlamaForCausalLM

        torch.set_num_threads(1)
        tok = AutoTokenizer.from_pretrained(args.model)
        model = LlamaForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval()
        meta = json.loads((args.model / "baton-model.json").read_text(encoding="utf-8"))
        assert meta["prompt_template"] == bm.PROMPT, meta["prompt_template"]
        prompts = [bm.prompt_for(s, t, src) for s, t, src, _ in rows]
        local = bm.greedy_translate(model, tok, [tok(p)["input_ids"] for p in prompts])

        same = right = 0
        t1 = time.monotonic()
        for (s, t, src, tgt), p, want in zip(rows, prompts, local, strict=True):
            body = {
                "model": "tiny",
                "prompt": p,
                "max_tokens": 48,
                "temperature": 0,
                "stop": meta["stop"],
            }
            with request(base + "/v1/completions", key, body) as r:
                out = json.load(r)
            got = out["choices"][0]["text"]
            same += got == want
            right += got == tgt
            if got != want:
                failures += 1
                print(
                    f"  DIFF {s}->{t} {src!r}: vllm {got!r} local {want!r} "
                    f"finish={out['choices'][0]['finish_reason']}"
                )
        print(
            f"completions: {same}/{len(rows)} identical to local greedy, "
            f"{right}/{len(rows)} equal to the phrasebook  ({time.monotonic() - t1:.1f}s)"
        )
        print(f"  e.g. {prompts[0]!r} -> {local[0]!r}")

        # streaming with usage
        body = {
            "model": "tiny",
            "prompt": prompts[0],
            "max_tokens": 48,
            "temperature": 0,
            "stop": meta["stop"],
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        text, finish, usage, n_chunks = "", None, None, 0
        with request(base + "/v1/completions", key, body) as r:
            for raw in r:
                line = raw.decode().strip()
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                chunk = json.loads(data)
                n_chunks += 1
                if chunk.get("usage"):
                    usage = chunk["usage"]
                for ch in chunk.get("choices") or []:
                    text += ch.get("text") or ""
                    finish = ch.get("finish_reason") or finish
        ok = text == local[0] and usage is not None and finish in ("stop", "length")
        failures += not ok
        print(
            f"stream: {n_chunks} chunks, text {text!r} (local {local[0]!r}), "
            f"finish {finish}, usage {usage} -> {'ok' if ok else 'FAIL'}"
        )

        # wrong key is refused
        try:
            request(base + "/v1/models", "wrong", None, timeout=5)
            print("auth: a wrong key was accepted -> FAIL")
            failures += 1
        except urllib.error.HTTPError as e:
            print(f"auth: wrong key -> HTTP {e.code}")
    finally:
        t_stop = time.monotonic()
        try:
            os.killpg(pgid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + 20
        while group_alive(pgid) and time.monotonic() < deadline:
            proc.poll()
            time.sleep(0.2)
        left = group_alive(pgid)
        if left:
            print(f"still alive after SIGTERM: {left}; SIGKILL")
            os.killpg(pgid, signal.SIGKILL)
            time.sleep(1)
        proc.wait(timeout=10)
        stop_sampling.set()
        logf.close()
        print(
            f"stopped in {time.monotonic() - t_stop:.1f}s; processes left in group: "
            f"{group_alive(pgid)}; peak memory of the server group: PSS {peak['pss'] / 1024:.0f} MiB "
            f"(RSS summed {peak['rss'] / 1024:.0f} MiB); "
            f"log {log_path}"
        )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
