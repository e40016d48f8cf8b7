// Changing the user's conversations: renaming one (the server's title rule, checked here first),
// deleting one, erasing everything. Each asks first, in a dialog.

import { ApiError, type Api } from "./api";
import type { Banner } from "./banner";
import type { ConversationView } from "./conversation";
import type { Dialogs } from "./dialogs";
import type { History } from "./history";
import { checkTitle } from "./limits";
import { conversationGone, describe } from "./problem";
import type { SignInView } from "./signin";
import type { Sidebar } from "./sidebar";
import { state } from "./state";

export interface ManageViews {
  sidebar: Pick<Sidebar, "setStatus">;
  conversation: Pick<ConversationView, "announce" | "focusRename" | "focusDelete">;
  dialogs: Dialogs;
  banner: Banner;
  signIn: Pick<SignInView, "focusEraseAll">;
}

export function manageController(api: Api, history: History, views: ManageViews) {
  const { sidebar, conversation: view, dialogs, banner, signIn } = views;
  const { upsert, remove, setCurrent, newChat } = history;

  function rename(): void {
    if (!state.current) return;
    dialogs.openRename(state.current.title, {
      cancelled: () => view.focusRename(),
      save(raw) {
        const conversation = state.current;
        if (!conversation) return;
        const checked = checkTitle(raw);
        if (!checked.ok) {
          dialogs.renameProblem(checked.problem);
          return;
        }
        api
          .rename(conversation.id, checked.title)
          .then((renamed) => {
            dialogs.closeRename();
            upsert(renamed, false);
            if (state.current?.id === renamed.id) setCurrent(renamed);
            view.focusRename();
          })
          .catch((error: unknown) => {
            if (error instanceof ApiError && error.status === 404) {
              dialogs.closeRename();
              remove(conversation.id);
              newChat(false);
              banner.show(conversationGone());
            } else if (error instanceof ApiError && error.status !== 401) {
              dialogs.renameProblem(describe(error));
            }
          });
      },
    });
  }

  async function deleteCurrent(): Promise<void> {
    const conversation = state.current;
    if (!conversation) return;
    if (!(await dialogs.confirmDelete(conversation.title))) {
      view.focusDelete();
      return;
    }
    try {
      await api.deleteConversation(conversation.id);
    } catch (error) {
      if (!(error instanceof ApiError && error.status === 404)) {
        banner.show(error);
        return;
      }
    }
    remove(conversation.id);
    if (state.current?.id === conversation.id) newChat(false);
    view.announce("Conversation deleted.");
  }

  async function eraseAll(): Promise<void> {
    if (!(await dialogs.confirmErase())) {
      signIn.focusEraseAll();
      return;
    }
    state.streaming?.abort();
    try {
      await api.eraseHistory();
    } catch (error) {
      banner.show(error);
      return;
    }
    history.resetList();
    newChat(false);
    view.announce("All your data was erased.");
    sidebar.setStatus("No conversations yet.");
  }

  return { rename, deleteCurrent, eraseAll };
}
