import "./styles.css";
import {
  Api,
  ApiError,
  isAbort,
  problemFromEvent,
  type ChatDone,
  type ChatStart,
  type Conversation,
  type Feedback,
  type Message,
  type ModelChoice,
} from "./api";
import { isValidDevUser, Session } from "./auth";
import { loadConfig } from "./config";
import { byId, formatTime, h } from "./dom";
import { flash, renderInto } from "./markdown";
import { readEvents } from "./sse";

// ---- elements -------------------------------------------------------------------------------

const signinView = byId("signin");
const signinMessage = byId("signin-message");
const devSignin = byId<HTMLFormElement>("dev-signin");
const devUserInput = byId<HTMLInputElement>("dev-user");
const cognitoSignin = byId("cognito-signin");
const shell = byId("shell");
const who = byId("who");
const sidebar = byId("sidebar");
const sidebarToggle = byId<HTMLButtonElement>("sidebar-toggle");
const conversationList = byId<HTMLUListElement>("conversation-list");
const conversationsStatus = byId("conversations-status");
const conversationsSentinel = byId("conversations-sentinel");
const conversationTitle = byId("conversation-title");
const renameButton = byId<HTMLButtonElement>("rename");
const deleteButton = byId<HTMLButtonElement>("delete");
const log = byId("log");
const olderSentinel = byId("older-sentinel");
const olderStatus = byId("older-status");
const messagesEl = byId("messages");
const emptyHint = byId("empty-hint");
const banner = byId("banner");
const bannerText = byId("banner-text");
const bannerCountdown = byId("banner-countdown");
const bannerRetry = byId<HTMLButtonElement>("banner-retry");
const composer = byId<HTMLFormElement>("composer");
const input = byId<HTMLTextAreaElement>("composer-input");
const modelField = byId("model-field");
const modelSelect = byId<HTMLSelectElement>("model");
const sendButton = byId<HTMLButtonElement>("send");
const stopButton = byId<HTMLButtonElement>("stop");
const streamStatus = byId("stream-status");
const confirmDialog = byId<HTMLDialogElement>("confirm-dialog");
const renameDialog = byId<HTMLDialogElement>("rename-dialog");
const renameInput = byId<HTMLInputElement>("rename-input");
const renameError = byId("rename-error");

// ---- state ----------------------------------------------------------------------------------

const config = await loadConfig();
const session = new Session(config);
const api = new Api({
  baseUrl: config.apiBaseUrl,
  identity: () => session.identityHeaders(),
  onUnauthorized: () => signedOut("Your sign-in has expired. Please sign in again."),
});

let conversations: Conversation[] = [];
let conversationsCursor: string | null = null;
let conversationsComplete = false;
let conversationsLoading = false;
/** Bumped whenever the listing starts over, so an answer for an older listing is dropped. */
let conversationsGeneration = 0;

let current: Conversation | null = null;
let olderCursor: string | null = null;
let olderLoading = false;
/** Bumped whenever another conversation opens, so late answers for the previous one are dropped. */
let openGeneration = 0;
let ratings = new Map<string, Feedback>();

interface PendingSend {
  message: string;
  conversationId: string | null;
  choice: ModelChoice | null;
  idempotencyKey: string;
}
let streaming: AbortController | null = null;
let stoppedByUser = false;

// ---- errors ---------------------------------------------------------------------------------

let countdownTimer: number | undefined;
let retryAction: (() => void) | null = null;

function describe(error: ApiError): string {
  if (error.kind === "network") return "Could not reach the server. Check your connection, then retry.";
  if (error.status === 429) return `Too many requests. ${error.detail}`.trim();
  return error.detail ? `${error.title}. ${error.detail}` : error.title;
}

