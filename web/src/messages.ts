// Messages as the log shows them: the user's as plain text (with Edit), the assistant's as Markdown
// (growing while it streams), with Copy, Regenerate and a rating form once finished; a message
// with alternatives (an edit, a regeneration) shows "‹ 2 / 3 ›" to move between them.

import { ApiError, type Ending, type Feedback, type Message } from "./api";
import { h } from "./dom";
import { MAX_COMMENT_CHARS } from "./limits";
import { settledEnd } from "./blocks";
import { flash, renderInto, renderMarkdown } from "./markdown";
import { describe } from "./problem";
import { state } from "./state";

/** An assistant's reply on the page, and its text (what Copy copies). */
export interface AssistantView {
  element: HTMLElement;
  body: HTMLElement;
  text: string;
  /** While it streams: how much of the text is rendered for good, and the nodes of the rest. */
  settled: number;
  tail: ChildNode[];
}

/** What the tree's actions ask of the page: each is refused (returns false) while a reply streams. */
export interface TreeActions {
  /** Sends `text` in place of the user's message `element` (a sibling under `parentId`). */
  edit(element: HTMLElement, parentId: string | null, text: string): boolean;
  /** Answers again the message the reply `element` answers. */
  regenerate(element: HTMLElement, replyId: string): boolean;
  /** Shows the branch through the message `messageId` (a sibling of the one shown). */
  switchTo(messageId: string): void;
}

/** A message as the log shows it: stored, or the user's just sent (id "", its parent known). */
export type Shown = Pick<Message, "id" | "role" | "content" | "ending"> &
  Partial<Pick<Message, "parent_id" | "siblings">>;

export interface Messages {
  /** A stored message, or the user's just sent (id ""). */
  message(message: Shown): HTMLElement;
  /** A reply that is about to stream in. */
  assistant(messageId: string): AssistantView;
  /** The placeholder shown from the moment a message is sent until its reply begins. */
  thinking(): HTMLElement;
  /** Shows the reply so far while it streams. */
  grow(view: AssistantView, text: string): void;
  /** Shows the final text, how it ended (if cut short), and its actions. `seen` is whether this
   *  page saw it end (a Stop here), or it comes from history (where "stopped" also means a page
   *  that was closed or reloaded mid-reply: the server cannot tell those apart). */
  finish(view: AssistantView, text: string, ending: Ending | undefined, seen?: "here" | "stored"): void;
  setId(element: HTMLElement, messageId: string): void;
  /** Says, under the user's message, that it was stopped before any reply. */
  stoppedBeforeReply(userMessage: HTMLElement): void;
  /** Marks the user's message as not sent: why, Send again (when that may help) and Delete; its
   *  Edit sends a changed text instead. */
  failed(userMessage: HTMLElement, reason: string, actions: { again: (() => void) | null; remove: () => void }): void;
  /** Takes the not-sent marking off again. */
  clearFailure(userMessage: HTMLElement): void;
}

