import { describe, expect, it } from "vitest";
import type { Page } from "../src/api";
import { PagedList } from "../src/paged";

/** A fetch whose answers the test gives, one per call, in order. */
function server() {
  const asked: (string | null)[] = [];
  const answers: { resolve: (page: Page<number>) => void; reject: (error: unknown) => void }[] = [];
  const fetchPage = (cursor: string | null) => {
    asked.push(cursor);
    return new Promise<Page<number>>((resolve, reject) => answers.push({ resolve, reject }));
  };
  return { asked, answers, fetchPage };
}

describe("PagedList", () => {
  it("walks the cursors page by page until a page has none", async () => {
    const list = new PagedList<number>();
    const pages: Record<string, Page<number>> = {
      first: { items: [1, 2], nextCursor: "c2" },
      c2: { items: [3], nextCursor: null },
    };
    const asked: (string | null)[] = [];
    const taken: number[][] = [];
    const fetchPage = async (cursor: string | null) => {
      asked.push(cursor);
      return pages[cursor ?? "first"];
    };
    expect(list.hasPage).toBe(false);
    await list.load(fetchPage, (items) => taken.push(items), () => undefined);
    expect(list.hasPage && list.hasMore && list.canLoad).toBe(true);
    await list.load(fetchPage, (items) => taken.push(items), () => undefined);
    expect(list.hasMore).toBe(false);
    expect(list.canLoad).toBe(false);
    await list.load(fetchPage, (items) => taken.push(items), () => undefined);
    expect(asked).toEqual([null, "c2"]);
    expect(taken).toEqual([[1, 2], [3]]);
  });

  it("asks for one page at a time", async () => {
    const list = new PagedList<number>();
    const { asked, answers, fetchPage } = server();
    const taken: number[][] = [];
    const first = list.load(fetchPage, (items) => taken.push(items), () => undefined);
    expect(list.canLoad).toBe(false);
    await list.load(fetchPage, (items) => taken.push(items), () => undefined);
    expect(asked).toEqual([null]);
    answers[0].resolve({ items: [1], nextCursor: "c2" });
    await first;
    expect(taken).toEqual([[1]]);
    expect(list.canLoad).toBe(true);
  });

  it("drops a page or a failure that arrives after the list started over", async () => {
    const list = new PagedList<number>();
    const { asked, answers, fetchPage } = server();
    const taken: number[][] = [];
    const failed: unknown[] = [];
    const take = (items: number[]) => taken.push(items);
    const fail = (error: unknown) => failed.push(error);

    const stalePage = list.load(fetchPage, take, fail);
    const before = list.listing;
    list.reset();
    expect(list.listing).not.toBe(before);
    // The new listing does not wait for the old answer.
    expect(list.canLoad).toBe(true);
    const staleFailure = list.load(fetchPage, take, fail);
    list.reset();
    answers[0].resolve({ items: [99], nextCursor: "old" });
    answers[1].reject(new Error("late"));
    await Promise.all([stalePage, staleFailure]);
    expect(asked).toEqual([null, null]);
    expect(taken).toEqual([]);
    expect(failed).toEqual([]);
    expect(list.canLoad).toBe(true);
    expect(list.hasPage).toBe(false);

    const current = list.load(fetchPage, take, fail);
    answers[2].resolve({ items: [1], nextCursor: null });
    await current;
    expect(asked).toEqual([null, null, null]);
    expect(taken).toEqual([[1]]);
  });

  it("reports a failure and asks for the same page again next time", async () => {
    const list = new PagedList<number>();
    const { asked, answers, fetchPage } = server();
    const failed: unknown[] = [];
    const taken: number[][] = [];
    const first = list.load(fetchPage, (items) => taken.push(items), (error) => failed.push(error));
    answers[0].resolve({ items: [1], nextCursor: "c2" });
    await first;
    const second = list.load(fetchPage, (items) => taken.push(items), (error) => failed.push(error));
    answers[1].reject(new Error("offline"));
    await second;
    expect(failed).toEqual([new Error("offline")]);
    expect(list.canLoad).toBe(true);
    const third = list.load(fetchPage, (items) => taken.push(items), (error) => failed.push(error));
    answers[2].resolve({ items: [2], nextCursor: null });
    await third;
    expect(asked).toEqual([null, "c2", "c2"]);
    expect(taken).toEqual([[1], [2]]);
  });
});
