import { describe, expect, it } from "vitest";
import { settledEnd } from "../src/blocks";

describe("settledEnd", () => {
  it("settles the blocks before the last blank line a new block follows", () => {
    const text = "First paragraph.\n\nSecond one\n\nThird, still grow";
    expect(text.slice(0, settledEnd(text, 0))).toBe("First paragraph.\n\nSecond one\n\n");
    // A blank line that nothing follows yet settles nothing.
    expect(settledEnd("First paragraph.\n\n", 0)).toBe(0);
  });

  it("settles nothing inside an open code fence, and all of a closed one", () => {
    const open = "Intro\n\n```rust\nfn main() {\n\n}\n";
    expect(open.slice(0, settledEnd(open, 0))).toBe("Intro\n\n");
    const closed = open + "```\n\nAfter";
    expect(closed.slice(0, settledEnd(closed, 0))).toBe(open + "```\n\n");
  });

  it("keeps an indented continuation with its block", () => {
    const list = "- item\n\n  more of the item\n";
    expect(settledEnd(list, 0)).toBe(0);
    expect(settledEnd("- item\n\n ", 0)).toBe(0);
  });

  it("searches on from a previous end, never going back", () => {
    const text = "A\n\nB\n\nC";
    expect(settledEnd("A\n\nB", 0)).toBe(3);
    expect(settledEnd(text, 3)).toBe(6);
    expect(settledEnd(text, 6)).toBe(6);
  });
});
