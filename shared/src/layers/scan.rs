//! Reading a Rust source as text, for the layering check: its comments and literals dropped,
//! its tokens, and every path it names from a root (`crate`, `super`, `self`, `shared`).

/// One path a file names, and the line it is on.
pub(super) struct Import {
    pub(super) line: usize,
    pub(super) path: Vec<String>,
    /// How deep in inline modules (`mod tests { .. }`) of its file it stands.
    pub(super) inline: usize,
}

#[derive(Debug, PartialEq)]
enum Token {
    Word(String),
    /// `::`
    Sep,
    Open,
    Close,
    Comma,
    Star,
    Other,
}

/// Every path of `source` that starts at a root (`crate`, `super`, `self`, `shared`), with `use`
/// trees expanded (`use super::{a, b::c}` is `super::a` and `super::b::c`).
pub(super) fn imports(source: &str) -> Vec<Import> {
    let tokens = tokens(&code_of(source));
    let word = |i: usize| match tokens.get(i) {
        Some((Token::Word(word), _)) => Some(word.as_str()),
        _ => None,
    };
    let is = |i: usize, token: Token| tokens.get(i).is_some_and(|(t, _)| *t == token);
    let mut found = Vec::new();
    let (mut depth, mut inline) = (0usize, Vec::new());
    let mut i = 0;
    while i < tokens.len() {
        let root = word(i).is_some_and(|w| matches!(w, "crate" | "super" | "self" | "shared"));
        if root && is(i + 1, Token::Sep) && !(i > 0 && is(i - 1, Token::Sep)) {
            let line = tokens[i].1;
            let mut paths = Vec::new();
            tree(&tokens, &mut i, Vec::new(), &mut paths);
            found.extend(paths.into_iter().map(|path| Import {
                line,
                path,
                inline: inline.len(),
            }));
            continue;
        }
        match &tokens[i].0 {
            Token::Word(w) if w == "mod" && word(i + 1).is_some() && is(i + 2, Token::Open) => {
                inline.push(depth + 1);
            }
            Token::Open => depth += 1,
            Token::Close => {
                if inline.last() == Some(&depth) {
                    inline.pop();
                }
                depth = depth.saturating_sub(1);
            }
            _ => {}
        }
        i += 1;
    }
    found
}

/// Reads one use tree (or plain path) from `tokens[*i]`, adding each full path to `out`.
fn tree(
    tokens: &[(Token, usize)],
    i: &mut usize,
    mut prefix: Vec<String>,
    out: &mut Vec<Vec<String>>,
) {
    loop {
        match tokens.get(*i).map(|(token, _)| token) {
            Some(Token::Word(word)) => {
                // `use a::{self, b}`: `a` itself.
                if word != "self" || prefix.is_empty() {
                    prefix.push(word.clone());
                }
                *i += 1;
            }
            Some(Token::Open) => {
                *i += 1;
                while let Some((token, _)) = tokens.get(*i) {
                    match token {
                        Token::Close => {
                            *i += 1;
                            break;
                        }
                        Token::Comma => *i += 1,
                        _ => {
                            let before = *i;
                            tree(tokens, i, prefix.clone(), out);
                            *i = (*i).max(before + 1);
                        }
                    }
                }
                return;
            }
            Some(Token::Star) => *i += 1,
            _ => {}
        }
        if tokens
            .get(*i)
            .is_some_and(|(token, _)| *token == Token::Sep)
        {
            *i += 1;
            continue;
        }
        // `a as b` renames; the path is `a`.
        if matches!(tokens.get(*i), Some((Token::Word(word), _)) if word == "as") {
            *i += 2;
        }
        if prefix.len() > 1 {
            out.push(prefix);
        }
        return;
    }
}