function showError(error: unknown, retry: (() => void) | null = null): void {
  if (!(error instanceof ApiError)) {
    console.error(error);
    error = new ApiError("http", 0, "Something went wrong", String(error));
  }
  const problem = error as ApiError;
  if (problem.status === 401 || problem.kind === "aborted") return;
  window.clearInterval(countdownTimer);
  banner.hidden = false;
  bannerText.textContent = describe(problem);
  bannerCountdown.textContent = "";
  retryAction = retry && problem.retryable ? retry : null;
  bannerRetry.hidden = retryAction === null;
  bannerRetry.disabled = false;
  if (retryAction && problem.retryAfterSeconds) {
    let left = problem.retryAfterSeconds;
    bannerRetry.disabled = true;
    const tick = () => {
      if (left <= 0) {
        window.clearInterval(countdownTimer);
        bannerCountdown.textContent = "You can retry now.";
        bannerRetry.disabled = false;
        return;
      }
      bannerCountdown.textContent = `Retry possible in ${left} s.`;
      left -= 1;
    };
    tick();
    countdownTimer = window.setInterval(tick, 1000);
  }
}

function hideError(): void {
  window.clearInterval(countdownTimer);
  banner.hidden = true;
  retryAction = null;
}

bannerRetry.addEventListener("click", () => {
  const action = retryAction;
  hideError();
  action?.();
});
byId("banner-dismiss").addEventListener("click", () => {
  hideError();
  input.focus();
});

// ---- sign-in --------------------------------------------------------------------------------

function showSignIn(message = ""): void {
  shell.hidden = true;
  signinView.hidden = false;
  signinMessage.textContent = message;
  devSignin.hidden = session.mode !== "dev";
  cognitoSignin.hidden = session.mode !== "cognito";
  (session.mode === "dev" ? devUserInput : byId("cognito-signin-button")).focus();
}

function signedOut(message: string): void {
  streaming?.abort();
  session.forget();
  hideError();
  showSignIn(message);
}

devSignin.addEventListener("submit", (event) => {
  event.preventDefault();
  const name = devUserInput.value.trim();
  if (!isValidDevUser(name)) {
    signinMessage.textContent = "Use letters, digits, dots, dashes, underscores or @ (at most 64).";
    return;
  }
  session.signInDev(name);
  void startApp();
});

byId("cognito-signin-button").addEventListener("click", () => {
  void session.startCognitoSignIn();
});

byId("sign-out").addEventListener("click", () => {
  streaming?.abort();
  session.signOut();
  if (session.mode === "dev") showSignIn("You are signed out.");
});

// ---- the shell ------------------------------------------------------------------------------

async function startApp(): Promise<void> {
  signinView.hidden = true;
  shell.hidden = false;
  who.textContent = session.displayName();
  resetConversations();
  const wanted = conversationFromHash();
  if (wanted) void openConversation(wanted);
  else newChat();
  void loadModels();
}

function setSidebarOpen(open: boolean): void {
  document.body.classList.toggle("sidebar-open", open);
  sidebarToggle.setAttribute("aria-expanded", String(open));
  if (open) byId("new-chat").focus();
}

sidebarToggle.addEventListener("click", () => setSidebarOpen(!document.body.classList.contains("sidebar-open")));
document.addEventListener("keydown", (event) => {
  if (event.key === "Escape" && document.body.classList.contains("sidebar-open")) {
    setSidebarOpen(false);
    sidebarToggle.focus();
  }
});

// ---- models ---------------------------------------------------------------------------------

async function loadModels(): Promise<void> {
  try {
    const models = await api.models();
    modelSelect.replaceChildren();
    if (!models || models.providers.length === 0) {
      modelField.hidden = true;
      return;
    }
    for (const provider of models.providers) {
      const group = h("optgroup", { label: provider.name });
      for (const model of provider.models) {
        const option = h("option", { value: JSON.stringify({ provider: provider.name, model }) }, model);
        if (provider.name === models.default.provider && model === models.default.model) option.selected = true;
        group.append(option);
      }
      modelSelect.append(group);
    }
    modelField.hidden = false;
  } catch (error) {
    modelField.hidden = true;
    showError(error, () => void loadModels());
  }
}

function chosenModel(): ModelChoice | null {
  if (modelField.hidden || !modelSelect.value) return null;
  return JSON.parse(modelSelect.value) as ModelChoice;
}

// ---- the conversation list ------------------------------------------------------------------

const conversationsObserver = new IntersectionObserver(
  (entries) => {
    if (entries.some((entry) => entry.isIntersecting)) void loadMoreConversations();
  },
  { root: sidebar, rootMargin: "120px" },
);

