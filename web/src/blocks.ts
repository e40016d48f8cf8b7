// Where a reply that is still streaming can be split, so that each frame renders only its tail:
// the Markdown before the split renders the same whatever follows (the finished reply is rendered
// whole once more, so the rare construct that spans the split still ends right).

const FENCE = /^ {0,3}(`{3,}|~{3,})/;

/** The end of the text's settled part, searched from `from` (a previous end, or 0): just after
 *  the last blank line outside a code fence that a line starting a new block follows (not
 *  indented: an indented line may continue a list or be code; the line may still be growing).
 *  `from` when there is none. */
export function settledEnd(text: string, from: number): number {
  let end = from;
  let fence: string | null = null;
  let blank = false;
  let start = from;
  while (start < text.length) {
    const newline = text.indexOf("\n", start);
    if (newline === -1) {
      // The last line may still grow, but its first character already says it starts a block.
      if (fence === null && blank && /^\S/.test(text.slice(start))) end = start;
      break;
    }
    const line = text.slice(start, newline);
    const marker = FENCE.exec(line)?.[1];
    if (fence !== null) {
      if (marker && marker[0] === fence[0] && marker.length >= fence.length && line.trim() === marker) fence = null;
    } else if (line.trim() === "") {
      blank = true;
    } else {
      if (blank && !/^\s/.test(line)) end = start;
      blank = false;
      if (marker) fence = marker;
    }
    start = newline + 1;
  }
  return end;
}
