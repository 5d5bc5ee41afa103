"""The front door through the official OpenAI and Anthropic Python clients.

Usage: front_door.py URL KEY MODEL OTHER
URL is the gateway (no /v1), KEY its client key, MODEL a catalog model not loaded yet,
OTHER a second one. Prints one `ok ...` line per check; fails with the first that does not
hold.
"""

import sys
import time

import anthropic
import openai

url, key, model, other = sys.argv[1:5]
oa = openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=120)
an = anthropic.Anthropic(base_url=url, api_key=key, max_retries=0, timeout=120)


def ok(what):
    print(f"ok {what}", flush=True)


# Everything that can be served is listed before anything is loaded.
listed = {m.id: m for m in oa.models.list()}
assert model in listed and other in listed, listed
assert listed[model].model_extra["status"] == "unloaded", listed[model]
ok("models.list lists the catalog before anything is loaded")

# The first chat starts the model on demand.
t = time.monotonic()
r = oa.chat.completions.create(
    model=model, messages=[{"role": "user", "content": "Hello"}], max_tokens=8
)
assert r.choices[0].message.content, r
assert r.model == model, r
ok(f"chat.completions started {model} on demand ({time.monotonic() - t:.1f} s)")

# A streamed chat arrives as chunks.
chunks = list(
    oa.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Count"}],
        max_tokens=12,
        stream=True,
    )
)
text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
assert len(chunks) > 3 and text, chunks
ok(f"a streamed chat came in {len(chunks)} chunks")

r = oa.completions.create(model=model, prompt="Once", max_tokens=4)
assert r.choices[0].text is not None, r
ok("completions")

# Anthropic's Messages API, whole and streamed, with its own key header.
m = an.messages.create(
    model=model, max_tokens=8, messages=[{"role": "user", "content": "Hi"}]
)
assert m.type == "message" and m.content[0].type == "text", m
assert m.stop_reason in ("end_turn", "max_tokens"), m
ok("anthropic messages.create")
with an.messages.stream(
    model=model, max_tokens=8, messages=[{"role": "user", "content": "Hi"}]
) as s:
    streamed = "".join(s.text_stream)
    final = s.get_final_message()
assert final.usage.output_tokens > 0 and streamed == final.content[0].text, final
ok("anthropic messages.stream")

# Errors are each API's own, so each client raises its own exception.
try:
    oa.chat.completions.create(
        model="no-such-model", messages=[{"role": "user", "content": "x"}]
    )
    raise AssertionError("an unknown model was answered")
except openai.NotFoundError as e:
    assert e.body["code"] == "model_not_found", e.body
    assert model in e.body["available"], e.body
ok("openai.NotFoundError for an unknown model, naming what is there")
try:
    an.messages.create(
        model="no-such-model", max_tokens=4, messages=[{"role": "user", "content": "x"}]
    )
    raise AssertionError("an unknown model was answered")
except anthropic.NotFoundError as e:
    assert e.body["error"]["type"] == "not_found_error", e.body
ok("anthropic.NotFoundError for an unknown model")
for client in (
    openai.OpenAI(base_url=f"{url}/v1", api_key="wrong", max_retries=0),
):
    try:
        client.models.list()
        raise AssertionError("a wrong key was let in")
    except openai.AuthenticationError:
        pass
try:
    anthropic.Anthropic(base_url=url, api_key="wrong", max_retries=0).messages.create(
        model=model, max_tokens=4, messages=[{"role": "user", "content": "x"}]
    )
    raise AssertionError("a wrong key was let in")
except anthropic.AuthenticationError:
    pass
ok("a wrong key is refused to both clients")

# The second model swaps the first out under a one-model limit.
r = oa.chat.completions.create(
    model=other, messages=[{"role": "user", "content": "Hello"}], max_tokens=4
)
assert r.model == other, r
listed = {m.id: m for m in oa.models.list()}
assert listed[other].model_extra["status"] == "loaded", listed[other]
assert listed[model].model_extra["status"] == "unloaded", listed[model]
ok(f"{other} swapped {model} out")
