// The banner under the conversation: what went wrong, and a Retry when trying again may help
// (disabled, with a countdown, while the server's Retry-After lasts).

import { byId } from "./dom";
import { asProblem, describe } from "./problem";

export interface Banner {
  show(error: unknown, retry?: (() => void) | null): void;
  hide(): void;
}

export function bannerView(dismissed: () => void): Banner {
  const banner = byId("banner");
  const text = byId("banner-text");
  const countdown = byId("banner-countdown");
  const retryButton = byId<HTMLButtonElement>("banner-retry");
  let countdownTimer: number | undefined;
  let retryAction: (() => void) | null = null;

  function show(error: unknown, retry: (() => void) | null = null): void {
    const problem = asProblem(error);
    if (problem.status === 401 || problem.kind === "aborted") return;
    window.clearInterval(countdownTimer);
    banner.hidden = false;
    text.textContent = describe(problem);
    countdown.textContent = "";
    retryAction = retry && problem.retryable ? retry : null;
    retryButton.hidden = retryAction === null;
    retryButton.disabled = false;
    if (retryAction && problem.retryAfterSeconds) {
      let left = problem.retryAfterSeconds;
      retryButton.disabled = true;
      const tick = () => {
        if (left <= 0) {
          window.clearInterval(countdownTimer);
          countdown.textContent = "You can retry now.";
          retryButton.disabled = false;
          return;
        }
        countdown.textContent = `Retry possible in ${left} s.`;
        left -= 1;
      };
      tick();
      countdownTimer = window.setInterval(tick, 1000);
    }
  }

  function hide(): void {
    window.clearInterval(countdownTimer);
    banner.hidden = true;
    retryAction = null;
  }

  retryButton.addEventListener("click", () => {
    const action = retryAction;
    hide();
    action?.();
  });
  byId("banner-dismiss").addEventListener("click", () => {
    hide();
    dismissed();
  });
  return { show, hide };
}
