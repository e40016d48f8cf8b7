import { describe, expect, it } from "vitest";
import { readEvents, SseParser } from "../src/sse";

describe("SseParser", () => {
  it("reads events split at any point, with CRLF, LF or CR line ends", () => {
    const stream =
      'event: start\r\ndata: {"a":1}\r\n\r\n: keep-alive\n\nevent: delta\ndata: {"text":"Hel"}\n\revent: delta\rdata: {"text":"lo"}\r\r';
    for (let size = 1; size <= stream.length; size++) {
      const parser = new SseParser();
      const events = [];
      for (let i = 0; i < stream.length; i += size) events.push(...parser.push(stream.slice(i, i + size)));
      expect(events, `chunks of ${size}`).toEqual([
        { event: "start", data: '{"a":1}' },
        { event: "delta", data: '{"text":"Hel"}' },
        { event: "delta", data: '{"text":"lo"}' },
      ]);
    }
  });

  it("joins data lines, keeps spaces after the first, defaults the name", () => {
    const parser = new SseParser();
    expect(parser.push("data:a\ndata:  b\ndata\n\n")).toEqual([{ event: "message", data: "a\n b\n" }]);
  });

  it("drops comments and events without data", () => {
    const parser = new SseParser();
    expect(parser.push(": hi\n\nevent: empty\n\n")).toEqual([]);
  });
});

describe("readEvents", () => {
  it("decodes multi-byte characters split across chunks and drops an unfinished event", async () => {
    const bytes = new TextEncoder().encode('event: delta\ndata: {"text":"ünï"}\n\nevent: delta\ndata: {"text":"cut');
    const body = new ReadableStream<Uint8Array>({
      start(controller) {
        for (const byte of bytes) controller.enqueue(new Uint8Array([byte]));
        controller.close();
      },
    });
    const events = [];
    for await (const event of readEvents(body)) events.push(event);
    expect(events).toEqual([{ event: "delta", data: '{"text":"ünï"}' }]);
  });
});
