"""Talks to a running `finetune serve` with the official `openai` client (decoders) or plain HTTP (/predict).

  python scripts/serve_check.py decoder http://127.0.0.1:8081
  python scripts/serve_check.py classifier http://127.0.0.1:8080

Exits non-zero on the first answer that is not what an OpenAI-compatible server gives.
"""
import json
import sys
import urllib.request


def check(cond, what):
    if not cond:
        print(f"FAIL: {what}", file=sys.stderr)
        sys.exit(1)
    print(f"ok: {what}")


def decoder(url):
    import openai

    client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
    models = client.models.list()
    name = models.data[0].id
    check(len(models.data) == 1, f"models.list() -> {name!r}")

    c = client.completions.create(model=name, prompt="The capital of France is", max_tokens=8, temperature=0)
    text = c.choices[0].text
    check(c.usage.completion_tokens >= 1 and c.choices[0].finish_reason in ("stop", "length"),
          f"completions.create greedy -> {text!r} ({c.usage.completion_tokens} tokens, {c.choices[0].finish_reason})")
    again = client.completions.create(model=name, prompt="The capital of France is", max_tokens=8, temperature=0)
    check(again.choices[0].text == text, "greedy completion repeats")

    msgs = [{"role": "user", "content": "Write a subject line for: the meeting moved to Friday 3pm."}]
    chat = client.chat.completions.create(model=name, messages=msgs, max_tokens=24, temperature=0.7, seed=11)
    answer = chat.choices[0].message.content
    check(chat.choices[0].message.role == "assistant" and answer, f"chat.completions.create -> {answer!r}")
    pieces = []
    usage = None
    with client.chat.completions.create(model=name, messages=msgs, max_tokens=24, temperature=0.7, seed=11,
                                        stream=True, stream_options={"include_usage": True}) as stream:
        for chunk in stream:
            if chunk.usage is not None:
                usage = chunk.usage
            for ch in chunk.choices:
                if ch.delta.content:
                    pieces.append(ch.delta.content)
    check("".join(pieces) == answer, f"streamed chat equals the seeded answer ({len(pieces)} chunks)")
    check(usage is not None and usage.completion_tokens == chat.usage.completion_tokens, "stream usage chunk")

    stop = client.completions.create(model=name, prompt="1, 2, 3, 4,", max_tokens=16, temperature=0, stop=[","])
    check("," not in stop.choices[0].text and stop.choices[0].finish_reason in ("stop", "length"),
          f"stop sequence -> {stop.choices[0].text!r}")

    try:
        client.completions.create(model=name, prompt="x", max_tokens=10**6)
        check(False, "max_tokens above the limit is refused")
    except openai.BadRequestError as e:
        check(e.status_code == 400 and "max_tokens" in str(e), "max_tokens above the limit -> 400 BadRequestError")
    try:
        client.completions.create(model="no-such-model", prompt="x", max_tokens=1)
        check(False, "unknown model is refused")
    except openai.NotFoundError:
        check(True, "unknown model -> 404 NotFoundError")


def classifier(url):
    texts = ["a gripping, funny and moving film", "dull, lifeless and far too long"]
    req = urllib.request.Request(url + "/predict", data=json.dumps({"inputs": texts}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req) as r:
        body = json.load(r)
    preds = body["predictions"]
    check(len(preds) == 2 and all(abs(sum(p["probabilities"].values()) - 1) < 1e-5 for p in preds),
          f"/predict -> {[p['label'] for p in preds]}")


if __name__ == "__main__":
    kind, url = sys.argv[1], sys.argv[2].rstrip("/")
    {"decoder": decoder, "classifier": classifier}[kind](url)
