// The sidebar: New chat and the conversation list, which loads more as its end scrolls into view.
// On narrow screens it opens over the conversation (the top bar's Chats button, Escape closes).

import type { Conversation } from "./api";
import { byId, formatTime, h } from "./dom";
import { state } from "./state";

export interface SidebarHandlers {
  newChat(): void;
  open(id: string): void;
  /** The end of the list is in view: time for the next page. */
  nearEnd(): void;
}

export interface Sidebar {
  /** Empties the list and watches its end again. */
  reset(): void;
  append(conversations: Conversation[]): void;
  /** Puts the entry at the top (or refreshes it in place) and clears the status. */
  upsert(conversation: Conversation, toTop: boolean): void;
  remove(id: string): void;
  setStatus(text: string): void;
  /** Watches the end of the list again if more pages remain (it may still be in view). */
  watchForMore(more: boolean): void;
  markCurrent(): void;
  setBusy(busy: boolean): void;
}

export function sidebarView(handlers: SidebarHandlers): Sidebar {
  const sidebar = byId("sidebar");
  const toggle = byId<HTMLButtonElement>("sidebar-toggle");
  const list = byId<HTMLUListElement>("conversation-list");
  const status = byId("conversations-status");
  const sentinel = byId("conversations-sentinel");
  const newChat = byId<HTMLButtonElement>("new-chat");

  const observer = new IntersectionObserver(
    (entries) => {
      if (entries.some((entry) => entry.isIntersecting)) handlers.nearEnd();
    },
    { root: sidebar, rootMargin: "120px" },
  );

  function setOpen(open: boolean): void {
    document.body.classList.toggle("sidebar-open", open);
    toggle.setAttribute("aria-expanded", String(open));
    if (open) newChat.focus();
  }

  toggle.addEventListener("click", () => setOpen(!document.body.classList.contains("sidebar-open")));
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && document.body.classList.contains("sidebar-open")) {
      setOpen(false);
      toggle.focus();
    }
  });
  newChat.addEventListener("click", () => {
    setOpen(false);
    handlers.newChat();
  });
  // A tap on the dimmed page beside the open list closes it, as Escape does.
  document.addEventListener("pointerdown", (event) => {
    if (!document.body.classList.contains("sidebar-open")) return;
    const target = event.target;
    if (target instanceof Node && (sidebar.contains(target) || toggle.contains(target))) return;
    event.preventDefault();
    setOpen(false);
    toggle.focus();
  });

  function item(conversation: Conversation): HTMLLIElement {
    const button = h(
      "button",
      { type: "button", class: "conversation", "data-id": conversation.id },
      h("span", { class: "conversation-name" }, conversation.title || "Untitled"),
      h("span", { class: "conversation-time" }, formatTime(conversation.updated_at)),
    );
    if (state.current?.id === conversation.id) button.setAttribute("aria-current", "page");
    button.addEventListener("click", () => {
      setOpen(false);
      handlers.open(conversation.id);
    });
    return h("li", {}, button);
  }

  const entry = (id: string) => list.querySelector(`[data-id="${id}"]`)?.closest("li");

  return {
    reset() {
      list.replaceChildren();
      status.textContent = "";
      observer.unobserve(sentinel);
      observer.observe(sentinel);
    },
    append(conversations) {
      for (const conversation of conversations) list.append(item(conversation));
    },
    upsert(conversation, toTop) {
      const existing = entry(conversation.id);
      const fresh = item(conversation);
      if (toTop) {
        existing?.remove();
        list.prepend(fresh);
      } else {
        existing?.replaceWith(fresh);
      }
      status.textContent = "";
    },
    remove(id) {
      entry(id)?.remove();
    },
    setStatus(text) {
      status.textContent = text;
    },
    watchForMore(more) {
      observer.unobserve(sentinel);
      if (more) observer.observe(sentinel);
    },
    markCurrent() {
      for (const button of list.querySelectorAll("button.conversation")) {
        if (button.getAttribute("data-id") === state.current?.id) button.setAttribute("aria-current", "page");
        else button.removeAttribute("aria-current");
      }
    },
    setBusy(busy) {
      newChat.disabled = busy;
    },
  };
}
