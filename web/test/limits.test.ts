import { describe, expect, it } from "vitest";
import { checkTitle, CONVERSATION_ID, derivedTitle, MAX_TITLE_CHARS, trimLikeServer } from "../src/limits";
import cases from "./title-cases.json";

describe("checkTitle: the server's Title::parse", () => {
  it("trims, and refuses what is empty once trimmed (the server's own cases)", () => {
    expect(checkTitle("  Trip plans ")).toEqual({ ok: true, title: "Trip plans" });
    expect(checkTitle("   ")).toEqual({ ok: false, problem: "The title cannot be empty." });
    expect(checkTitle("")).toEqual({ ok: false, problem: "The title cannot be empty." });
    expect(checkTitle("two\nlines").ok).toBe(false);
  });

  it("counts characters, not UTF-16 units, after trimming", () => {
    expect(checkTitle("é".repeat(MAX_TITLE_CHARS)).ok).toBe(true);
    expect(checkTitle("é".repeat(MAX_TITLE_CHARS + 1))).toEqual({
      ok: false,
      problem: "The title is 121 characters long; the limit is 120.",
    });
    // 120 emoji are 240 UTF-16 units: the server takes them.
    expect(checkTitle("😀".repeat(MAX_TITLE_CHARS)).ok).toBe(true);
    expect(checkTitle("😀".repeat(MAX_TITLE_CHARS + 1)).ok).toBe(false);
    expect(checkTitle(`   ${"a".repeat(MAX_TITLE_CHARS)}   `).ok).toBe(true);
  });

  it("refuses control characters inside (Rust's char::is_control)", () => {
    for (const control of ["\t", "\u0000", "\u001b", "\u007f", "\u0085", "\u009f"]) {
      expect(checkTitle(`a${control}b`), JSON.stringify(control)).toEqual({
        ok: false,
        problem: "The title must be one line without control characters.",
      });
    }
    // Format characters and other spaces are not controls.
    expect(checkTitle("a\u200db\u00a0c").ok).toBe(true);
  });

  it("checks the length before control characters, as the server does", () => {
    expect(checkTitle(`\u0001${"a".repeat(MAX_TITLE_CHARS)}`)).toEqual({
      ok: false,
      problem: "The title is 121 characters long; the limit is 120.",
    });
  });

  it("trims what Rust trims: U+0085 yes, U+FEFF no", () => {
    expect(checkTitle("\u0085Title\u2028")).toEqual({ ok: true, title: "Title" });
    expect(checkTitle("\uFEFFTitle")).toEqual({ ok: true, title: "\uFEFFTitle" });
    expect(trimLikeServer("\u3000 x \u00a0")).toBe("x");
  });
});

describe("derivedTitle on the cases the server's test reads too", () => {
  it("leaves Markdown out as the server does", () => {
    for (const [text, expected] of cases as [string, string][]) expect(derivedTitle(text), text).toBe(expected);
  });
});

describe("derivedTitle: the server's MessageText::title", () => {
  it("takes the first words, at most 60 characters (the server's own cases)", () => {
    expect(derivedTitle("How do I bake bread?")).toBe("How do I bake bread?");
    const long = derivedTitle("word ".repeat(40));
    expect(long.length).toBeLessThanOrEqual(60);
    expect(long.startsWith("word word")).toBe(true);
    expect(derivedTitle("x".repeat(100))).toHaveLength(60);
  });

  it("joins words with one space and never splits a character", () => {
    expect(derivedTitle("  several\n\nlines\tand   spaces ")).toBe("several lines and spaces");
    expect([...derivedTitle("😀".repeat(70))]).toHaveLength(60);
    expect(derivedTitle(`${"a".repeat(55)} bcdef`)).toBe("a".repeat(55));
    expect(derivedTitle(`${"a".repeat(54)} bcdef`)).toBe(`${"a".repeat(54)} bcdef`);
  });
});

describe("CONVERSATION_ID: the server's ConversationId::PATTERN", () => {
  it("takes canonical ULIDs only", () => {
    expect(CONVERSATION_ID.test("01J9ZQ3V4X5Y6Z7A8B9C0D1E2F")).toBe(true);
    expect(CONVERSATION_ID.test("7ZZZZZZZZZZZZZZZZZZZZZZZZZ")).toBe(true);
    for (const bad of ["80000000000000000000000000", "01j9zq3v4x5y6z7a8b9c0d1e2f", "01J9ZQ3V4X5Y6Z7A8B9C0D1E2", "01J9ZQ3V4X5Y6Z7A8B9C0D1E2FF", "01I9ZQ3V4X5Y6Z7A8B9C0D1E2F", "01U9ZQ3V4X5Y6Z7A8B9C0D1E2F", ""]) {
      expect(CONVERSATION_ID.test(bad), bad).toBe(false);
    }
  });
});