function resetConversations(): void {
  conversationsGeneration += 1;
  conversations = [];
  conversationsCursor = null;
  conversationsComplete = false;
  conversationsLoading = false;
  conversationList.replaceChildren();
  conversationsStatus.textContent = "";
  conversationsObserver.unobserve(conversationsSentinel);
  conversationsObserver.observe(conversationsSentinel);
}

async function loadMoreConversations(): Promise<void> {
  if (conversationsLoading || conversationsComplete || shell.hidden) return;
  conversationsLoading = true;
  const generation = conversationsGeneration;
  conversationsStatus.textContent = "Loading conversations…";
  try {
    const page = await api.conversations(conversationsCursor);
    if (generation !== conversationsGeneration) return;
    const known = new Set(conversations.map((c) => c.id));
    for (const conversation of page.items) {
      if (known.has(conversation.id)) continue;
      conversations.push(conversation);
      conversationList.append(conversationItem(conversation));
    }
    conversationsCursor = page.nextCursor;
    conversationsComplete = page.nextCursor === null;
    conversationsStatus.textContent = conversations.length === 0 ? "No conversations yet." : "";
  } catch (error) {
    if (generation !== conversationsGeneration) return;
    conversationsStatus.textContent = "";
    showError(error, () => void loadMoreConversations());
    return;
  } finally {
    if (generation === conversationsGeneration) conversationsLoading = false;
  }
  // The sentinel may still be in view (a short page, a tall screen): observing again re-checks.
  conversationsObserver.unobserve(conversationsSentinel);
  if (!conversationsComplete) conversationsObserver.observe(conversationsSentinel);
}

function conversationItem(conversation: Conversation): HTMLLIElement {
  const button = h(
    "button",
    { type: "button", class: "conversation", "data-id": conversation.id },
    h("span", { class: "conversation-name" }, conversation.title || "Untitled"),
    h("span", { class: "conversation-time" }, formatTime(conversation.updated_at)),
  );
  if (current?.id === conversation.id) button.setAttribute("aria-current", "page");
  button.addEventListener("click", () => {
    setSidebarOpen(false);
    void openConversation(conversation.id);
  });
  return h("li", {}, button);
}

/** Puts a conversation at the top of the list (new, or just used), or refreshes its entry. */
function upsertConversation(conversation: Conversation, moveToTop: boolean): void {
  const index = conversations.findIndex((c) => c.id === conversation.id);
  const existing = conversationList.querySelector(`[data-id="${conversation.id}"]`)?.closest("li");
  const item = conversationItem(conversation);
  if (index >= 0) conversations[index] = conversation;
  if (moveToTop || index < 0) {
    if (index >= 0) conversations.splice(index, 1);
    conversations.unshift(conversation);
    existing?.remove();
    conversationList.prepend(item);
  } else {
    existing?.replaceWith(item);
  }
  conversationsStatus.textContent = "";
}

function removeConversation(id: string): void {
  conversations = conversations.filter((c) => c.id !== id);
  conversationList.querySelector(`[data-id="${id}"]`)?.closest("li")?.remove();
  if (conversations.length === 0 && conversationsComplete) conversationsStatus.textContent = "No conversations yet.";
}

function markCurrentInList(): void {
  for (const button of conversationList.querySelectorAll("button.conversation")) {
    if (button.getAttribute("data-id") === current?.id) button.setAttribute("aria-current", "page");
    else button.removeAttribute("aria-current");
  }
}

// ---- one conversation -----------------------------------------------------------------------

const olderObserver = new IntersectionObserver(
  (entries) => {
    if (entries.some((entry) => entry.isIntersecting)) void loadOlder();
  },
  { root: log, rootMargin: "200px" },
);

function conversationFromHash(): string | null {
  const match = /^#\/c\/([0-9A-HJKMNP-TV-Z]{26})$/.exec(location.hash);
  return match ? match[1] : null;
}

function setCurrent(conversation: Conversation | null): void {
  current = conversation;
  conversationTitle.textContent = conversation ? conversation.title || "Untitled" : "New chat";
  renameButton.hidden = conversation === null;
  deleteButton.hidden = conversation === null;
  const hash = conversation ? `#/c/${conversation.id}` : "";
  if (location.hash !== hash) history.replaceState(null, "", `${location.pathname}${location.search}${hash}`);
  markCurrentInList();
}