fn tokens(code: &str) -> Vec<(Token, usize)> {
    let chars: Vec<char> = code.chars().collect();
    let (mut found, mut line, mut i) = (Vec::new(), 1, 0);
    while i < chars.len() {
        let c = chars[i];
        let token = if c == '\n' {
            line += 1;
            i += 1;
            continue;
        } else if c.is_whitespace() {
            i += 1;
            continue;
        } else if c.is_alphanumeric() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            found.push((Token::Word(chars[start..i].iter().collect()), line));
            continue;
        } else if c == ':' && chars.get(i + 1) == Some(&':') {
            i += 1;
            Token::Sep
        } else {
            match c {
                '{' => Token::Open,
                '}' => Token::Close,
                ',' => Token::Comma,
                '*' => Token::Star,
                _ => Token::Other,
            }
        };
        i += 1;
        found.push((token, line));
    }
    found
}

/// `source` without its comments and the contents of its string and character literals (lines
/// are kept, so that line numbers stay true).
fn code_of(source: &str) -> String {
    let chars: Vec<char> = source.chars().collect();
    let mut code = String::with_capacity(source.len());
    let at = |i: usize| chars.get(i).copied().unwrap_or('\0');
    let word_char = |c: char| c.is_alphanumeric() || c == '_';
    // Skips to the end of a literal or comment, keeping its newlines.
    let skip = |code: &mut String, from: usize, to: usize| {
        code.extend(
            chars[from..to.min(chars.len())]
                .iter()
                .filter(|c| **c == '\n'),
        );
        to
    };
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let before = if i > 0 { at(i - 1) } else { ' ' };
        if c == '/' && at(i + 1) == '/' {
            let end = (i..chars.len())
                .find(|&j| chars[j] == '\n')
                .unwrap_or(chars.len());
            i = skip(&mut code, i, end);
        } else if c == '/' && at(i + 1) == '*' {
            let (mut j, mut depth) = (i, 0);
            while j < chars.len() {
                if at(j) == '/' && at(j + 1) == '*' {
                    depth += 1;
                    j += 2;
                } else if at(j) == '*' && at(j + 1) == '/' {
                    depth -= 1;
                    j += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    j += 1;
                }
            }
            i = skip(&mut code, i, j);
        } else if c == 'r' && (at(i + 1) == '"' || at(i + 1) == '#') && !word_char(before)
            || c == 'r' && before == 'b' && !(i >= 2 && word_char(at(i - 2)))
        {
            let hashes = (i + 1..chars.len())
                .take_while(|&j| chars[j] == '#')
                .count();
            if at(i + 1 + hashes) != '"' {
                code.push(c);
                i += 1;
                continue;
            }
            let close: Vec<char> = std::iter::once('"')
                .chain("#".repeat(hashes).chars())
                .collect();
            let end = (i + 2 + hashes..chars.len())
                .find(|&j| chars[j..].starts_with(&close))
                .map_or(chars.len(), |j| j + close.len());
            code.push_str("\"\"");
            i = skip(&mut code, i, end);
        } else if c == '"' {
            let mut j = i + 1;
            while j < chars.len() && chars[j] != '"' {
                j += if chars[j] == '\\' { 2 } else { 1 };
            }
            code.push_str("\"\"");
            i = skip(&mut code, i, j + 1);
        } else if c == '\'' && at(i + 1) == '\\' {
            let end = (i + 3..chars.len())
                .find(|&j| chars[j] == '\'')
                .unwrap_or(chars.len());
            code.push_str("' '");
            i = end + 1;
        } else if c == '\'' && at(i + 2) == '\'' {
            code.push_str("' '");
            i += 3;
        } else {
            code.push(c);
            i += 1;
        }
    }
    code
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_and_literals_are_not_code() {
        let source = "let s = \"crate::http\"; let r = r#\"super::x\"#; let c = '\"';\n\
                      /* crate::a /* nested */ */ use crate::b::C; // crate::d";
        let paths: Vec<String> = imports(source).iter().map(|i| i.path.join("::")).collect();
        assert_eq!(paths, ["crate::b::C"]);
        assert_eq!(imports(source)[0].line, 2);
    }
}
