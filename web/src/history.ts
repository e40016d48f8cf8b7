// The user's conversations (what the server's history function serves): the list, opening one,
// and its older messages; `manage.ts` renames, deletes and erases. Talks to the API and the views.

import { ApiError, type Api, type Conversation, type Feedback, type Message } from "./api";
import type { Banner } from "./banner";
import type { Composer } from "./composer";
import type { ConversationView } from "./conversation";
import { derivedTitle } from "./limits";
import type { Messages } from "./messages";
import { conversationGone } from "./problem";
import type { SignInView } from "./signin";
import type { Sidebar } from "./sidebar";
import { state } from "./state";

export interface HistoryViews {
  sidebar: Sidebar;
  conversation: ConversationView;
  messages: Messages;
  banner: Banner;
  composer: Pick<Composer, "focus" | "draft" | "setDraft">;
  signIn: Pick<SignInView, "isSignedIn">;
  /** The log of the open conversation (or a new chat) is shown: time for its unsent messages. */
  shown?: () => void;
}

export function historyController(api: Api, views: HistoryViews) {
  const { sidebar, conversation: view, messages, banner, composer, signIn } = views;

  // ---- the list ----

  function resetList(): void {
    state.conversationPages.reset();
    state.conversations = [];
    sidebar.reset();
  }

  async function loadMoreConversations(): Promise<void> {
    if (!state.conversationPages.canLoad || !signIn.isSignedIn()) return;
    sidebar.setStatus("Loading conversations…");
    await state.conversationPages.load(
      (cursor) => api.conversations(cursor),
      (items) => {
        const known = new Set(state.conversations.map((c) => c.id));
        const fresh = items.filter((c) => !known.has(c.id));
        state.conversations.push(...fresh);
        sidebar.append(fresh);
        sidebar.setStatus(state.conversations.length === 0 ? "No conversations yet." : "");
        sidebar.watchForMore(state.conversationPages.hasMore);
      },
      (error) => {
        sidebar.setStatus("");
        banner.show(error, () => void loadMoreConversations());
      },
    );
  }

  /** Puts a conversation at the top of the list (new, or just used), or refreshes its entry. */
  function upsert(conversation: Conversation, moveToTop: boolean): void {
    const list = state.conversations;
    const index = list.findIndex((c) => c.id === conversation.id);
    if (index >= 0) list[index] = conversation;
    if (moveToTop || index < 0) {
      if (index >= 0) list.splice(index, 1);
      list.unshift(conversation);
    }
    sidebar.upsert(conversation, moveToTop || index < 0);
  }

  function remove(id: string): void {
    state.conversations = state.conversations.filter((c) => c.id !== id);
    sidebar.remove(id);
    if (state.conversations.length === 0 && !state.conversationPages.hasMore) sidebar.setStatus("No conversations yet.");
  }

  // ---- one conversation ----

  function setCurrent(conversation: Conversation | null, navigated = false): void {
    state.current = conversation;
    view.show(conversation, navigated);
    sidebar.markCurrent();
  }

  function clearLog(): void {
    state.messagePages.reset();
    state.ratings = new Map();
    view.clear();
  }

  /** Keeps what the box holds for the conversation being left, and brings back the next one's. */
  function swapDraft(next: string | null): void {
    state.drafts.set(state.current?.id ?? "", composer.draft());
    const draft = state.drafts.get(next ?? "") ?? "";
    state.drafts.delete(next ?? "");
    composer.setDraft(draft);
  }

  function newChat(navigated = true): void {
    if (state.streaming) return;
    banner.hide();
    swapDraft(null);
    clearLog();
    setCurrent(null, navigated && state.current !== null);
    views.shown?.();
    composer.focus();
  }

  /** Opens a conversation; `navigated` (the list, Back and Forward aside) makes it an entry of the
   *  browser's history. */
  async function open(id: string, navigated = false): Promise<void> {
    if (state.streaming) return;
    banner.hide();
    swapDraft(id);
    clearLog();
    const known = state.conversations.find((c) => c.id === id);
    setCurrent(known ?? { id, title: "Loading…", created_at: "", updated_at: "", message_count: 0 }, navigated);
    view.setOlderStatus("Loading messages…");
    let feedback: Feedback[] = [];
    await state.messagePages.load(
      async (cursor) => {
        const [page, ratings] = await Promise.all([api.messages(id, cursor), api.feedback(id)]);
        feedback = ratings;
        return page;
      },
      (newestFirst) => {
        state.ratings = new Map(feedback.map((f) => [f.message_id, f]));
        view.append(...newestFirst.slice().reverse().map(messages.message));
        view.setEmptyHint(newestFirst.length === 0);
        view.setOlderStatus("");
        if (!known) {
          // Opened from the address: the listing's entry has the title.
          const found = state.conversations.find((c) => c.id === id);
          setCurrent(found ?? { ...state.current!, title: titleFrom(newestFirst) });
        }
        views.shown?.();
        view.scrollToEnd();
        view.watchForOlder(state.messagePages.hasMore);
      },
      (error) => {
        view.setOlderStatus("");
        if (error instanceof ApiError && error.status === 404) {
          remove(id);
          setCurrent(null);
          banner.show(conversationGone());
          return;
        }
        banner.show(error, () => void open(id));
      },
    );
  }

  function titleFrom(newestFirst: Message[]): string {
    const first = newestFirst[newestFirst.length - 1];
    return first ? derivedTitle(first.content) : "Untitled";
  }

  async function loadOlder(): Promise<void> {
    const pages = state.messagePages;
    const current = state.current;
    if (!pages.hasPage || !pages.canLoad || !current) return;
    view.setOlderStatus("Loading earlier messages…");
    await pages.load(
      (cursor) => api.messages(current.id, cursor),
      (newestFirst) => {
        view.prependOlder(newestFirst.slice().reverse().map(messages.message));
        view.setOlderStatus("");
        view.watchForOlder(pages.hasMore);
      },
      (error) => {
        view.setOlderStatus("");
        banner.show(error, () => void loadOlder());
      },
    );
  }

  /** Shows the branch through `messageId` (a version "‹ ›" named): the server makes it the
   *  active one, and the log is read again, the switched message kept in view and focused. */
  async function switchTo(messageId: string): Promise<void> {
    const current = state.current;
    if (state.streaming || !current) return;
    banner.hide();
    try {
      await api.switchBranch(current.id, messageId);
    } catch (error) {
      banner.show(error, () => void switchTo(messageId));
      return;
    }
    if (state.current?.id !== current.id) return;
    await open(current.id);
    const shown = document.querySelector<HTMLElement>(`#messages [data-message-id="${CSS.escape(messageId)}"]`);
    if (shown) {
      shown.scrollIntoView({ block: "center" });
      const group = shown.querySelector<HTMLElement>(".versions");
      group?.querySelector<HTMLButtonElement>("button:not([disabled])")?.focus();
      view.announce(group?.getAttribute("aria-label") ? `Showing ${group.getAttribute("aria-label")!.toLowerCase()}.` : "");
    }
  }

  /** A new chat's first turn created this conversation: it becomes the open one, listed first. */
  function adopt(id: string, title: string): void {
    const now = new Date().toISOString();
    const conversation = { id, title, created_at: now, updated_at: now, message_count: 0 };
    setCurrent(conversation);
    upsert(conversation, true);
  }

  /** After a turn: the listing's entry for the conversation gets its stored title and time. */
  function refreshCurrentEntry(): void {
    const id = state.current?.id;
    if (!id) return;
    api
      .conversations(null, 5)
      .then((page) => {
        const fresh = page.items.find((c) => c.id === id);
        if (!fresh) return;
        upsert(fresh, true);
        if (state.current?.id === id) setCurrent(fresh);
      })
      .catch(() => undefined);
  }

  /** Signed in: the list, and the conversation the address names or a new chat. */
  function start(): void {
    resetList();
    const wanted = view.addressed();
    if (wanted) void open(wanted);
    else newChat(false);
  }

  /** The address changed (Back, Forward, or typed): show what it names. While a reply streams the
   *  open conversation stays, and so does its address. */
  function followAddress(): void {
    if (!signIn.isSignedIn()) return;
    const wanted = view.addressed();
    if (wanted === (state.current?.id ?? null)) return;
    if (state.streaming) {
      view.show(state.current);
      return;
    }
    if (wanted) void open(wanted);
    else if (location.hash === "" || location.hash === "#") newChat(false);
    else {
      // An address that names no conversation of ours.
      newChat(false);
      banner.show(conversationGone());
    }
  }

  return { start, resetList, loadMoreConversations, upsert, remove, setCurrent, newChat, open, switchTo, followAddress, loadOlder, adopt, refreshCurrentEntry };
}

export type History = ReturnType<typeof historyController>;
