// The limits the client enforces, each the server's own rule (and where the server defines it), so
// that the page refuses exactly what the server would refuse and nothing it would accept.
// The server counts characters (Unicode scalar values, Rust's `chars()`), not UTF-16 code units.

/** `MAX_MESSAGE_CHARS` (default 8,000): `shared/src/config/mod.rs`, applied by `MessageText::parse`
 *  in `shared/src/domain.rs`. A deployment may set another value; this is the default's. */
export const MAX_MESSAGE_CHARS = 8_000;

/** `MAX_COMMENT_CHARS` (default 2,000): `shared/src/config/mod.rs`, applied by `Comment::parse`. */
export const MAX_COMMENT_CHARS = 2_000;

/** `Title::MAX_CHARS` in `shared/src/domain.rs`. */
export const MAX_TITLE_CHARS = 120;

/** The longest title the server derives from a first message: `MessageText::title()`. */
const DERIVED_TITLE_CHARS = 60;

/** `ConversationId::PATTERN` in `shared/src/domain.rs`: a ULID in canonical upper-case form. */
export const CONVERSATION_ID = /^[0-7][0-9A-HJKMNP-TV-Z]{25}$/;

// Rust's `char::is_whitespace` (Unicode White_Space), which `str::trim` and `split_whitespace`
// use. JavaScript's `trim()` differs: it also strips U+FEFF and keeps U+0085.
const SPACE = "\\t\\n\\v\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000";
const EDGE_SPACE = new RegExp(`^[${SPACE}]+|[${SPACE}]+$`, "g");
const SPACES = new RegExp(`[${SPACE}]+`);
// Rust's `char::is_control`: the general category Cc.
const CONTROL = /\p{Cc}/u;

/** `str::trim` as the server does it. */
export function trimLikeServer(text: string): string {
  return text.replace(EDGE_SPACE, "");
}

function chars(text: string): number {
  return [...text].length;
}

/** A message's length as the server counts it: characters, after trimming. */
export function messageLength(text: string): number {
  return chars(trimLikeServer(text));
}

export type TitleCheck = { ok: true; title: string } | { ok: false; problem: string };

/**
 * A title as a user sets it (`PATCH /conversations/{id}`): `Title::parse` in
 * `shared/src/domain.rs`, which `functions/history/src/lib.rs` applies before
 * `shared/src/store/titles.rs` stores it. Trimmed, not empty, at most 120 characters, no control
 * characters; the server checks in that order and so does this.
 */
export function checkTitle(raw: string): TitleCheck {
  const title = trimLikeServer(raw);
  if (title === "") return { ok: false, problem: "The title cannot be empty." };
  const length = chars(title);
  if (length > MAX_TITLE_CHARS) {
    return { ok: false, problem: `The title is ${length} characters long; the limit is ${MAX_TITLE_CHARS}.` };
  }
  if (CONTROL.test(title)) return { ok: false, problem: "The title must be one line without control characters." };
  return { ok: true, title };
}

/** A word without the Markdown markers around it, and a link's or image's text without its address. */
function plainWord(word: string): string {
  let plain = word.replace(/^[#>*_`~![]+/, "");
  const link = plain.indexOf("](");
  if (link >= 0) plain = plain.slice(0, link);
  return plain.replace(/[*_`~\]]+$/, "");
}

/** A list item's marker or a task box, which a title leaves out at its start. */
function startsAList(word: string): boolean {
  return ["-", "+", "*", "[x]", "[X]"].includes(word) || /^[0-9]+[.)]$/.test(word);
}

/**
 * The title the server gives a new conversation (`MessageText::title()` in
 * `shared/src/domain.rs`): the first words of its first message, at most 60 characters, without
 * Markdown's markers; a first word longer than that is cut. Shown until the stored title arrives.
 * Both are tested on `web/test/title-cases.json`.
 */
export function derivedTitle(message: string): string {
  const text = trimLikeServer(message);
  let title = "";
  for (const raw of text.split(SPACES)) {
    const word = plainWord(raw);
    if (word === "" || (title === "" && startsAList(raw))) continue;
    if (chars(title) + chars(word) + 1 > DERIVED_TITLE_CHARS) break;
    title = title ? `${title} ${word}` : word;
  }
  return title || [...text].slice(0, DERIVED_TITLE_CHARS).join("");
}
