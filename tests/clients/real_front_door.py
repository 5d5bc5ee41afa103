"""The front door on a real vLLM, through the official OpenAI client.

Usage: real_front_door.py URL PHASE MODEL [OTHER]
  start  MODEL: listed unloaded, started on demand by a chat, then a streamed chat
  lora   MODEL (an adapter's name): a chat routed to its base model's server
  swap   MODEL OTHER: OTHER started on demand swaps MODEL out under a one-model limit
  embed  MODEL (a pooling model): started by embeddings, then /v1/score and /v1/rerank
Prints one `ok ...` line per check; fails with the first that does not hold.
"""

import sys
import time

import json
import urllib.request

import openai

url, phase, model = sys.argv[1:4]
oa = openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0, timeout=600)
extra = {"ignore_eos": True}


def post_json(path, body):
    """(status, parsed body) of a POST to the door, by the standard library."""
    req = urllib.request.Request(
        f"{url}{path}",
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=60) as r:
        return r.status, json.loads(r.read())


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
elif phase == "embed":
    t = time.monotonic()
    # The client asks for base64 and decodes it: the floats crossed the door as bytes.
    r = oa.embeddings.create(model=model, input=["Hello there", "Hi"])
    print(f"ok embeddings started {model} on demand in {time.monotonic() - t:.0f} s", flush=True)
    assert r.model == model and [d.index for d in r.data] == [0, 1], r
    for d in r.data:
        norm = sum(x * x for x in d.embedding) ** 0.5
        assert len(d.embedding) == 64 and abs(norm - 1) < 1e-4, (len(d.embedding), norm)
    assert r.usage.prompt_tokens > 0, r.usage
    print(f"ok {len(r.data)} unit vectors of {len(r.data[0].embedding)} floats", flush=True)
    code, score = post_json("/v1/score", {"model": model, "text_1": "a b", "text_2": ["a b", "c d e"]})
    assert code == 200, score
    scores = [d["score"] for d in score["data"]]
    assert abs(scores[0] - 1) < 1e-5 and scores[1] < scores[0], scores
    print(f"ok /v1/score: {scores}", flush=True)
    code, ranked = post_json("/v1/rerank", {"model": model, "query": "a b", "documents": ["c d e", "a b"]})
    assert code == 200, ranked
    assert ranked["results"][0]["index"] == 1, ranked
    print("ok /v1/rerank put the same text first", flush=True)
else:
    raise SystemExit(f"unknown phase {phase}")
