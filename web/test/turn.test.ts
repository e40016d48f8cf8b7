import { describe, expect, it } from "vitest";
import { ApiError, type ChatDone, type ChatStart } from "../src/api";
import { Turn, type ChatRequest, type PendingTurn, type TurnListener } from "../src/turn";

const START: ChatStart = { conversation_id: "01J0000000000000000000000A", user_message_id: "000000000001", message_id: "000000000002", provider: "echo", model: "echo-1" };
const DONE: ChatDone = { conversation_id: START.conversation_id, message_id: START.message_id, reply: "Hello", provider: "echo", model: "echo-1", created_at: "2025-01-01T00:00:00Z" };

const sse = (event: string, data: unknown) => `event: ${event}\ndata: ${JSON.stringify(data)}\n\n`;

function pending(overrides: Partial<PendingTurn> = {}): PendingTurn {
  return { message: "hi", conversationId: null, choice: null, idempotencyKey: "key-1", ...overrides };
}

/** A stand-in for POST /chat: answers with these chunks of an event stream, then (unless `open`)
 *  ends it. Like fetch, an abort fails the reading with an AbortError. Records each call. */
function server(chunks: string[], { open = false } = {}) {
  const calls: { body: unknown; key: string }[] = [];
  const chat: ChatRequest = async (body, key, signal) => {
    calls.push({ body, key });
    const bytes = new TextEncoder();
    const stream = new ReadableStream<Uint8Array>({
      start(controller) {
        for (const chunk of chunks) controller.enqueue(bytes.encode(chunk));
        if (!open) controller.close();
        signal.addEventListener("abort", () => controller.error(new DOMException("aborted", "AbortError")));
      },
    });
    return new Response(stream, { headers: { "Content-Type": "text/event-stream" } });
  };
  return { chat, calls };
}

/** Records what the turn tells its listener, in order. */
function recorder(onGrew?: (text: string) => void) {
  const seen: unknown[][] = [];
  const listener: TurnListener = {
    started: (start) => seen.push(["started", start.message_id]),
    grew: (text) => {
      seen.push(["grew", text]);
      onGrew?.(text);
    },
    finished: (done) => seen.push(["finished", done.reply]),
    failed: (problem, text) => seen.push(["failed", problem.title, problem.status, text]),
  };
  return { seen, listener };
}

