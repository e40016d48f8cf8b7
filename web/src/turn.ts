// One streamed chat turn, without the page: it sends the message, reads the server-sent events
// (start, delta, done, error), tells a listener what arrives, and ends with what became of it.

import { ApiError, isAbort, problemFromEvent, type ChatBody, type ChatDone, type ChatStart, type ModelChoice } from "./api";
import { readEvents, type SseEvent } from "./sse";

/** A message on its way. A retry sends the same one, Idempotency-Key included, so the server
 *  either replays the stored turn or runs it once: it is never doubled. */
export interface PendingTurn {
  /** The user's message; empty for a regeneration. */
  message: string;
  conversationId: string | null;
  /** Where it goes: under this reply (null: as a new first message); absent, the active leaf. */
  parentId?: string | null;
  /** A reply to answer again (no message then). */
  regenerate?: string;
  choice: ModelChoice | null;
  idempotencyKey: string;
}

export type ChatRequest = (
  body: ChatBody,
  idempotencyKey: string,
  signal: AbortSignal,
) => Promise<Response>;

/** The pauses before sending again while the server answers 409: the same Idempotency-Key is
 *  still running (a connection that dropped mid-reply, and its retry). About half a minute in all. */
export const IN_PROGRESS_PAUSES_MS: readonly number[] = [1000, 2000, 3000, 5000, 8000, 13000];

export type ReadEvents = (body: ReadableStream<Uint8Array>) => AsyncIterable<SseEvent>;

/** What arrives, as it arrives. */
export interface TurnListener {
  /** The server took the turn: the ids of both messages. */
  started(start: ChatStart): void;
  /** The reply so far, after each delta. */
  grew(text: string): void;
  /** The whole reply, as stored. */
  finished(done: ChatDone): void;
  /** The server's error event: the reply so far is all there is (stored as incomplete). */
  failed(problem: ApiError, text: string): void;
}

export type TurnResult =
  /** The stream ended after `done` or an `error` event. */
  | { outcome: "answered" }
  /** Stopped by the user; `text` is the reply so far, null if it had not begun. */
  | { outcome: "stopped"; text: string | null }
  /** The sign-in expired (the API client has already said so). */
  | { outcome: "signed-out" }
  /** No answer (refused, or the connection failed): nothing of it is kept; `retry` may be sent again. */
  | { outcome: "unanswered"; problem: ApiError; retry: PendingTurn };

export class Turn {
  private readonly controller = new AbortController();
  private stoppedByUser = false;

  constructor(
    readonly pending: PendingTurn,
    private readonly chat: ChatRequest,
    private readonly read: ReadEvents = readEvents,
    private readonly pauses: readonly number[] = IN_PROGRESS_PAUSES_MS,
  ) {}

  /** The user's Stop: the reply so far is kept (the server stores it as stopped). */
  stop(): void {
    this.stoppedByUser = true;
    this.controller.abort();
  }

  /** Abandons the turn without a word (signing out, erasing). */
  abort(): void {
    this.controller.abort();
  }

  async run(listener: TurnListener): Promise<TurnResult> {
    const { pending } = this;
    let begun = false;
    let text = "";
    let finished = false;
    try {
      const body: ChatBody = {
        ...(pending.regenerate ? { regenerate: pending.regenerate } : { message: pending.message }),
        ...(pending.conversationId ? { conversation_id: pending.conversationId } : {}),
        ...(pending.conversationId && pending.parentId !== undefined && !pending.regenerate
          ? { parent_id: pending.parentId }
          : {}),
        ...(pending.choice ? { provider: pending.choice.provider, model: pending.choice.model } : {}),
      };
      const response = await this.send(body);
      if (!response.body) throw new ApiError("network", 0, "The reply did not arrive", "");
      for await (const event of this.read(response.body)) {
        if (event.event === "start") {
          begun = true;
          listener.started(JSON.parse(event.data) as ChatStart);
        } else if (event.event === "delta") {
          const delta = JSON.parse(event.data) as { text: string };
          if (!begun) continue;
          text += delta.text;
          listener.grew(text);
        } else if (event.event === "done") {
          const done = JSON.parse(event.data) as ChatDone;
          begun = true;
          text = done.reply;
          listener.finished(done);
          finished = true;
        } else if (event.event === "error") {
          listener.failed(problemFromEvent(event.data), text);
          finished = true;
        }
      }
      if (!finished) throw new ApiError("network", 0, "The reply was cut off", "");
      return { outcome: "answered" };
    } catch (error) {
      if (this.stoppedByUser && (isAbort(error) || (error instanceof ApiError && error.kind === "aborted"))) {
        return { outcome: "stopped", text: begun ? text : null };
      }
      if (error instanceof ApiError && error.status === 401) return { outcome: "signed-out" };
      const problem = error instanceof ApiError ? error : new ApiError("network", 0, "The reply was cut off", "");
      return { outcome: "unanswered", problem, retry: pending };
    }
  }

  /** Sends the message; while its key is still in progress (409), pauses and sends it again with
   *  the same key, so the server answers with that request's turn instead of storing a second. */
  private async send(body: Parameters<ChatRequest>[0]): Promise<Response> {
    const { signal } = this.controller;
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.chat(body, this.pending.idempotencyKey, signal);
      } catch (error) {
        const inProgress = error instanceof ApiError && error.status === 409;
        if (!inProgress || attempt >= this.pauses.length) throw error;
        await pause(this.pauses[attempt], signal);
      }
    }
  }
}

/** Resolves after `ms`, or rejects with an AbortError when `signal` aborts first. */
function pause(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const abort = () => {
      clearTimeout(timer);
      reject(new DOMException("aborted", "AbortError"));
    };
    const timer = setTimeout(() => {
      signal.removeEventListener("abort", abort);
      resolve();
    }, ms);
    if (signal.aborted) abort();
    else signal.addEventListener("abort", abort, { once: true });
  });
}
