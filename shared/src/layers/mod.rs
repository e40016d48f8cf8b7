//! The crate's layering, kept by a test: every top module has a layer, a module imports only
//! from lower layers (or from within itself), and no two files import each other. The functions
//! sit above every layer of this crate and may import any module that has one.
//!
//! The check reads the sources as text: `use` trees and paths that start with `crate::`,
//! `super::`, `self::` or `shared::`, outside comments and literals. A path names the file of its
//! longest prefix that is a module (`crate::store::items::text` is `store/items.rs`); a file's
//! imports of its own descendants (a `mod.rs` re-exporting its children) are not edges of the
//! file graph, so that only siblings, cousins and other modules can form a cycle.

mod scan;

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
};

use scan::{imports, Import};

/// Each top module's layer. A new module needs a line here.
const LAYERS: &[(&str, u8)] = &[
    ("tokens", 0),
    ("backoff", 0),
    ("domain", 1),
    ("config", 1),
    ("telemetry", 1),
    ("aws", 2),
    ("secrets", 3),
    ("store", 3),
    ("llm", 4), // uses secrets
    ("readiness", 4),
    ("http", 5),
    ("startup", 6),
    ("layers", 7), // this check
];

fn layer(module: &str) -> Option<u8> {
    LAYERS
        .iter()
        .find(|(name, _)| *name == module)
        .map(|(_, layer)| *layer)
}

/// A crate to check: its files (shown path, module path within the crate, text).
struct Crate {
    /// Only this crate's modules have layers; the others (functions) are above them all.
    layered: bool,
    files: Vec<(String, Vec<String>, String)>,
}

/// What an import names.
#[derive(PartialEq)]
enum Target {
    /// A module of the same crate.
    Module(Vec<String>),
    /// A top module of `shared`, from another crate.
    Shared(String),
    /// Something within the importing file.
    Itself,
}

/// Every breach of the rules in `krate`, in words that name the file and the import.
fn breaches(krate: &Crate) -> Vec<String> {
    let modules: BTreeSet<&[String]> = krate.files.iter().map(|f| f.1.as_slice()).collect();
    let mut found = Vec::new();
    let mut edges = Vec::new();
    for (shown, module, text) in &krate.files {
        let own = module.first().map(String::as_str);
        if krate.layered && own.is_some_and(|own| layer(own).is_none()) {
            found.push(format!(
                "{shown}: module {} has no layer in LAYERS",
                own.unwrap_or("")
            ));
        }
        for import in imports(text) {
            let named = import.path.join("::");
            match resolve(module, &import, &modules) {
                Target::Itself => {}
                Target::Shared(top) => {
                    if layer(&top).is_none() {
                        found.push(format!(
                            "{shown}:{}: {named}: shared has no module {top} with a layer",
                            import.line
                        ));
                    }
                }
                Target::Module(target) => {
                    let theirs = target.first().map(String::as_str);
                    let mine = own.and_then(layer);
                    if let (true, Some(own), Some(mine), Some(theirs)) =
                        (krate.layered, own, mine, theirs)
                    {
                        let other = layer(theirs);
                        if own != theirs && other.is_none_or(|other| mine <= other) {
                            let other = other.map_or("none".to_owned(), |l| l.to_string());
                            found.push(format!(
                                "{shown}:{}: {own} (layer {mine}) imports {named} from {theirs} \
                                 (layer {other}): a module imports only from lower layers",
                                import.line,
                            ));
                        }
                    }
                    let related = target.starts_with(module) || module.starts_with(&target);
                    if !related {
                        edges.push((shown.as_str(), module.clone(), target, import.line, named));
                    }
                }
            }
        }
    }
    for (shown, from, to, line, named) in &edges {
        let back = edges
            .iter()
            .find(|(other, f, t, ..)| f == to && t == from && *shown < *other);
        if let Some((other, _, _, back_line, back_named)) = back {
            found.push(format!(
                "{shown} and {other} import each other ({shown}:{line}: {named}; \
                 {other}:{back_line}: {back_named}): put what both need in one of them, or in \
                 their parent"
            ));
        }
    }
    found.sort();
    found.dedup();
    found
}