export function messagesView(rate: (feedback: Feedback) => Promise<Feedback>, tree: TreeActions): Messages {
  let ratingForms = 0;
  let editForms = 0;

  /** "‹ 2 / 3 ›" for a message with alternatives; nothing for one without. */
  function versions(message: Shown): HTMLElement | null {
    const siblings = message.siblings;
    if (!siblings || siblings.ids.length < 2) return null;
    const { ids, index } = siblings;
    const label = `Version ${index + 1} of ${ids.length}`;
    const previous = h("button", { type: "button", class: "small version-step", "aria-label": "Previous version" }, "‹");
    const next = h("button", { type: "button", class: "small version-step", "aria-label": "Next version" }, "›");
    previous.disabled = index === 0;
    next.disabled = index === ids.length - 1;
    previous.addEventListener("click", () => tree.switchTo(ids[index - 1]));
    next.addEventListener("click", () => tree.switchTo(ids[index + 1]));
    return h(
      "div",
      { class: "versions", role: "group", "aria-label": label },
      previous,
      h("span", { class: "version-count", "aria-hidden": "true" }, `${index + 1} / ${ids.length}`),
      next,
    );
  }

  /** The user's message: its text, Edit, and its versions. */
  function userMessage(message: Shown): HTMLElement {
    const body = h("div", { class: "message-body plain" }, message.content);
    const element = h(
      "article",
      { class: "message user", "data-message-id": message.id },
      h("h3", { class: "visually-hidden" }, "You wrote"),
      body,
    );
    if (message.parent_id !== undefined) element.setAttribute("data-parent-id", message.parent_id ?? "");
    const edit = h("button", { type: "button", class: "small", "aria-expanded": "false" }, "Edit");
    edit.addEventListener("click", () => {
      if (element.querySelector("form.edit-form")) return;
      const form = editForm(element, message.content, () => {
        form.remove();
        body.hidden = false;
        actions.hidden = false;
        edit.setAttribute("aria-expanded", "false");
        edit.focus();
      });
      body.hidden = true;
      actions.hidden = true;
      edit.setAttribute("aria-expanded", "true");
      element.append(form);
      form.querySelector("textarea")?.focus();
    });
    const actions = h("div", { class: "message-actions" }, edit);
    const shown = versions(message);
    if (shown) actions.prepend(shown);
    element.append(actions);
    return element;
  }

  function editForm(element: HTMLElement, content: string, close: () => void): HTMLFormElement {
    const n = ++editForms;
    const text = h("textarea", { id: `edit-${n}`, name: "message", rows: "3" });
    text.value = content;
    const cancel = h("button", { type: "button", class: "small" }, "Cancel");
    const error = h("p", { class: "field-error", role: "alert" });
    const form = h(
      "form",
      { class: "edit-form", "aria-label": "Edit your message" },
      h("label", { for: `edit-${n}`, class: "visually-hidden" }, "Your message"),
      text,
      error,
      h("div", { class: "form-actions" }, h("button", { type: "submit", class: "small primary" }, "Save & send"), cancel),
    );
    cancel.addEventListener("click", close);
    form.addEventListener("keydown", (event) => {
      if (event.key !== "Escape") return;
      event.preventDefault();
      event.stopPropagation();
      close();
    });
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const value = text.value.trim();
      if (!value) {
        error.textContent = "Write something to send.";
        return;
      }
      const parent = element.getAttribute("data-parent-id");
      if (parent === null) return;
      if (!tree.edit(element, parent === "" ? null : parent, value)) {
        error.textContent = "Wait for the reply to finish, then send.";
      }
    });
    return form;
  }

  function assistant(messageId: string): AssistantView {
    const body = h("div", { class: "message-body markdown" });
    const element = h(
      "article",
      { class: "message assistant", "data-message-id": messageId, "aria-busy": "true" },
      h("h3", { class: "visually-hidden" }, "Assistant replied"),
      body,
    );
    return { element, body, text: "", settled: 0, tail: [] };
  }

  function finish(view: AssistantView, text: string, ending: Ending | undefined, seen: "here" | "stored" = "here"): void {
    view.text = text;
    view.settled = 0;
    view.tail = [];
    view.element.removeAttribute("aria-busy");
    renderInto(view.body, text);
    if (ending) {
      view.element.classList.add(ending);
      view.element.append(
        h(
          "p",
          { class: "ending" },
          ending === "incomplete"
            ? "Incomplete: the model stopped midway."
            : seen === "here"
              ? "Stopped: the reply was cut short."
              : "Cut short: stopped, or its page was closed or lost the connection.",
        ),
      );
    }
    view.element.append(actionsFor(view));
  }

  function actionsFor(view: AssistantView): HTMLElement {
    const messageId = view.element.getAttribute("data-message-id") ?? "";
    const copy = h("button", { type: "button", class: "small" }, "Copy");
    copy.addEventListener("click", () => {
      navigator.clipboard.writeText(view.text).then(
        () => flash(copy, "Copied", "Copy"),
        () => flash(copy, "Copy failed", "Copy"),
      );
    });
    const given = h("span", { class: "rating-given" });
    const rateButton = h("button", { type: "button", class: "small", "aria-expanded": "false" }, "Rate");
    const again = h("button", { type: "button", class: "small" }, "Regenerate");
    again.addEventListener("click", () => {
      const id = view.element.getAttribute("data-message-id") ?? "";
      if (id) tree.regenerate(view.element, id);
    });
    const actions = h("div", { class: "message-actions" }, copy, again, rateButton, given);
    const showGiven = (feedback: Feedback | undefined) => {
      given.textContent = feedback
        ? `Rated ${feedback.rating} of 5${feedback.comment ? `: “${feedback.comment}”` : ""}`
        : "";
      rateButton.textContent = feedback ? "Change rating" : "Rate";
    };
    showGiven(state.ratings.get(messageId));
    const closed = () => {
      rateButton.setAttribute("aria-expanded", "false");
      rateButton.focus();
    };
    rateButton.addEventListener("click", () => {
      const open = view.element.querySelector("form.rate-form");
      if (open) {
        open.remove();
        rateButton.setAttribute("aria-expanded", "false");
        return;
      }
      const form = ratingForm(messageId, (feedback) => {
        state.ratings.set(messageId, feedback);
        showGiven(feedback);
        closed();
      }, closed);
      view.element.append(form);
      rateButton.setAttribute("aria-expanded", "true");
      form.querySelector<HTMLInputElement>("input")?.focus();
    });
    return actions;
  }

  function ratingForm(messageId: string, saved: (feedback: Feedback) => void, cancelled: () => void): HTMLFormElement {
    const n = ++ratingForms;
    const previous = state.ratings.get(messageId);
    const stars = h("div", { class: "stars" });
    for (let value = 1; value <= 5; value++) {
      const id = `rating-${n}-${value}`;
      const radio = h("input", { type: "radio", name: "rating", value: String(value), id, required: true });
      if (previous?.rating === value) radio.checked = true;
      stars.append(h("span", { class: "star" }, radio, h("label", { for: id }, String(value))));
    }
    const comment = h("textarea", { id: `rating-${n}-comment`, name: "comment", maxlength: String(MAX_COMMENT_CHARS), rows: "2" });
    comment.value = previous?.comment ?? "";
    const error = h("p", { class: "field-error", role: "alert" });
    const cancel = h("button", { type: "button", class: "small" }, "Cancel");
    const form = h(
      "form",
      { class: "rate-form", "aria-label": "Rate this reply" },
      h("fieldset", {}, h("legend", {}, "Rating, 1 (poor) to 5 (great)"), stars),
      h("label", { for: `rating-${n}-comment` }, "Comment (optional)"),
      comment,
      error,
      h("div", { class: "form-actions" }, h("button", { type: "submit", class: "small primary" }, "Submit rating"), cancel),
    );
    const close = () => {
      form.remove();
      cancelled();
    };
    cancel.addEventListener("click", close);
    // Escape anywhere in the form is Cancel, as in a dialog.
    form.addEventListener("keydown", (event) => {
      if (event.key !== "Escape") return;
      event.preventDefault();
      event.stopPropagation();
      close();
    });
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const rating = Number(new FormData(form).get("rating"));
      if (!state.current || !(rating >= 1 && rating <= 5)) return;
      const text = comment.value.trim();
      const submit = form.querySelector<HTMLButtonElement>("button[type=submit]")!;
      submit.disabled = true;
      rate({ conversation_id: state.current.id, message_id: messageId, rating, ...(text ? { comment: text } : {}) })
        .then((feedback) => {
          form.remove();
          saved(feedback);
        })
        .catch((failure: unknown) => {
          submit.disabled = false;
          error.textContent = failure instanceof ApiError ? describe(failure) : "The rating was not saved.";
        });
    });
    return form;
  }

  return {
    message(message) {
      if (message.role === "user") return userMessage(message);
      const view = assistant(message.id);
      finish(view, message.content, message.ending, "stored");
      const shown = versions(message);
      if (shown) view.element.querySelector(".message-actions")?.prepend(shown);
      return view.element;
    },
    assistant,
    thinking() {
      return h(
        "div",
        { class: "thinking" },
        h("span", { class: "visually-hidden" }, "The assistant is thinking"),
        h("span", { class: "thinking-dots", "aria-hidden": "true" }, h("span", {}), h("span", {}), h("span", {})),
      );
    },
    grow(view, text) {
      // Each frame renders only what follows the settled blocks: linear in the reply, not
      // quadratic. The finished reply is rendered whole once more.
      view.text = text;
      for (const node of view.tail) node.remove();
      const end = settledEnd(text, view.settled);
      if (end > view.settled) {
        view.body.append(renderMarkdown(text.slice(view.settled, end)));
        view.settled = end;
      }
      const tail = renderMarkdown(text.slice(view.settled));
      view.tail = Array.from(tail.childNodes);
      view.body.append(tail);
    },
    finish,
    setId(element, messageId) {
      element.setAttribute("data-message-id", messageId);
    },
    stoppedBeforeReply(userMessage) {
      userMessage.append(h("p", { class: "ending" }, "Stopped before the reply began."));
    },
    failed(userMessage, reason, actions) {
      userMessage.querySelector(".failure")?.remove();
      userMessage.classList.add("failed");
      const remove = h("button", { type: "button", class: "small" }, "Delete");
      remove.addEventListener("click", actions.remove);
      const buttons = h("div", { class: "form-actions" }, remove);
      if (actions.again) {
        const again = h("button", { type: "button", class: "small primary" }, "Send again");
        again.addEventListener("click", actions.again);
        buttons.prepend(again);
      }
      userMessage.append(
        h("div", { class: "failure", role: "group", "aria-label": "Not sent" }, h("p", { class: "failure-reason" }, `Not sent: ${reason}`), buttons),
      );
    },
    clearFailure(userMessage) {
      userMessage.classList.remove("failed");
      userMessage.querySelector(".failure")?.remove();
    },
  };
}