function clearLog(): void {
  openGeneration += 1;
  olderObserver.unobserve(olderSentinel);
  olderCursor = null;
  olderLoading = false;
  ratings = new Map();
  messagesEl.replaceChildren();
  olderStatus.textContent = "";
  emptyHint.hidden = false;
}

function newChat(): void {
  if (streaming) return;
  hideError();
  clearLog();
  setCurrent(null);
  input.focus();
}

byId("new-chat").addEventListener("click", () => {
  setSidebarOpen(false);
  newChat();
});

async function openConversation(id: string): Promise<void> {
  if (streaming) return;
  hideError();
  clearLog();
  const generation = openGeneration;
  const known = conversations.find((c) => c.id === id);
  setCurrent(known ?? { id, title: "Loading…", created_at: "", updated_at: "", message_count: 0 });
  olderStatus.textContent = "Loading messages…";
  try {
    const [page, feedback] = await Promise.all([api.messages(id, null), api.feedback(id)]);
    if (generation !== openGeneration) return;
    ratings = new Map(feedback.map((f) => [f.message_id, f]));
    for (const message of page.items.slice().reverse()) messagesEl.append(messageView(message));
    emptyHint.hidden = page.items.length > 0;
    olderCursor = page.nextCursor;
    olderStatus.textContent = "";
    if (!known) {
      // Opened from the address: the listing's entry has the title.
      const found = conversations.find((c) => c.id === id);
      setCurrent(found ?? { ...current!, title: titleFromMessages(page.items) });
    }
    log.scrollTop = log.scrollHeight;
    if (olderCursor) olderObserver.observe(olderSentinel);
  } catch (error) {
    if (generation !== openGeneration) return;
    olderStatus.textContent = "";
    if (error instanceof ApiError && error.status === 404) {
      removeConversation(id);
      setCurrent(null);
      showError(new ApiError("http", 404, "This conversation no longer exists", ""));
      return;
    }
    showError(error, () => void openConversation(id));
  }
}

function titleFromMessages(newestFirst: Message[]): string {
  const first = newestFirst[newestFirst.length - 1];
  return first ? first.content.slice(0, 60) : "Untitled";
}

async function loadOlder(): Promise<void> {
  if (olderLoading || !olderCursor || !current) return;
  olderLoading = true;
  const generation = openGeneration;
  olderStatus.textContent = "Loading earlier messages…";
  try {
    const page = await api.messages(current.id, olderCursor);
    if (generation !== openGeneration) return;
    const fromBottom = log.scrollHeight - log.scrollTop;
    const fragment = document.createDocumentFragment();
    for (const message of page.items.slice().reverse()) fragment.append(messageView(message));
    messagesEl.prepend(fragment);
    log.scrollTop = log.scrollHeight - fromBottom;
    olderCursor = page.nextCursor;
    olderStatus.textContent = "";
  } catch (error) {
    if (generation !== openGeneration) return;
    olderStatus.textContent = "";
    showError(error, () => void loadOlder());
    return;
  } finally {
    if (generation === openGeneration) olderLoading = false;
  }
  olderObserver.unobserve(olderSentinel);
  if (olderCursor) olderObserver.observe(olderSentinel);
}

// ---- messages -------------------------------------------------------------------------------

interface AssistantView {
  element: HTMLElement;
  body: HTMLElement;
  text: string;
}

function messageView(message: Pick<Message, "id" | "role" | "content" | "ending">): HTMLElement {
  if (message.role === "user") {
    return h(
      "article",
      { class: "message user", "data-message-id": message.id },
      h("h3", { class: "visually-hidden" }, "You wrote"),
      h("div", { class: "message-body plain" }, message.content),
    );
  }
  const view = assistantView(message.id);
  finishAssistant(view, message.content, message.ending);
  return view.element;
}

function assistantView(messageId: string): AssistantView {
  const body = h("div", { class: "message-body markdown" });
  const element = h(
    "article",
    { class: "message assistant", "data-message-id": messageId, "aria-busy": "true" },
    h("h3", { class: "visually-hidden" }, "Assistant replied"),
    body,
  );
  return { element, body, text: "" };
}

