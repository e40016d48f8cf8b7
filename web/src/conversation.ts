// The open conversation: its title and actions, the log of messages (older pages load as its top
// scrolls into view), the live status line, and the address (#/c/{id}) that reopens it.

import type { Conversation } from "./api";
import { byId } from "./dom";
import { CONVERSATION_ID } from "./limits";

export interface ConversationHandlers {
  rename(): void;
  delete(): void;
  /** The top of the log is in view: time for an older page. */
  nearTop(): void;
}

export interface ConversationView {
  /** Shows the conversation's title (or a new chat) and puts it in the address: as a new entry
   *  of the browser's history when `navigated` (Back returns to the one before), else in place. */
  show(conversation: Conversation | null, navigated?: boolean): void;
  /** The conversation the address names, if it names one. */
  addressed(): string | null;
  /** Empties the log and stops watching for older messages. */
  clear(): void;
  setOlderStatus(text: string): void;
  setEmptyHint(shown: boolean): void;
  /** Adds messages at the end of the log. */
  append(...elements: HTMLElement[]): void;
  /** The last message in the log, if any. */
  lastMessage(): HTMLElement | null;
  /** Takes `element` and every message after it off the log. */
  removeFrom(element: HTMLElement): void;
  /** Adds older messages above the others, keeping what is in view where it is. */
  prependOlder(elements: HTMLElement[]): void;
  watchForOlder(more: boolean): void;
  nearBottom(): boolean;
  scrollToEnd(): void;
  /** Said by screen readers (the turn's progress, what an action did). */
  announce(text: string): void;
  setBusy(busy: boolean): void;
  focusRename(): void;
  focusDelete(): void;
}

export function conversationView(handlers: ConversationHandlers): ConversationView {
  const title = byId("conversation-title");
  const renameButton = byId<HTMLButtonElement>("rename");
  const deleteButton = byId<HTMLButtonElement>("delete");
  const log = byId("log");
  const olderSentinel = byId("older-sentinel");
  const olderStatus = byId("older-status");
  const messages = byId("messages");
  const emptyHint = byId("empty-hint");
  const streamStatus = byId("stream-status");

  const observer = new IntersectionObserver(
    (entries) => {
      if (entries.some((entry) => entry.isIntersecting)) handlers.nearTop();
    },
    { root: log, rootMargin: "200px" },
  );
  renameButton.addEventListener("click", () => handlers.rename());
  deleteButton.addEventListener("click", () => handlers.delete());

  return {
    show(conversation, navigated = false) {
      title.textContent = conversation ? conversation.title || "Untitled" : "New chat";
      renameButton.hidden = conversation === null;
      deleteButton.hidden = conversation === null;
      document.title = conversation ? `${conversation.title || "Untitled"} · Chat` : "Chat";
      const hash = conversation ? `#/c/${conversation.id}` : "";
      if (location.hash === hash) return;
      const url = `${location.pathname}${location.search}${hash}`;
      if (navigated) history.pushState(null, "", url);
      else history.replaceState(null, "", url);
    },
    addressed() {
      const match = /^#\/c\/(.*)$/.exec(location.hash);
      return match && CONVERSATION_ID.test(match[1]) ? match[1] : null;
    },
    clear() {
      observer.unobserve(olderSentinel);
      messages.replaceChildren();
      olderStatus.textContent = "";
      emptyHint.hidden = false;
    },
    setOlderStatus(text) {
      olderStatus.textContent = text;
    },
    setEmptyHint(shown) {
      emptyHint.hidden = !shown;
    },
    append(...elements) {
      messages.append(...elements);
    },
    lastMessage() {
      const last = messages.lastElementChild;
      return last instanceof HTMLElement ? last : null;
    },
    removeFrom(element) {
      if (element.parentElement !== messages) return;
      while (element.nextElementSibling) element.nextElementSibling.remove();
      element.remove();
    },
    prependOlder(elements) {
      const fromBottom = log.scrollHeight - log.scrollTop;
      const fragment = document.createDocumentFragment();
      fragment.append(...elements);
      messages.prepend(fragment);
      log.scrollTop = log.scrollHeight - fromBottom;
    },
    watchForOlder(more) {
      observer.unobserve(olderSentinel);
      if (more) observer.observe(olderSentinel);
    },
    nearBottom: () => log.scrollHeight - log.scrollTop - log.clientHeight < 80,
    scrollToEnd() {
      log.scrollTop = log.scrollHeight;
    },
    announce(text) {
      streamStatus.textContent = text;
    },
    setBusy(busy) {
      deleteButton.disabled = busy;
      renameButton.disabled = busy;
    },
    focusRename: () => renameButton.focus(),
    focusDelete: () => deleteButton.focus(),
  };
}
