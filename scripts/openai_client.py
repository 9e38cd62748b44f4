#!/usr/bin/env python3
"""Talks to `pivot serve` with the official `openai` client (pip install openai).

    .build/release/pivot serve --port 8080 &
    python3 scripts/openai_client.py [--base http://127.0.0.1:8080/v1]

Lists the model, asks one chat question whole and streamed, a completion with a stop
sequence, shows that an invalid request raises the client's BadRequestError, and checks
that the second turn of a conversation reuses the cached prefix.
"""
import argparse
import sys

import openai

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--base", default="http://127.0.0.1:8080/v1")
args = parser.parse_args()
client = openai.OpenAI(base_url=args.base, api_key="not-needed")

model = client.models.list().data[0].id
print("model:", model)

question = [{"role": "user", "content": "What is the capital of France?"}]
whole = client.chat.completions.create(model=model, messages=question, max_tokens=32, temperature=0)
answer = whole.choices[0].message.content
print("chat:", repr(answer), "| finish:", whole.choices[0].finish_reason, "| usage:", whole.usage.prompt_tokens, "+", whole.usage.completion_tokens)

pieces = []
stream = client.chat.completions.create(model=model, messages=question, max_tokens=32, temperature=0, stream=True,
                                        stream_options={"include_usage": True})
for chunk in stream:
    if chunk.choices and chunk.choices[0].delta.content:
        pieces.append(chunk.choices[0].delta.content)
streamed = "".join(pieces)
print("streamed:", repr(streamed), "(same as whole)" if streamed == answer else "(DIFFERENT)")

completion = client.completions.create(model=model, prompt="The capital of France is", max_tokens=16, temperature=0, stop=["."])
print("completion:", repr(completion.choices[0].text), "| finish:", completion.choices[0].finish_reason)

try:
    client.chat.completions.create(model=model, messages=[], max_tokens=8)
    print("empty messages: accepted (unexpected)")
    ok_error = False
except openai.BadRequestError as error:
    print("empty messages: BadRequestError", error.status_code, error.body.get("message") if isinstance(error.body, dict) else error.body)
    ok_error = True

turn2 = question + [{"role": "assistant", "content": answer}, {"role": "user", "content": "And of Italy?"}]
second = client.chat.completions.create(model=model, messages=turn2, max_tokens=16, temperature=0)
cached = second.usage.prompt_tokens_details.cached_tokens
print("second turn:", repr(second.choices[0].message.content), f"| prompt {second.usage.prompt_tokens} tokens, {cached} reused from the cache")

sys.exit(0 if streamed == answer and ok_error and cached > 0 else 1)