/// The module an import names: the longest prefix of its path that is a module of the crate.
fn resolve(module: &[String], import: &Import, modules: &BTreeSet<&[String]>) -> Target {
    let path = &import.path;
    let (base, rest): (Vec<String>, &[String]) = match path[0].as_str() {
        "shared" => return Target::Shared(path.get(1).cloned().unwrap_or_default()),
        "crate" => (Vec::new(), &path[1..]),
        "self" if import.inline > 0 => return Target::Itself,
        "self" => (module.to_vec(), &path[1..]),
        _ => {
            let supers = path
                .iter()
                .take_while(|segment| *segment == "super")
                .count();
            if supers <= import.inline {
                return Target::Itself;
            }
            let up = supers - import.inline;
            if up > module.len() {
                return Target::Itself;
            }
            (module[..module.len() - up].to_vec(), &path[supers..])
        }
    };
    let mut named = base;
    let mut longest = named.clone();
    for segment in rest.iter().filter(|segment| *segment != "self") {
        named.push(segment.clone());
        if modules.contains(named.as_slice()) {
            longest = named.clone();
        }
    }
    if longest == module {
        return Target::Itself;
    }
    Target::Module(longest)
}

/// The `.rs` files below `dir`, each with its path relative to `dir`.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        for entry in std::fs::read_dir(&next).unwrap_or_else(|err| panic!("{next:?}: {err}")) {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                files.push(path.strip_prefix(dir).expect("below dir").to_path_buf());
            }
        }
    }
    files.sort();
    files
}

/// The crate whose sources are in `src` (shown as `shown/...`); `main.rs` is a crate of its own.
fn read_crates(src: &Path, shown: &str, layered: bool) -> Vec<Crate> {
    let (mut library, mut binary) = (Vec::new(), Vec::new());
    for file in rust_files(src) {
        let text = std::fs::read_to_string(src.join(&file)).expect("a readable source file");
        let mut module: Vec<String> = file
            .with_extension("")
            .iter()
            .map(|part| part.to_string_lossy().into_owned())
            .collect();
        let is_main = module == ["main"];
        if module.last().is_some_and(|last| last == "mod") || module == ["lib"] || is_main {
            module.pop();
        }
        let entry = (format!("{shown}/{}", file.display()), module, text);
        if is_main { &mut binary } else { &mut library }.push(entry);
    }
    [library, binary]
        .into_iter()
        .filter(|files| !files.is_empty())
        .map(|files| Crate { layered, files })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_layers_point_one_way() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut crates = read_crates(&root.join("src"), "shared/src", true);
        let functions = root.join("../functions");
        for function in std::fs::read_dir(&functions).expect("the functions' folder") {
            let name = function.expect("a function").file_name();
            let src = functions.join(&name).join("src");
            if src.is_dir() {
                let shown = format!("functions/{}/src", name.to_string_lossy());
                crates.extend(read_crates(&src, &shown, false));
            }
        }
        let breaches: Vec<String> = crates.iter().flat_map(breaches).collect();
        assert!(
            breaches.is_empty(),
            "the layers are broken:\n{}",
            breaches.join("\n")
        );
    }

    fn fixture(files: &[(&str, &str)]) -> Crate {
        let files = files
            .iter()
            .map(|(module, text)| {
                let module: Vec<String> = module
                    .split('/')
                    .filter(|m| !m.is_empty())
                    .map(String::from)
                    .collect();
                (module.join("/"), module, (*text).to_owned())
            })
            .collect();
        Crate {
            layered: true,
            files,
        }
    }

    #[test]
    fn a_back_import_and_a_cycle_are_named() {
        let krate = fixture(&[
            ("", "pub mod http; pub mod store; pub mod llm;"),
            ("http", "use crate::store::StoreError;"),
            ("store", "mod items; pub use items::Item;"),
            (
                "store/items",
                "// crate::http::Ignored\nuse crate::{domain::X, http::{self, ApiError}};",
            ),
            ("llm", "mod a; mod b;"),
            ("llm/a", "use super::{b::Piece, Provider};"),
            (
                "llm/b",
                "fn f() { super::a::g(); }\nmod tests { use super::*; }",
            ),
            ("widgets", "use crate::store::Item;"),
        ]);
        let breaches = breaches(&krate);
        assert_eq!(
            breaches,
            [
                "llm/a and llm/b import each other (llm/a:1: super::b::Piece; llm/b:1: \
                 super::a::g): put what both need in one of them, or in their parent",
                "store/items:2: store (layer 3) imports crate::http from http (layer 5): a module \
                 imports only from lower layers",
                "store/items:2: store (layer 3) imports crate::http::ApiError from http (layer 5): \
                 a module imports only from lower layers",
                "widgets: module widgets has no layer in LAYERS",
            ]
        );
    }
}