function finishAssistant(view: AssistantView, text: string, ending: Message["ending"]): void {
  view.text = text;
  view.element.removeAttribute("aria-busy");
  renderInto(view.body, text, true);
  if (ending) {
    view.element.classList.add(ending);
    view.element.append(
      h(
        "p",
        { class: "ending" },
        ending === "stopped" ? "Stopped: the reply was cut short." : "Incomplete: the model stopped midway.",
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
  const rate = h("button", { type: "button", class: "small", "aria-expanded": "false" }, "Rate");
  const actions = h("div", { class: "message-actions" }, copy, rate, given);
  const showGiven = (feedback: Feedback | undefined) => {
    given.textContent = feedback
      ? `Rated ${feedback.rating} of 5${feedback.comment ? `: “${feedback.comment}”` : ""}`
      : "";
    rate.textContent = feedback ? "Change rating" : "Rate";
  };
  showGiven(ratings.get(messageId));
  rate.addEventListener("click", () => {
    const open = view.element.querySelector("form.rate-form");
    if (open) {
      open.remove();
      rate.setAttribute("aria-expanded", "false");
      return;
    }
    const form = ratingForm(messageId, (feedback) => {
      ratings.set(messageId, feedback);
      showGiven(feedback);
      rate.setAttribute("aria-expanded", "false");
      rate.focus();
    }, () => {
      rate.setAttribute("aria-expanded", "false");
      rate.focus();
    });
    view.element.append(form);
    rate.setAttribute("aria-expanded", "true");
    form.querySelector<HTMLInputElement>("input")?.focus();
  });
  return actions;
}

let ratingFormCount = 0;

function ratingForm(messageId: string, saved: (feedback: Feedback) => void, cancelled: () => void): HTMLFormElement {
  const n = ++ratingFormCount;
  const previous = ratings.get(messageId);
  const stars = h("div", { class: "stars" });
  for (let value = 1; value <= 5; value++) {
    const id = `rating-${n}-${value}`;
    const radio = h("input", { type: "radio", name: "rating", value: String(value), id, required: true });
    if (previous?.rating === value) radio.checked = true;
    stars.append(h("span", { class: "star" }, radio, h("label", { for: id }, String(value))));
  }
  const comment = h("textarea", { id: `rating-${n}-comment`, name: "comment", maxlength: "2000", rows: "2" });
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
  cancel.addEventListener("click", () => {
    form.remove();
    cancelled();
  });
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const rating = Number(new FormData(form).get("rating"));
    if (!current || !(rating >= 1 && rating <= 5)) return;
    const text = comment.value.trim();
    const submit = form.querySelector<HTMLButtonElement>("button[type=submit]")!;
    submit.disabled = true;
    api
      .rate({ conversation_id: current.id, message_id: messageId, rating, ...(text ? { comment: text } : {}) })
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

function nearBottom(): boolean {
  return log.scrollHeight - log.scrollTop - log.clientHeight < 80;
}

function scrollToBottomIf(stick: boolean): void {
  if (stick) log.scrollTop = log.scrollHeight;
}

// ---- sending --------------------------------------------------------------------------------

function setStreaming(controller: AbortController | null): void {
  streaming = controller;
  stopButton.hidden = controller === null;
  sendButton.hidden = controller !== null;
  byId<HTMLButtonElement>("new-chat").disabled = controller !== null;
  deleteButton.disabled = controller !== null;
  renameButton.disabled = controller !== null;
}

function autoGrow(): void {
  input.style.height = "auto";
  input.style.height = `${Math.min(input.scrollHeight, 240)}px`;
}

input.addEventListener("input", autoGrow);
input.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    composer.requestSubmit();
  }
});

composer.addEventListener("submit", (event) => {
  event.preventDefault();
  const message = input.value.trim();
  if (!message || streaming) return;
  input.value = "";
  autoGrow();
  hideError();
  emptyHint.hidden = true;
  const userView = messageView({ id: "", role: "user", content: message });
  messagesEl.append(userView);
  log.scrollTop = log.scrollHeight;
  void runTurn(
    { message, conversationId: current?.id ?? null, choice: chosenModel(), idempotencyKey: crypto.randomUUID() },
    userView,
  );
});

stopButton.addEventListener("click", () => {
  stoppedByUser = true;
  streaming?.abort();
});

async function runTurn(pending: PendingSend, userView: HTMLElement): Promise<void> {
  const controller = new AbortController();
  setStreaming(controller);
  stoppedByUser = false;
  streamStatus.textContent = "Sending…";
  // Set by the event handlers' closures; the cast keeps TypeScript from narrowing it to null.
  let view = null as AssistantView | null;
  let finished = false;
  let frame = 0;
  const generation = openGeneration;
  const render = () => {
    frame = 0;
    if (!view) return;
    const stick = nearBottom();
    renderInto(view.body, view.text, false);
    scrollToBottomIf(stick);
  };
  const ensureView = (messageId: string) => {
    if (view) return view;
    view = assistantView(messageId);
    messagesEl.append(view.element);
    return view;
  };
  const adopt = (conversationId: string, title: string) => {
    if (current?.id === conversationId || generation !== openGeneration) return;
    const now = new Date().toISOString();
    const conversation = { id: conversationId, title, created_at: now, updated_at: now, message_count: 0 };
    setCurrent(conversation);
    upsertConversation(conversation, true);
  };
  try {
    const body = {
      message: pending.message,
      ...(pending.conversationId ? { conversation_id: pending.conversationId } : {}),
      ...(pending.choice ? { provider: pending.choice.provider, model: pending.choice.model } : {}),
    };
    const response = await api.chat(body, pending.idempotencyKey, controller.signal);
    if (!response.body) throw new ApiError("network", 0, "The reply did not arrive", "");
    for await (const event of readEvents(response.body)) {
      if (event.event === "start") {
        const start = JSON.parse(event.data) as ChatStart;
        userView.setAttribute("data-message-id", start.user_message_id);
        adopt(start.conversation_id, pending.message.slice(0, 60));
        ensureView(start.message_id);
        streamStatus.textContent = "The assistant is replying…";
      } else if (event.event === "delta") {
        const delta = JSON.parse(event.data) as { text: string };
        if (!view) continue;
        view.text += delta.text;
        if (!frame) frame = requestAnimationFrame(render);
      } else if (event.event === "done") {
        const done = JSON.parse(event.data) as ChatDone;
        adopt(done.conversation_id, pending.message.slice(0, 60));
        const stick = nearBottom();
        const target = ensureView(done.message_id);
        cancelAnimationFrame(frame);
        target.element.setAttribute("data-message-id", done.message_id);
        finishAssistant(target, done.reply, done.ending);
        scrollToBottomIf(stick);
        finished = true;
        streamStatus.textContent = "Reply finished.";
      } else if (event.event === "error") {
        const problem = problemFromEvent(event.data);
        cancelAnimationFrame(frame);
        if (view) finishAssistant(view, view.text, "incomplete");
        finished = true;
        streamStatus.textContent = "The reply failed.";
        showError(problem);
      }
    }
    if (!finished) throw new ApiError("network", 0, "The reply was cut off", "");
  } catch (error) {
    cancelAnimationFrame(frame);
    if (stoppedByUser && (isAbort(error) || (error instanceof ApiError && error.kind === "aborted"))) {
      if (view) finishAssistant(view, view.text, "stopped");
      else userView.append(h("p", { class: "ending" }, "Stopped before the reply began."));
      streamStatus.textContent = "Reply stopped.";
    } else if (error instanceof ApiError && error.status === 401) {
      // Sign-in expired: the app is back at the sign-in screen.
    } else {
      // Nothing is kept of a reply that did not finish: a retry (the same Idempotency-Key) gets
      // either the whole stored turn or runs it once.
      view?.element.remove();
      streamStatus.textContent = "The message was not answered.";
      const problem = error instanceof ApiError ? error : new ApiError("network", 0, "The reply was cut off", "");
      showError(problem, () => {
        if (current?.id !== (pending.conversationId ?? current?.id)) return;
        void runTurn(pending, userView);
      });
    }
  } finally {
    setStreaming(null);
    if (current && generation === openGeneration) refreshCurrentEntry();
    if (document.activeElement === stopButton || document.activeElement === document.body) input.focus();
  }
}

/** After a turn: the listing's entry for the conversation gets its stored title and time. */
function refreshCurrentEntry(): void {
  const id = current?.id;
  if (!id) return;
  api
    .conversations(null, 5)
    .then((page) => {
      const fresh = page.items.find((c) => c.id === id);
      if (!fresh) return;
      upsertConversation(fresh, true);
      if (current?.id === id) setCurrent(fresh);
    })
    .catch(() => undefined);
}

// ---- rename, delete, erase ------------------------------------------------------------------

function confirmAction(title: string, body: Node[], confirmLabel: string): Promise<boolean> {
  byId("confirm-title").textContent = title;
  byId("confirm-body").replaceChildren(...body);
  byId("confirm-ok").textContent = confirmLabel;
  confirmDialog.returnValue = "";
  confirmDialog.showModal();
  byId("confirm-cancel").focus();
  return new Promise((resolve) => {
    confirmDialog.addEventListener("close", () => resolve(confirmDialog.returnValue === "confirm"), { once: true });
  });
}

renameButton.addEventListener("click", () => {
  if (!current) return;
  renameInput.value = current.title;
  renameError.textContent = "";
  renameDialog.showModal();
  renameInput.select();
});
byId("rename-cancel").addEventListener("click", () => {
  renameDialog.close();
  renameButton.focus();
});
byId<HTMLFormElement>("rename-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const conversation = current;
  const title = renameInput.value.trim();
  if (!conversation) return;
  if (!title) {
    renameError.textContent = "The title cannot be empty.";
    return;
  }
  api
    .rename(conversation.id, title)
    .then((renamed) => {
      renameDialog.close();
      upsertConversation(renamed, false);
      if (current?.id === renamed.id) setCurrent(renamed);
      renameButton.focus();
    })
    .catch((error: unknown) => {
      if (error instanceof ApiError && error.status === 404) {
        renameDialog.close();
        removeConversation(conversation.id);
        newChat();
        showError(new ApiError("http", 404, "This conversation no longer exists", ""));
      } else if (error instanceof ApiError && error.status !== 401) {
        renameError.textContent = describe(error);
      }
    });
});

