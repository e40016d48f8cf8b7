// The sign-in screen, and the signed-in user's controls in the top bar (who, Sign out, Erase all
// data). Switches between the sign-in screen and the app's shell.

import { isValidDevUser } from "./auth";
import { byId } from "./dom";

export interface SignInHandlers {
  /** A valid local-development user name was entered. */
  devSignIn(name: string): void;
  cognitoSignIn(): void;
  signOut(): void;
  eraseAll(): void;
}

export interface SignInView {
  /** The sign-in screen, with a message (why it is shown) or none. */
  show(message?: string): void;
  /** The app's shell, for the named user. */
  showShell(name: string): void;
  isSignedIn(): boolean;
  focusEraseAll(): void;
}

/** The sign-in screen when the site cannot sign anyone in: the reason, and no form. */
export function showUnconfigured(reason: string): void {
  byId("shell").hidden = true;
  byId("dev-signin").hidden = true;
  byId("cognito-signin").hidden = true;
  byId("signin-message").textContent = reason;
  byId("signin").hidden = false;
}

export function signInView(mode: "dev" | "cognito", handlers: SignInHandlers): SignInView {
  const screen = byId("signin");
  const message = byId("signin-message");
  const devForm = byId<HTMLFormElement>("dev-signin");
  const devUser = byId<HTMLInputElement>("dev-user");
  const cognitoButton = byId("cognito-signin-button");
  const shell = byId("shell");
  const eraseAll = byId("erase-all");

  devForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const name = devUser.value.trim();
    if (!isValidDevUser(name)) {
      message.textContent = "Use letters, digits, dots, dashes, underscores or @ (at most 64).";
      return;
    }
    handlers.devSignIn(name);
  });
  cognitoButton.addEventListener("click", () => handlers.cognitoSignIn());
  byId("sign-out").addEventListener("click", () => handlers.signOut());
  eraseAll.addEventListener("click", () => handlers.eraseAll());

  return {
    show(text = "") {
      shell.hidden = true;
      screen.hidden = false;
      message.textContent = text;
      devForm.hidden = mode !== "dev";
      byId("cognito-signin").hidden = mode !== "cognito";
      (mode === "dev" ? devUser : cognitoButton).focus();
    },
    showShell(name) {
      screen.hidden = true;
      shell.hidden = false;
      byId("who").textContent = name;
    },
    isSignedIn: () => !shell.hidden,
    focusEraseAll: () => eraseAll.focus(),
  };
}