describe("Turn", () => {
  it("streams deltas, then done: the listener sees each step and the turn is answered", async () => {
    const { chat, calls } = server([
      sse("start", START),
      sse("delta", { text: "Hel" }),
      sse("delta", { text: "lo" }),
      sse("done", DONE),
    ]);
    const { seen, listener } = recorder();
    const turn = new Turn(pending({ conversationId: "C1", choice: { provider: "echo", model: "echo-1" } }), chat);
    expect(await turn.run(listener)).toEqual({ outcome: "answered" });
    expect(seen).toEqual([["started", "000000000002"], ["grew", "Hel"], ["grew", "Hello"], ["finished", "Hello"]]);
    expect(calls).toEqual([{ body: { message: "hi", conversation_id: "C1", provider: "echo", model: "echo-1" }, key: "key-1" }]);
  });

  it("sends only the message for a new chat with the server's default model", async () => {
    const { chat, calls } = server([sse("start", START), sse("done", DONE)]);
    await new Turn(pending(), chat).run(recorder().listener);
    expect(calls[0].body).toEqual({ message: "hi" });
  });

  it("Stop keeps the reply so far", async () => {
    const { chat } = server([sse("start", START), sse("delta", { text: "Hel" })], { open: true });
    let turn: Turn | null = null;
    const { seen, listener } = recorder(() => turn?.stop());
    turn = new Turn(pending(), chat);
    expect(await turn.run(listener)).toEqual({ outcome: "stopped", text: "Hel" });
    expect(seen).toEqual([["started", "000000000002"], ["grew", "Hel"]]);
  });

  it("Stop before the reply began says so (no text)", async () => {
    const chat: ChatRequest = (_body, _key, signal) =>
      new Promise((_resolve, reject) => {
        signal.addEventListener("abort", () => reject(new ApiError("aborted", 0, "Stopped", "")));
      });
    const turn = new Turn(pending(), chat);
    const result = turn.run(recorder().listener);
    turn.stop();
    expect(await result).toEqual({ outcome: "stopped", text: null });
  });

  it("an abort that is not the user's Stop leaves the turn unanswered, not stopped", async () => {
    const { chat } = server([sse("start", START)], { open: true });
    let turn: Turn | null = null;
    const listener = { ...recorder().listener, started: () => turn?.abort() };
    turn = new Turn(pending(), chat);
    const result = await turn.run(listener);
    expect(result.outcome).toBe("unanswered");
  });

  it("an error event ends the reply with what arrived and the server's problem", async () => {
    const problem = { type: "urn:serverless-chat:problem:upstream", title: "Provider failed", status: 502, detail: "timeout" };
    const { chat } = server([sse("start", START), sse("delta", { text: "Hal" }), sse("error", problem)]);
    const { seen, listener } = recorder();
    expect(await new Turn(pending(), chat).run(listener)).toEqual({ outcome: "answered" });
    expect(seen.at(-1)).toEqual(["failed", "Provider failed", 502, "Hal"]);
  });

  it("a network failure keeps the Idempotency-Key for Retry, and the retry sends it again", async () => {
    const keys: string[] = [];
    let failures = 1;
    const answering = server([sse("start", START), sse("done", DONE)]);
    const chat: ChatRequest = async (body, key, signal) => {
      keys.push(key);
      if (failures-- > 0) throw new ApiError("network", 0, "Could not reach the server", "");
      return answering.chat(body, key, signal);
    };
    const first = await new Turn(pending({ idempotencyKey: "same-key" }), chat).run(recorder().listener);
    expect(first.outcome).toBe("unanswered");
    if (first.outcome !== "unanswered") return;
    expect(first.problem.kind).toBe("network");
    expect(first.problem.retryable).toBe(true);
    expect(first.retry.idempotencyKey).toBe("same-key");
    const again = await new Turn(first.retry, chat).run(recorder().listener);
    expect(again).toEqual({ outcome: "answered" });
    expect(keys).toEqual(["same-key", "same-key"]);
  });

  it("a stream that ends before done is a cut-off reply, offered for retry", async () => {
    const { chat } = server([sse("start", START), sse("delta", { text: "Hel" })]);
    const result = await new Turn(pending(), chat).run(recorder().listener);
    expect(result.outcome).toBe("unanswered");
    if (result.outcome === "unanswered") expect(result.problem.title).toBe("The reply was cut off");
  });

  it("a refusal is unanswered with the server's words; 401 is a sign-out", async () => {
    const refuse = (status: number): ChatRequest => async () => {
      throw new ApiError("http", status, "Too many requests", "Wait a minute.", 3);
    };
    const refused = await new Turn(pending(), refuse(429)).run(recorder().listener);
    expect(refused.outcome === "unanswered" && refused.problem.retryAfterSeconds).toBe(3);
    expect(await new Turn(pending(), refuse(401)).run(recorder().listener)).toEqual({ outcome: "signed-out" });
  });

  it("a 409 (the same key still in progress) is sent again with that key after a pause, not given up", async () => {
    const answered = server([sse("start", START), sse("done", DONE)]);
    const keys: string[] = [];
    let refusals = 2;
    const chat: ChatRequest = async (body, key, signal) => {
      keys.push(key);
      if (refusals-- > 0) throw new ApiError("http", 409, "Conflict", "still in progress");
      return answered.chat(body, key, signal);
    };
    const { seen, listener } = recorder();
    expect(await new Turn(pending(), chat, undefined, [0, 0, 0]).run(listener)).toEqual({ outcome: "answered" });
    expect(keys).toEqual(["key-1", "key-1", "key-1"]);
    expect(seen).toEqual([["started", "000000000002"], ["finished", "Hello"]]);
  });

  it("a 409 that outlasts the pauses is unanswered and offers Retry; Stop ends the waiting", async () => {
    let calls = 0;
    const busy: ChatRequest = async () => {
      calls++;
      throw new ApiError("http", 409, "Conflict", "still in progress");
    };
    const result = await new Turn(pending(), busy, undefined, [0, 0]).run(recorder().listener);
    expect(calls).toBe(3);
    expect(result.outcome === "unanswered" && result.problem.retryable).toBe(true);

    const waiting = new Turn(pending(), busy, undefined, [60_000]);
    const run = waiting.run(recorder().listener);
    await new Promise((resolve) => setTimeout(resolve, 10));
    waiting.stop();
    expect(await run).toEqual({ outcome: "stopped", text: null });
  });
});
