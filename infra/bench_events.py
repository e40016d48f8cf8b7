#!/usr/bin/env python3
"""The chat events the Runtime API benchmarks hand to the function, written into .local/:
chat-bench-event.json (the sample turn without its Idempotency-Key, so that every invocation is a
new turn), chat-bench-stream-event.json (the same, asking for server-sent events) and
chat-bench-anonymous-event.json (the streamed one without its identity: a 401)."""

import json

event = json.load(open("events/chat-post.json"))
for headers in (event["headers"], event["multiValueHeaders"]):
    headers.pop("Idempotency-Key", None)
json.dump(event, open(".local/chat-bench-event.json", "w"))
event["headers"]["Accept"] = "text/event-stream"
event["multiValueHeaders"]["Accept"] = ["text/event-stream"]
json.dump(event, open(".local/chat-bench-stream-event.json", "w"))
del event["requestContext"]["authorizer"]
json.dump(event, open(".local/chat-bench-anonymous-event.json", "w"))
