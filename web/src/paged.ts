// A list read page by page with the API's cursors (the conversation list, a conversation's older
// messages). One page at a time; the list knows when it is complete; and when it starts over
// (another conversation opens, the data is erased) a page still on its way is dropped.

import type { Page } from "./api";

export class PagedList<T> {
  private cursor: string | null = null;
  private loading = false;
  private complete = false;
  private loaded = false;
  private generation = 0;

  /** Starts over: the next load asks for the first page; answers on their way are dropped. */
  reset(): void {
    this.generation += 1;
    this.cursor = null;
    this.loading = false;
    this.complete = false;
    this.loaded = false;
  }

  /** Which listing this is: it changes at every reset. */
  get listing(): number {
    return this.generation;
  }

  /** A page may be asked for: none is on its way and the last one had a next cursor. */
  get canLoad(): boolean {
    return !this.loading && !this.complete;
  }

  /** At least one page arrived since the last reset. */
  get hasPage(): boolean {
    return this.loaded;
  }

  /** Pages remain after the ones that arrived. */
  get hasMore(): boolean {
    return !this.complete;
  }

  /**
   * Asks for the next page (does nothing unless `canLoad`). `take` gets its items, or `fail` the
   * error, but only if the list has not started over meanwhile. A failure keeps the cursor, so
   * the next load asks for the same page again.
   */
  async load(
    fetchPage: (cursor: string | null) => Promise<Page<T>>,
    take: (items: T[]) => void,
    fail: (error: unknown) => void,
  ): Promise<void> {
    if (!this.canLoad) return;
    this.loading = true;
    const generation = this.generation;
    let page: Page<T>;
    try {
      page = await fetchPage(this.cursor);
    } catch (error) {
      if (generation !== this.generation) return;
      this.loading = false;
      fail(error);
      return;
    }
    if (generation !== this.generation) return;
    this.cursor = page.nextCursor;
    this.complete = page.nextCursor === null;
    this.loaded = true;
    this.loading = false;
    take(page.items);
  }
}
