// Markdown to safe DOM. Raw HTML in the text is shown as text (never parsed), and the HTML that
// Markdown produces goes through DOMPurify before it reaches the page. The syntax highlighter is
// a separate chunk, loaded the first time a finished reply has a code block.

import DOMPurify from "dompurify";
import { Marked } from "marked";

export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (ch) => `&#${ch.charCodeAt(0)};`);
}

const marked = new Marked({
  gfm: true,
  // A single line break is a line break, as the model wrote it and as chat clients show it.
  breaks: true,
  async: false,
  renderer: {
    // Block and inline HTML alike: shown as the characters that were written.
    html({ text }) {
      return escapeHtml(text);
    },
    // A task list's box, as a mark rather than a form control (the page has no forms in replies).
    checkbox({ checked }) {
      return checked
        ? '<span class="task done" role="img" aria-label="done">☑</span> '
        : '<span class="task" role="img" aria-label="not done">☐</span> ';
    },
  },
});

const purifier = DOMPurify(window);
purifier.addHook("afterSanitizeAttributes", (node) => {
  if (node instanceof HTMLAnchorElement && node.hasAttribute("href")) {
    node.setAttribute("target", "_blank");
    node.setAttribute("rel", "noopener noreferrer nofollow");
  }
});

const SANITIZE = {
  USE_PROFILES: { html: true },
  FORBID_TAGS: ["style", "img", "video", "audio", "picture", "source", "form", "input", "button", "textarea", "select"],
  FORBID_ATTR: ["style", "srcset"],
  ALLOW_DATA_ATTR: false,
};

export function sanitize(html: string): DocumentFragment {
  return purifier.sanitize(html, { ...SANITIZE, RETURN_DOM_FRAGMENT: true });
}

export function renderMarkdown(text: string): DocumentFragment {
  return sanitize(marked.parse(text) as string);
}

/** Puts a finished reply's rendered text in `target`: its code blocks get highlighting and a copy button. */
export function renderInto(target: HTMLElement, text: string): void {
  target.replaceChildren(renderMarkdown(text));
  // Wide code and tables scroll sideways: keyboard users must be able to focus them to scroll.
  for (const wide of target.querySelectorAll<HTMLElement>("pre, table")) wide.tabIndex = 0;
  const blocks = Array.from(target.querySelectorAll<HTMLElement>("pre > code"));
  if (blocks.length === 0) return;
  for (const code of blocks) addCopyButton(code);
  void import("./highlight").then(({ highlight }) => {
    for (const code of blocks) {
      if (!code.isConnected) continue;
      const html = highlight(code.textContent ?? "", languageOf(code));
      if (html !== null) code.replaceChildren(sanitize(html));
      code.classList.add("hljs");
    }
  });
}

function languageOf(code: HTMLElement): string | null {
  for (const name of code.classList) {
    if (name.startsWith("language-")) return name.slice("language-".length);
  }
  return null;
}

function addCopyButton(code: HTMLElement): void {
  const pre = code.parentElement;
  if (!pre || pre.parentElement?.classList.contains("code-block")) return;
  const wrapper = document.createElement("div");
  wrapper.className = "code-block";
  const button = document.createElement("button");
  button.type = "button";
  button.className = "copy-code";
  button.textContent = "Copy code";
  const source = code.textContent ?? "";
  button.addEventListener("click", () => {
    void navigator.clipboard.writeText(source).then(
      () => flash(button, "Copied", "Copy code"),
      () => flash(button, "Copy failed", "Copy code"),
    );
  });
  pre.replaceWith(wrapper);
  wrapper.append(button, pre);
}

export function flash(button: HTMLElement, text: string, back: string): void {
  button.textContent = text;
  window.setTimeout(() => {
    button.textContent = back;
  }, 1500);
}
