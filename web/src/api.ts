// The API client: one place that adds identity, reads problem+json documents into ApiError and
// tells the app when a sign-in has expired.

export interface Conversation {
  id: string;
  title: string;
  created_at: string;
  updated_at: string;
  message_count: number;
  /** The end of the active branch (absent on conversations stored before branches). */
  leaf?: string;
}

export type Ending = "stopped" | "incomplete";

export interface Message {
  id: string;
  seq: number;
  /** The message this one follows; null for a first message. */
  parent_id: string | null;
  /** Its parent's children, oldest first, and its place among them. */
  siblings: { ids: string[]; index: number };
  role: "user" | "assistant";
  content: string;
  created_at: string;
  provider?: string;
  model?: string;
  ending?: Ending;
}

export interface Feedback {
  conversation_id: string;
  message_id: string;
  rating: number;
  comment?: string;
}

export interface Page<T> {
  items: T[];
  nextCursor: string | null;
}

export interface ModelChoice {
  provider: string;
  model: string;
}

export interface Models {
  default: ModelChoice;
  providers: { name: string; models: string[] }[];
}

/** What `POST /chat` takes: a message (under the active leaf, or under `parent_id`: null for a
 *  new first message), or `regenerate`, a reply to answer again. */
export interface ChatBody {
  message?: string;
  conversation_id?: string;
  parent_id?: string | null;
  regenerate?: string;
  provider?: string;
  model?: string;
}

export interface ChatStart {
  conversation_id: string;
  user_message_id: string;
  message_id: string;
  provider: string;
  model: string;
}

export interface ChatDone {
  conversation_id: string;
  user_message_id?: string;
  message_id: string;
  reply: string;
  provider: string;
  model: string;
  created_at: string;
  ending?: Ending;
}

export type ErrorKind = "http" | "network" | "aborted";

export class ApiError extends Error {
  constructor(
    readonly kind: ErrorKind,
    readonly status: number,
    readonly title: string,
    readonly detail: string,
    readonly retryAfterSeconds: number | null = null,
    /** The problem document's `type` ("" when it had none). */
    readonly problemType = "",
    /** The budget a 429 refers to (its `RateLimit-Limit`), if it said. */
    readonly limit: number | null = null,
  ) {
    super(detail ? `${title}: ${detail}` : title);
  }

  /** The day's budget is spent (`quota-exceeded`): nothing helps before it renews. */
  get quotaExceeded(): boolean {
    return this.status === 429 && this.problemType.endsWith(":quota-exceeded");
  }

  /** Worth trying again as it is: the network, throttling, an unavailable dependency, or (409) a
   *  request with the same Idempotency-Key that is still running. A spent day's budget is not. */
  get retryable(): boolean {
    if (this.quotaExceeded) return false;
    return this.kind === "network" || [409, 429, 500, 502, 503, 504].includes(this.status);
  }
}

/** A budget's day so far (`GET /usage`); `limit` and `remaining` are null when unlimited. */
export interface BudgetCounter {
  used: number;
  limit: number | null;
  remaining: number | null;
}

export interface Usage {
  day: string;
  turns: BudgetCounter;
  tokens: BudgetCounter;
  minute: BudgetCounter;
  custom_budget: boolean;
  resets_in_seconds: number;
}

export function retryAfterSeconds(header: string | null, now = Date.now()): number | null {
  if (!header) return null;
  const trimmed = header.trim();
  if (/^\d+$/.test(trimmed)) return Math.max(1, Number(trimmed));
  const date = Date.parse(trimmed);
  if (Number.isNaN(date)) return null;
  return Math.max(1, Math.ceil((date - now) / 1000));
}

/** Reads a refusal: the problem document's words when there is one, the status line when not. */
export async function errorFromResponse(response: Response): Promise<ApiError> {
  let title = response.statusText || `HTTP ${response.status}`;
  let detail = "";
  let type = "";
  try {
    const text = await response.text();
    const doc = JSON.parse(text) as { title?: unknown; detail?: unknown; message?: unknown; type?: unknown };
    if (typeof doc.type === "string") type = doc.type;
    if (typeof doc.title === "string" && doc.title) title = doc.title;
    if (typeof doc.detail === "string") detail = doc.detail;
    else if (typeof doc.message === "string") detail = doc.message;
  } catch {
    // Not JSON: the status line says it.
  }
  const limit = Number(response.headers.get("RateLimit-Limit") ?? "");
  return new ApiError(
    "http",
    response.status,
    title,
    detail,
    retryAfterSeconds(response.headers.get("Retry-After")),
    type,
    Number.isInteger(limit) && limit > 0 ? limit : null,
  );
}

