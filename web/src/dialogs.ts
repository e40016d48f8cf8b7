// The dialogs: confirming a deletion or the erasure of everything, and renaming a conversation.

import { byId, h } from "./dom";

export interface RenameHandlers {
  /** Save was pressed with this text (not yet checked). */
  save(raw: string): void;
  cancelled(): void;
}

export interface Dialogs {
  confirmDelete(title: string): Promise<boolean>;
  confirmErase(): Promise<boolean>;
  openRename(title: string, handlers: RenameHandlers): void;
  renameProblem(text: string): void;
  closeRename(): void;
}

export function dialogsView(): Dialogs {
  const confirmDialog = byId<HTMLDialogElement>("confirm-dialog");
  const renameDialog = byId<HTMLDialogElement>("rename-dialog");
  const renameInput = byId<HTMLInputElement>("rename-input");
  const renameError = byId("rename-error");
  let rename: RenameHandlers | null = null;

  function confirm(title: string, body: Node[], confirmLabel: string): Promise<boolean> {
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

  byId("rename-cancel").addEventListener("click", () => {
    renameDialog.close();
    rename?.cancelled();
  });
  byId<HTMLFormElement>("rename-form").addEventListener("submit", (event) => {
    event.preventDefault();
    rename?.save(renameInput.value);
  });

  return {
    confirmDelete: (title) =>
      confirm(
        "Delete this conversation?",
        [h("p", {}, `“${title}” will be deleted with all its messages and ratings. This cannot be undone.`)],
        "Delete conversation",
      ),
    confirmErase: () =>
      confirm(
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
      ),
    openRename(title, handlers) {
      rename = handlers;
      renameInput.value = title;
      renameError.textContent = "";
      renameDialog.showModal();
      renameInput.select();
    },
    renameProblem(text) {
      renameError.textContent = text;
    },
    closeRename() {
      renameDialog.close();
    },
  };
}
