// What the client knows at this moment, in one place: the controllers change it, and the views
// read what they show from it.

import type { Conversation, Feedback, Message } from "./api";
import { PagedList } from "./paged";
import type { PendingTurn, Turn } from "./turn";

/** A message that was not sent, and why. */
export interface Unsent {
  pending: PendingTurn;
  reason: string;
  /** Whether sending it again as it is may help. */
  retryable: boolean;
}

export const state = {
  /** The open conversation; null for a new chat (not stored until its first turn). */
  current: null as Conversation | null,
  /** The conversation list as loaded so far, newest first. */
  conversations: [] as Conversation[],
  conversationPages: new PagedList<Conversation>(),
  /**
   * The open conversation's messages, newest page first. The list starts over exactly when
   * another conversation opens (or a new chat starts), so its `listing` also tells a late answer
   * whether the conversation it was for is still the one shown.
   */
  messagePages: new PagedList<Message>(),
  /** The open conversation's ratings, by message id. */
  ratings: new Map<string, Feedback>(),
  /** The turn being streamed, if any. */
  streaming: null as Turn | null,
  /** What the composer held for each conversation left ("" for a new chat), until it is shown again. */
  drafts: new Map<string, string>(),
  /** Messages not sent (refused, or the connection failed), by conversation ("" for a new chat):
   *  kept, and shown again with their failure, until they are sent, edited or deleted. */
  unsent: new Map<string, Unsent[]>(),
};
