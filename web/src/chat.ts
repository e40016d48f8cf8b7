// Sending a message (what the server's chat function serves): the turn streams into the log, Stop
// keeps what arrived, a failure offers Retry with the same Idempotency-Key; and the model picker.

import type { Api } from "./api";
import type { Banner } from "./banner";
import type { Composer } from "./composer";
import type { ConversationView } from "./conversation";
import type { History } from "./history";
import { derivedTitle } from "./limits";
import { describe } from "./problem";
import type { AssistantView, Messages } from "./messages";
import type { Sidebar } from "./sidebar";
import { state, type Unsent } from "./state";
import { Turn, type PendingTurn } from "./turn";

export interface ChatViews {
  composer: Composer;
  conversation: ConversationView;
  messages: Messages;
  sidebar: Pick<Sidebar, "setBusy">;
  banner: Banner;
}

export function chatController(api: Api, history: Pick<History, "adopt" | "refreshCurrentEntry" | "open">, views: ChatViews) {
  const { composer, conversation: view, messages, sidebar, banner } = views;
  // The latest model list request; it never rejects (a failure shows the banner and hides the picker).
  let models: Promise<void> = Promise.resolve();

  function setStreaming(turn: Turn | null): void {
    state.streaming = turn;
    composer.setBusy(turn !== null);
    sidebar.setBusy(turn !== null);
    view.setBusy(turn !== null);
  }

  /** The composer's message: shown at once, then answered, from the end of the branch shown. */
  function send(message: string): void {
    const conversationId = state.current?.id ?? null;
    // The reply the log ends with: the message answers the branch on screen, whatever another
    // tab made the active one meanwhile.
    const last = view.lastMessage();
    const lastReply =
      last?.classList.contains("assistant") && last.getAttribute("data-message-id") ? last.getAttribute("data-message-id") : null;
    // A new chat's first message is a root; otherwise it answers the reply shown last.
    const parentId = conversationId ? (lastReply ?? undefined) : null;
    sendUnder(message, conversationId, parentId, false);
  }

  function sendUnder(
    message: string,
    conversationId: string | null,
    parentId: string | null | undefined,
    reloadAfter: boolean,
  ): void {
    banner.hide();
    view.setEmptyHint(false);
    const userView = messages.message({
      id: "",
      role: "user",
      content: message,
      ...(parentId !== undefined ? { parent_id: parentId } : {}),
    });
    view.append(userView);
    view.scrollToEnd();
    // A message sent before the model list arrived waits for it (briefly), so it carries the choice
    // the picker is about to show rather than none.
    void modelsKnown().then(() =>
      run(
        {
          message,
          conversationId,
          ...(parentId !== undefined && conversationId ? { parentId } : {}),
          choice: composer.chosenModel(),
          idempotencyKey: crypto.randomUUID(),
        },
        userView,
        reloadAfter,
      ),
    );
  }

  /** An edit of the user's message `element`: it and what followed it leave the log (they stay
   *  stored, one "‹ ›" away), and the new text is sent under the same parent. */
  function edit(element: HTMLElement, parentId: string | null, text: string): boolean {
    const conversationId = state.current?.id ?? null;
    const unsent = unsentOf.get(element);
    // A new chat's first message, not sent, is edited into a new chat's first message.
    if (state.streaming || (!conversationId && !unsent)) return false;
    if (unsent) forget(unsent);
    view.removeFrom(element);
    sendUnder(text, conversationId, parentId, conversationId !== null);
    return true;
  }

  /** Another reply to the message the reply `element` answers: it and what followed it leave the
   *  log (they stay stored, one "‹ ›" away). */
  function regenerate(element: HTMLElement, replyId: string): boolean {
    const conversationId = state.current?.id;
    const userView = element.previousElementSibling;
    if (state.streaming || !conversationId || !(userView instanceof HTMLElement)) return false;
    banner.hide();
    view.removeFrom(element);
    void modelsKnown().then(() =>
      run(
        {
          message: "",
          conversationId,
          regenerate: replyId,
          choice: composer.chosenModel(),
          idempotencyKey: crypto.randomUUID(),
        },
        userView,
        true,
      ),
    );
    return true;
  }

  /** Settles once the model list has loaded or failed, or after two seconds, whichever is first. */
  function modelsKnown(): Promise<void> {
    return Promise.race([models, new Promise<void>((resolve) => setTimeout(resolve, 2000))]);
  }

  /** Runs a turn into the log after `userView`; `reloadAfter` (an edit, a regeneration) reads the
   *  branch again once it is answered, so the new version shows its "‹ n / n ›". */
  async function run(pending: PendingTurn, userView: HTMLElement, reloadAfter = false): Promise<void> {
    const turn = new Turn(pending, (body, key, signal) => api.chat(body, key, signal));
    setStreaming(turn);
    view.announce("Sending…");
    // Set by the listener's closures; the cast keeps TypeScript from narrowing it to null.
    let reply = null as AssistantView | null;
    let frame = 0;
    const listing = state.messagePages.listing;
    const render = () => {
      frame = 0;
      if (!reply) return;
      const stick = view.nearBottom();
      messages.grow(reply, reply.text);
      if (stick) view.scrollToEnd();
    };
    // Until the first piece of the reply arrives, a placeholder says the turn is under way.
    const thinking = messages.thinking();
    userView.after(thinking);
    if (view.nearBottom()) view.scrollToEnd();
    const ensureReply = (messageId: string) => {
      if (reply) return reply;
      reply = messages.assistant(messageId);
      thinking.replaceWith(reply.element);
      return reply;
    };
    // The turn's conversation, once the server named it, is the open one (unless another opened).
    const adopt = (conversationId: string) => {
      if (state.current?.id === conversationId || listing !== state.messagePages.listing) return;
      history.adopt(conversationId, derivedTitle(pending.message));
    };
    const result = await turn.run({
      started(start) {
        messages.setId(userView, start.user_message_id);
        adopt(start.conversation_id);
        ensureReply(start.message_id);
        view.announce("The assistant is replying…");
      },
      grew(text) {
        if (!reply) return;
        reply.text = text;
        if (!frame) frame = requestAnimationFrame(render);
      },
      finished(done) {
        adopt(done.conversation_id);
        const stick = view.nearBottom();
        const target = ensureReply(done.message_id);
        cancelAnimationFrame(frame);
        messages.setId(target.element, done.message_id);
        messages.finish(target, done.reply, done.ending);
        if (stick) view.scrollToEnd();
        view.announce("Reply finished.");
      },
      failed(problem) {
        cancelAnimationFrame(frame);
        if (reply) messages.finish(reply, reply.text, "incomplete");
        view.announce("The reply failed.");
        banner.show(problem);
      },
    });
    thinking.remove();
    if (result.outcome !== "answered") cancelAnimationFrame(frame);
    // What can be done with a stopped reply (Regenerate, Copy) is brought into view once the
    // composer below has settled (Send back, the usage line), not left below the fold.
    let stoppedActions: HTMLElement | null = null;
    if (result.outcome === "stopped") {
      if (reply) {
        messages.finish(reply, reply.text, "stopped");
        stoppedActions = reply.element.querySelector<HTMLElement>(".message-actions");
      } else messages.stoppedBeforeReply(userView);
      view.announce("Reply stopped.");
    } else if (result.outcome === "unanswered" && result.problem.status === 429) {
      // A budget refused it: nothing was stored. The message goes back into the box (no bubble
      // is left that looks sent), and sending waits until the budget renews.
      reply?.element.remove();
      if (!pending.regenerate && userView.getAttribute("data-message-id") === "") {
        userView.remove();
        composer.restore(pending.message);
      }
      const wait = result.problem.retryAfterSeconds ?? 60;
      const text = describe(result.problem);
      composer.blockUntil(new Date(Date.now() + wait * 1000), text);
      view.announce(text);
      banner.show(result.problem);
    } else if (result.outcome === "unanswered") {
      // Nothing is kept of a reply that did not finish: a retry (the same Idempotency-Key) gets
      // either the whole stored turn or runs it once.
      reply?.element.remove();
      view.announce("The message was not answered.");
      const again = () => {
        if (state.current?.id !== (pending.conversationId ?? state.current?.id)) return;
        forget(pending);
        banner.hide();
        messages.clearFailure(userView);
        void run(result.retry, userView, reloadAfter);
      };
      if (!pending.regenerate) {
        // The user's message stays, marked, until it is sent, edited or deleted, here and when its
        // conversation is shown again.
        const unsent = { pending, reason: describe(result.problem), retryable: result.problem.retryable };
        const key = pending.conversationId ?? "";
        state.unsent.set(key, [...(state.unsent.get(key) ?? []).filter((u) => u.pending !== pending), unsent]);
        markUnsent(userView, unsent, again);
      }
      banner.show(result.problem, again);
    }
    // "signed-out": the app is back at the sign-in screen.
    setStreaming(null);
    const usageShown = result.outcome === "answered" || result.outcome === "stopped" ? showUsage() : Promise.resolve();
    const actions = stoppedActions as HTMLElement | null;
    if (actions) {
      actions.scrollIntoView({ block: "nearest" });
      void usageShown.then(() => actions.scrollIntoView({ block: "nearest" }));
    }
    const current = state.current;
    if (current && listing === state.messagePages.listing) {
      history.refreshCurrentEntry();
      const refusedByBudget = result.outcome === "unanswered" && result.problem.status === 429;
      if (reloadAfter && (refusedByBudget || (result.outcome !== "unanswered" && result.outcome !== "signed-out"))) {
        const replyId = reply?.element.getAttribute("data-message-id");
        await history.open(current.id);
        if (replyId) document.querySelector<HTMLElement>(`#messages [data-message-id="${CSS.escape(replyId)}"]`)?.scrollIntoView({ block: "end" });
      }
    }
    composer.regainFocus();
  }

  /** Which unsent message a bubble shows. */
  const unsentOf = new WeakMap<HTMLElement, PendingTurn>();

  function forget(pending: PendingTurn): void {
    const key = pending.conversationId ?? "";
    const left = (state.unsent.get(key) ?? []).filter((u) => u.pending !== pending);
    if (left.length) state.unsent.set(key, left);
    else state.unsent.delete(key);
  }

  function markUnsent(userView: HTMLElement, unsent: Unsent, again: () => void): void {
    unsentOf.set(userView, unsent.pending);
    messages.failed(userView, unsent.reason, {
      again: unsent.retryable ? again : null,
      remove: () => {
        forget(unsent.pending);
        userView.remove();
        banner.hide();
        view.announce("The unsent message was deleted.");
      },
    });
  }

  /** The open conversation's unsent messages, at the end of its log, each with its failure. */
  function showUnsent(): void {
    const key = state.current?.id ?? "";
    for (const unsent of state.unsent.get(key) ?? []) {
      const { pending } = unsent;
      const userView = messages.message({
        id: "",
        role: "user",
        content: pending.message,
        ...(pending.parentId !== undefined ? { parent_id: pending.parentId } : pending.conversationId ? {} : { parent_id: null }),
      });
      view.append(userView);
      view.setEmptyHint(false);
      markUnsent(userView, unsent, () => {
        if (state.streaming) return;
        forget(pending);
        banner.hide();
        messages.clearFailure(userView);
        void run(pending, userView);
      });
    }
  }

  /** What is left of today's budget, beside the box (quietly; a failure shows nothing). */
  async function showUsage(): Promise<void> {
    try {
      composer.showUsage(await api.usage());
    } catch {
      // The usage line is a courtesy: without it sending still works, and a refusal says why.
    }
  }

  function loadModels(): Promise<void> {
    models = (async () => {
      try {
        const models = await api.models();
        composer.showModels(models);
        // Only the offline stand-in answers here: say what it is, and how to reach a real model.
        const echoOnly = models !== null && models.providers.every((provider) => provider.name === "echo");
        document.getElementById("echo-hint")?.toggleAttribute("hidden", !echoOnly);
      } catch (error) {
        composer.hideModels();
        banner.show(error, () => void loadModels());
      }
    })();
    return models;
  }

  return { send, edit, regenerate, stop: () => state.streaming?.stop(), loadModels, showUsage, showUnsent };
}
