// What the page says about a refusal or a failure: one wording for the banner, the rename dialog
// and the rating form.

import { ApiError } from "./api";

export function describe(error: ApiError): string {
  if (error.kind === "network") return "Could not reach the server. Check your connection, then retry.";
  if (error.status === 429) return `Too many requests. ${error.detail}`.trim();
  return error.detail ? `${error.title}. ${error.detail}` : error.title;
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
