// What the page says about a refusal or a failure: one wording for the banner, the rename dialog
// and the rating form.

import { ApiError } from "./api";

export function describe(error: ApiError, now = new Date()): string {
  if (error.kind === "network") return "Could not reach the server. Check your connection, then retry.";
  if (error.quotaExceeded) {
    const when = error.retryAfterSeconds === null ? "tomorrow" : `at ${clock(new Date(now.getTime() + error.retryAfterSeconds * 1000))} your time`;
    // The day's turns, or its model tokens (a message whose context and longest reply would not fit).
    if (/\bturns\b/.test(error.detail) && error.limit !== null) {
      return `You have used today's ${error.limit} messages; more ${when}.`;
    }
    return `This message needs more of today's model allowance than is left; more ${when}. A shorter message or a new chat needs less.`;
  }
  if (error.status === 429) {
    const wait = error.retryAfterSeconds ?? 60;
    const many = error.limit === null ? "That is as many messages" : `That is ${error.limit} messages`;
    return `${many} this minute as a minute allows; you can send again in ${wait} s.`;
  }
  if (error.status === 404 && error.detail === "conversation not found") {
    return "This conversation no longer exists: it was deleted, perhaps in another tab.";
  }
  if (error.status === 404 && error.detail === "message not found") {
    return "That message no longer exists in this conversation.";
  }
  return error.detail ? `${error.title}. ${error.detail}` : error.title;
}

/** A time of day as the user's locale writes it (hours and minutes). */
export function clock(at: Date): string {
  return at.toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit" });
}

/** Any failure as an ApiError; one that is not (a bug) is logged in full. */
export function asProblem(error: unknown): ApiError {
  if (error instanceof ApiError) return error;
  console.error(error);
  return new ApiError("http", 0, "Something went wrong", String(error));
}

/** Said when the open conversation was deleted elsewhere (the server answered 404). */
export function conversationGone(): ApiError {
  return new ApiError("http", 404, "This conversation no longer exists", "");
}