deleteButton.addEventListener("click", () => {
  const conversation = current;
  if (!conversation) return;
  void confirmAction(
    "Delete this conversation?",
    [h("p", {}, `“${conversation.title}” will be deleted with all its messages and ratings. This cannot be undone.`)],
    "Delete conversation",
  ).then(async (yes) => {
    if (!yes) {
      deleteButton.focus();
      return;
    }
    try {
      await api.deleteConversation(conversation.id);
    } catch (error) {
      if (!(error instanceof ApiError && error.status === 404)) {
        showError(error);
        return;
      }
    }
    removeConversation(conversation.id);
    if (current?.id === conversation.id) newChat();
    streamStatus.textContent = "Conversation deleted.";
  });
});

byId("erase-all").addEventListener("click", () => {
  void confirmAction(
    "Erase all your data?",
    [
      h("p", {}, "This permanently deletes, for your account:"),
      h(
        "ul",
        {},
        h("li", {}, "every conversation,"),
        h("li", {}, "every message in them, yours and the assistant's,"),
        h("li", {}, "every rating and comment you gave."),
      ),
      h("p", {}, "It cannot be undone. Your daily usage budget is not reset by erasing."),
    ],
    "Erase everything",
  ).then(async (yes) => {
    if (!yes) {
      byId("erase-all").focus();
      return;
    }
    streaming?.abort();
    try {
      await api.eraseHistory();
    } catch (error) {
      showError(error);
      return;
    }
    resetConversations();
    newChat();
    streamStatus.textContent = "All your data was erased.";
    conversationsStatus.textContent = "No conversations yet.";
  });
});

// ---- start ----------------------------------------------------------------------------------

try {
  if (await session.restore()) await startApp();
  else showSignIn();
} catch (error) {
  showSignIn(error instanceof Error ? error.message : "The sign-in failed; please try again.");
}
