//! Holds the code and the docs to [`LAYERS`](crate::LAYERS): no module
//! names one above it, `lib.rs` declares exactly the layers, and
//! `docs/architecture.md` lists them in the same order.

use std::path::{Path, PathBuf};

use crate::LAYERS;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
}

/// The layer a file of `src/` belongs to: its top-level module
/// (`src/image/admin/create.rs` → `image`, `src/pool.rs` → `pool`); None
/// for the crate root (`lib.rs`, `main.rs`, this file).
fn layer_of(relative: &Path) -> Option<String> {
    let first = relative.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    match name {
        "lib" | "main" | "layer_tests" => None,
        _ => Some(name.to_string()),
    }
}

/// The text of a file without its comments (`//` to the end of a line,
/// `/* */`), so doc links and prose do not count as imports. String
/// literals are kept as they are; none spells a `crate::` path.
fn strip_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    let mut in_string = false;
    while let Some(c) = chars.next() {
        if in_string {
            out.push(c);
            match c {
                '\\' => {
                    if let Some(n) = chars.next() {
                        out.push(n);
                    }
                }
                '"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match (c, chars.peek()) {
            ('"', _) => {
                in_string = true;
                out.push(c);
            }
            ('/', Some('/')) => {
                for n in chars.by_ref() {
                    if n == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            ('/', Some('*')) => {
                chars.next();
                let mut prev = ' ';
                for n in chars.by_ref() {
                    if n == '\n' {
                        out.push('\n');
                    }
                    if prev == '*' && n == '/' {
                        break;
                    }
                    prev = n;
                }
            }
            // A char literal holding a quote must not open a string.
            ('\'', Some('"')) => {
                out.push(c);
                out.push('"');
                chars.next();
            }
            _ => out.push(c),
        }
    }
    out
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Every top-level module a file names through `crate::`, with its line:
/// `crate::image::X`, `crate::image`, and each branch of
/// `crate::{image::X, store}`.
fn crate_references(code: &str) -> Vec<(usize, String)> {
    const NEEDLE: &str = "crate::";
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(at) = code[from..].find(NEEDLE) {
        let start = from + at;
        from = start + NEEDLE.len();
        if code[..start].chars().next_back().is_some_and(is_ident) {
            continue; // e.g. `my_crate::`
        }
        let line = code[..start].matches('\n').count() + 1;
        let rest = &code[from..];
        if let Some(group) = rest.strip_prefix('{') {
            // Top-level names of the group: after `{` and after each `,`
            // at depth 0.
            let mut depth = 0;
            let mut expect_name = true;
            let mut name = String::new();
            for c in group.chars() {
                if expect_name && depth == 0 {
                    if is_ident(c) {
                        name.push(c);
                        continue;
                    }
                    if !name.is_empty() {
                        found.push((line, std::mem::take(&mut name)));
                        expect_name = false;
                    } else if c.is_whitespace() {
                        continue;
                    }
                }
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => expect_name = true,
                    _ => {}
                }
            }
        } else {
            let name: String = rest.chars().take_while(|&c| is_ident(c)).collect();
            if !name.is_empty() {
                found.push((line, name));
            }
        }
    }
    found
}

#[test]
fn no_module_names_a_layer_above_it() {
    let src = root().join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    assert!(files.len() > 20, "found only {files:?}");
    let mut violations = Vec::new();
    for path in &files {
        let relative = path.strip_prefix(&src).unwrap();
        let Some(layer) = layer_of(relative) else {
            continue;
        };
        let Some(own) = LAYERS.iter().position(|&l| l == layer) else {
            violations.push(format!(
                "src/{}: module `{layer}` is not in LAYERS (src/lib.rs)",
                relative.display()
            ));
            continue;
        };
        let text = std::fs::read_to_string(path).unwrap();
        let code = strip_comments(&text);
        let lines: Vec<&str> = code.lines().collect();
        for (line, name) in crate_references(&code) {
            let Some(theirs) = LAYERS.iter().position(|&l| l == name) else {
                continue; // an item of the crate root, e.g. LAYERS
            };
            if theirs > own {
                violations.push(format!(
                    "src/{}:{line}: `{}` names `{name}`, a layer above `{layer}`",
                    relative.display(),
                    lines.get(line - 1).map_or("", |l| l.trim()),
                ));
            }
        }
    }
    assert!(
        violations.is_empty(),
        "imports against the layer order {LAYERS:?}:\n{}",
        violations.join("\n")
    );
}

#[test]
fn lib_declares_exactly_the_layers() {
    let lib = std::fs::read_to_string(root().join("src/lib.rs")).unwrap();
    let mut declared: Vec<&str> = lib
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub mod "))
        .map(|l| l.trim_end_matches(';').trim())
        .collect();
    declared.sort_unstable();
    let mut layers = LAYERS.to_vec();
    layers.sort_unstable();
    assert_eq!(
        declared, layers,
        "every public module of src/lib.rs is a layer, in LAYERS"
    );
}

#[test]
fn architecture_doc_lists_the_layers_in_order() {
    let doc = std::fs::read_to_string(root().join("docs/architecture.md")).unwrap();
    // The first table: `| layer | files | owns |`, then one row a layer.
    let rows: Vec<&str> = doc
        .lines()
        .skip_while(|l| !l.starts_with("| layer |"))
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .filter_map(|l| l.split('|').nth(1))
        .map(str::trim)
        .collect();
    assert_eq!(
        rows, LAYERS,
        "docs/architecture.md's layer table, bottom first, as src/lib.rs's LAYERS"
    );
}

#[test]
fn the_scanner_finds_what_it_should() {
    let code = strip_comments(
        "use crate::image::Image; // crate::cli\n\
         /* crate::fs */ let x = crate::pool::Pool::new();\n\
         use crate::{store::NOSNAP, cache::{Cache, ImageCache}, format};\n\
         let s = \"crate::\\\"\"; let q = '\"'; my_crate::fs::x();\n",
    );
    let names: Vec<(usize, String)> = crate_references(&code);
    let want: Vec<(usize, String)> = [
        (1, "image"),
        (2, "pool"),
        (3, "store"),
        (3, "cache"),
        (3, "format"),
    ]
    .into_iter()
    .map(|(l, n)| (l, n.to_string()))
    .collect();
    assert_eq!(names, want);
    assert_eq!(
        layer_of(Path::new("image/admin/create.rs")).as_deref(),
        Some("image")
    );
    assert_eq!(layer_of(Path::new("pool.rs")).as_deref(), Some("pool"));
    assert_eq!(layer_of(Path::new("lib.rs")), None);
}
