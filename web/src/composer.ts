// The message box: Enter sends, Shift+Enter starts a new line, it grows with its text; the model
// picker; Send, or Stop while a reply streams.

import type { ModelChoice, Models, Usage } from "./api";
import { byId, h } from "./dom";
import { MAX_MESSAGE_CHARS, messageLength } from "./limits";
import { state } from "./state";

export interface ComposerHandlers {
  /** A message to send (trimmed, not empty); the box is already cleared. */
  send(message: string): void;
  stop(): void;
}

export interface Composer {
  /** Fills the model picker, or hides it (null, or no providers: the server's default applies). */
  showModels(models: Models | null): void;
  hideModels(): void;
  chosenModel(): ModelChoice | null;
  setBusy(busy: boolean): void;
  focus(): void;
  /** Takes the focus back if the Stop button had it, or nothing had. */
  regainFocus(): void;
  /** Puts a message that was not sent back in the box (unless something else was written since). */
  restore(message: string): void;
  /** What the box holds now, and replacing it (a conversation's draft). */
  draft(): string;
  setDraft(text: string): void;
  /** Sending waits until `until` (the day's or the minute's budget renews); `reason` says why. */
  blockUntil(until: Date, reason: string): void;
  /** What is left of today's messages, quietly, and prominently near the end. */
  showUsage(usage: Usage, now?: Date): void;
}

/** Where the chosen model is kept for the tab (sessionStorage). */
const MODEL_KEY = "chat.model";

function remembered(): string | null {
  try {
    return sessionStorage.getItem(MODEL_KEY);
  } catch {
    return null;
  }
}

export function composerView(handlers: ComposerHandlers): Composer {
  const form = byId<HTMLFormElement>("composer");
  const input = byId<HTMLTextAreaElement>("composer-input");
  const modelField = byId("model-field");
  const modelSelect = byId<HTMLSelectElement>("model");
  const sendButton = byId<HTMLButtonElement>("send");
  const stopButton = byId<HTMLButtonElement>("stop");
  const count = byId("composer-count");
  const hint = byId("composer-hint");
  // On a touch screen Enter is a new line, as its keyboard says, and Send sends.
  const touch = window.matchMedia("(pointer: coarse)").matches;
  if (touch) hint.textContent = "Enter starts a new line; Send sends.";
  const usageLine = byId("composer-usage");
  let blockedUntil = 0;
  let blockTimer: number | undefined;
  // Nothing is cut: a paste over the limit stays whole, the counter says by how much, Send waits.
  const numbers = new Intl.NumberFormat();

  /** Whether the message fits; shows the count from 90% of the limit on. */
  function fits(): boolean {
    const length = messageLength(input.value);
    const over = length - MAX_MESSAGE_CHARS;
    count.hidden = length < MAX_MESSAGE_CHARS * 0.9;
    count.classList.toggle("over", over > 0);
    count.textContent =
      `${numbers.format(length)} of ${numbers.format(MAX_MESSAGE_CHARS)} characters` +
      (over > 0 ? `: shorten it by ${numbers.format(over)} to send` : "");
    return over <= 0;
  }

  function autoGrow(): void {
    input.style.height = "auto";
    input.style.height = `${Math.min(input.scrollHeight, 240)}px`;
  }

  input.addEventListener("input", () => {
    autoGrow();
    fits();
  });
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing && !touch) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const message = input.value.trim();
    if (!message || state.streaming || Date.now() < blockedUntil) return;
    if (!fits()) {
      input.focus();
      return;
    }
    input.value = "";
    autoGrow();
    fits();
    handlers.send(message);
  });
  stopButton.addEventListener("click", () => handlers.stop());
  // The model chosen stays chosen after a reload (this tab only).
  modelSelect.addEventListener("change", () => {
    try {
      sessionStorage.setItem(MODEL_KEY, modelSelect.value);
    } catch {
      // Storage refused: the choice lasts until the page is left.
    }
  });

  return {
    showModels(models) {
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
      const chosen = remembered();
      if (chosen && Array.from(modelSelect.options).some((option) => option.value === chosen)) modelSelect.value = chosen;
      modelField.hidden = false;
    },
    hideModels() {
      modelField.hidden = true;
    },
    chosenModel() {
      if (modelField.hidden || !modelSelect.value) return null;
      return JSON.parse(modelSelect.value) as ModelChoice;
    },
    setBusy(busy) {
      stopButton.hidden = !busy;
      sendButton.hidden = busy;
    },
    focus: () => input.focus(),
    regainFocus() {
      if (document.activeElement === stopButton || document.activeElement === document.body) input.focus();
    },
    restore(message) {
      if (input.value.trim()) return;
      input.value = message;
      autoGrow();
      fits();
    },
    draft: () => input.value,
    setDraft(text) {
      input.value = text;
      autoGrow();
      fits();
    },
    blockUntil(until, reason) {
      window.clearTimeout(blockTimer);
      blockedUntil = until.getTime();
      sendButton.disabled = true;
      usageLine.hidden = false;
      usageLine.textContent = reason;
      usageLine.classList.add("low");
      blockTimer = window.setTimeout(() => {
        blockedUntil = 0;
        sendButton.disabled = false;
        usageLine.hidden = true;
        usageLine.classList.remove("low");
      }, Math.max(0, Math.min(until.getTime() - Date.now(), 2 ** 31 - 1)));
    },
    showUsage(usage, now = new Date()) {
      if (Date.now() < blockedUntil) return;
      const { limit, remaining } = usage.turns;
      if (limit === null || remaining === null) {
        usageLine.hidden = true;
        return;
      }
      usageLine.hidden = false;
      if (remaining <= 0) {
        const at = new Date(now.getTime() + usage.resets_in_seconds * 1000);
        this.blockUntil(at, `You have used today's ${limit} messages; more at ${at.toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit" })} your time.`);
        return;
      }
      usageLine.textContent = `${numbers.format(remaining)} of ${numbers.format(limit)} messages left today`;
      usageLine.classList.toggle("low", remaining <= Math.max(3, limit * 0.1));
    },
  };
}