export function problemFromEvent(data: string): ApiError {
  try {
    const doc = JSON.parse(data) as { title?: string; detail?: string; status?: number };
    return new ApiError("http", doc.status ?? 500, doc.title || "The reply failed", doc.detail || "");
  } catch {
    return new ApiError("http", 500, "The reply failed", "");
  }
}

export function isAbort(error: unknown): boolean {
  return error instanceof DOMException && error.name === "AbortError";
}

export interface ApiOptions {
  baseUrl: string;
  /** Headers that say who the caller is (X-Dev-User, or Authorization with an ID token). */
  identity: () => Record<string, string>;
  /** Called on a 401, before the error is thrown. */
  onUnauthorized: (error: ApiError) => void;
}

export class Api {
  constructor(private readonly options: ApiOptions) {}

  async request(path: string, init: RequestInit = {}): Promise<Response> {
    const headers = new Headers(init.headers);
    for (const [name, value] of Object.entries(this.options.identity())) headers.set(name, value);
    let response: Response;
    try {
      response = await fetch(this.options.baseUrl + path, { ...init, headers });
    } catch (error) {
      if (isAbort(error)) throw new ApiError("aborted", 0, "Stopped", "");
      throw new ApiError("network", 0, "Could not reach the server", "Check your connection and try again.");
    }
    if (!response.ok) {
      const error = await errorFromResponse(response);
      if (response.status === 401) this.options.onUnauthorized(error);
      throw error;
    }
    return response;
  }

  private async json<T>(path: string, init: RequestInit = {}): Promise<T> {
    const response = await this.request(path, init);
    return (await response.json()) as T;
  }

  private static query(params: Record<string, string | number | null | undefined>): string {
    const search = new URLSearchParams();
    for (const [name, value] of Object.entries(params)) {
      if (value !== null && value !== undefined) search.set(name, String(value));
    }
    const text = search.toString();
    return text ? `?${text}` : "";
  }

  async conversations(cursor: string | null, limit = 20): Promise<Page<Conversation>> {
    const body = await this.json<{ conversations: Conversation[]; next_cursor: string | null }>(
      `/conversations${Api.query({ limit, cursor })}`,
    );
    return { items: body.conversations, nextCursor: body.next_cursor };
  }

  /** One page of a conversation's messages, newest first. */
  async messages(id: string, cursor: string | null, limit = 30): Promise<Page<Message>> {
    const body = await this.json<{ messages: Message[]; next_cursor: string | null }>(
      `/conversations/${encodeURIComponent(id)}/messages${Api.query({ order: "desc", limit, cursor })}`,
    );
    return { items: body.messages, nextCursor: body.next_cursor };
  }

  async rename(id: string, title: string): Promise<Conversation> {
    return this.json<Conversation>(`/conversations/${encodeURIComponent(id)}`, {
      method: "PATCH",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ title }),
    });
  }

  /** Makes the branch through `messageId` the active one; the conversation as it now is. */
  async switchBranch(id: string, messageId: string): Promise<Conversation> {
    return this.json<Conversation>(`/conversations/${encodeURIComponent(id)}`, {
      method: "PATCH",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ leaf: messageId }),
    });
  }

  async deleteConversation(id: string): Promise<void> {
    await this.request(`/conversations/${encodeURIComponent(id)}`, { method: "DELETE" });
  }

  async eraseHistory(): Promise<void> {
    await this.request("/history", { method: "DELETE" });
  }

  async models(): Promise<Models | null> {
    try {
      return await this.json<Models>("/models");
    } catch (error) {
      // A server without the route yet: the picker stays hidden and the server's default applies.
      if (error instanceof ApiError && (error.status === 404 || error.status === 403)) return null;
      throw error;
    }
  }

  /** The caller's budgets and what is used of them today. */
  async usage(): Promise<Usage> {
    return this.json<Usage>("/usage");
  }

  async feedback(conversationId: string): Promise<Feedback[]> {
    const all: Feedback[] = [];
    let cursor: string | null = null;
    do {
      const body: { feedback: Feedback[]; next_cursor: string | null } = await this.json(
        `/feedback${Api.query({ conversation_id: conversationId, limit: 100, cursor })}`,
      );
      all.push(...body.feedback);
      cursor = body.next_cursor;
    } while (cursor);
    return all;
  }

  async rate(feedback: Feedback): Promise<Feedback> {
    return this.json<Feedback>("/feedback", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(feedback),
    });
  }

  /** Starts a streamed chat turn; the caller reads the events from the response body. */
  async chat(
    body: ChatBody,
    idempotencyKey: string,
    signal: AbortSignal,
  ): Promise<Response> {
    return this.request("/chat", {
      method: "POST",
      headers: {
        "Content-Type": "application/json",
        Accept: "text/event-stream",
        "Idempotency-Key": idempotencyKey,
      },
      body: JSON.stringify(body),
      signal,
    });
  }
}
