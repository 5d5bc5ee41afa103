"""The front door on a real vLLM, through the official OpenAI client.

Usage: real_front_door.py URL PHASE MODEL [OTHER]
  start  MODEL: listed unloaded, started on demand by a chat, then a streamed chat
  lora   MODEL (an adapter's name): a chat routed to its base model's server
  swap   MODEL OTHER: OTHER started on demand swaps MODEL out under a one-model limit
Prints one `ok ...` line per check; fails with the first that does not hold.
"""

import sys
import time

import openai

url, phase, model = sys.argv[1:4]
oa = openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0, timeout=600)
extra = {"ignore_eos": True}


def status(m):
    return {x.id: x.model_extra["status"] for x in oa.models.list()}.get(m)


def chat(m, n=4):
    t = time.monotonic()
    r = oa.chat.completions.create(
        model=m,
        messages=[{"role": "user", "content": "Hello"}],
        max_tokens=n,
        extra_body=extra,
    )
    assert r.model == m and r.usage.completion_tokens == n, r
    return time.monotonic() - t


if phase == "start":
    assert status(model) == "unloaded", status(model)
    print(f"ok {model} is listed before it is loaded", flush=True)
    print(f"ok a chat started {model} on demand in {chat(model):.0f} s", flush=True)
    assert status(model) == "loaded", status(model)
    chunks = list(
        oa.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": "Count"}],
            max_tokens=8,
            stream=True,
            extra_body=extra,
        )
    )
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(pieces) >= 4, chunks
    print(f"ok a streamed chat came in {len(chunks)} chunks", flush=True)
    r = oa.completions.create(model=model, prompt="Once", max_tokens=4, extra_body=extra)
    assert r.usage.completion_tokens == 4, r
    print("ok completions", flush=True)
    r = oa.responses.create(model=model, input="Hello", max_output_tokens=4)
    assert r.model == model and r.output, r
    print(f"ok responses ({r.status})", flush=True)
elif phase == "lora":
    chat(model)
    print(f"ok the adapter {model} answered by name", flush=True)
elif phase == "swap":
    other = sys.argv[4]
    print(f"ok {other} started on demand in {chat(other):.0f} s", flush=True)
    assert status(other) == "loaded", status(other)
    assert status(model) == "unloaded", status(model)
    print(f"ok {other} swapped {model} out", flush=True)
else:
    raise SystemExit(f"unknown phase {phase}")
