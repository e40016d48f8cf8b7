// Wiring only: the settings, the session and the API client, then the views (which alone touch
// the page) and the controllers (which talk to the API, the views and the shared state).

import "./styles.css";
import { Api } from "./api";
import { Session } from "./auth";
import { bannerView } from "./banner";
import { chatController } from "./chat";
import { composerView } from "./composer";
import { loadConfig, type AppConfig } from "./config";
import { conversationView } from "./conversation";
import { dialogsView } from "./dialogs";
import { historyController } from "./history";
import { manageController } from "./manage";
import { messagesView } from "./messages";
import { sidebarView } from "./sidebar";
import { showUnconfigured, signInView } from "./signin";
import { state } from "./state";

async function start(): Promise<void> {
  let config: AppConfig;
  try {
    config = await loadConfig();
  } catch (error) {
    // Fail closed: the sign-in screen with the reason and no way in.
    showUnconfigured(error instanceof Error ? error.message : String(error));
    return;
  }
  const session = new Session(config);
  const api = new Api({
    baseUrl: config.apiBaseUrl,
    identity: () => session.identityHeaders(),
    onUnauthorized: () => signedOut("Your sign-in has expired. Please sign in again."),
  });

  // The views' handlers call the controllers, made below, only later (on events).
  const banner = bannerView(() => composer.focus());
  const signIn = signInView(session.mode, {
    devSignIn(name) {
      session.signInDev(name);
      void startApp();
    },
    cognitoSignIn: () => void session.startCognitoSignIn(),
    signOut() {
      state.streaming?.abort();
      session.signOut();
      if (session.mode === "dev") signIn.show("You are signed out.");
    },
    eraseAll: () => void manage.eraseAll(),
  });
  const sidebar = sidebarView({
    newChat: () => history.newChat(),
    open: (id) => void history.open(id, true),
    nearEnd: () => void history.loadMoreConversations(),
  });
  const conversation = conversationView({
    rename: () => manage.rename(),
    delete: () => void manage.deleteCurrent(),
    nearTop: () => void history.loadOlder(),
  });
  const messages = messagesView((feedback) => api.rate(feedback), {
    edit: (element, parentId, text) => chat.edit(element, parentId, text),
    regenerate: (element, replyId) => chat.regenerate(element, replyId),
    switchTo: (messageId) => void history.switchTo(messageId),
  });
  const composer = composerView({
    send: (message) => chat.send(message),
    stop: () => chat.stop(),
  });
  const dialogs = dialogsView();

  const history = historyController(api, {
    sidebar,
    conversation,
    messages,
    banner,
    composer,
    signIn,
    shown: () => chat.showUnsent(),
  });
  window.addEventListener("hashchange", () => history.followAddress());
  const manage = manageController(api, history, { sidebar, conversation, dialogs, banner, signIn });
  const chat = chatController(api, history, { composer, conversation, messages, sidebar, banner });

  function signedOut(message: string): void {
    state.streaming?.abort();
    session.forget();
    banner.hide();
    signIn.show(message);
  }

  async function startApp(): Promise<void> {
    signIn.showShell(session.displayName());
    history.start();
    void chat.loadModels();
    void chat.showUsage();
  }

  try {
    if (await session.restore()) await startApp();
    else signIn.show();
  } catch (error) {
    signIn.show(error instanceof Error ? error.message : "The sign-in failed; please try again.");
  }
}

void start();
