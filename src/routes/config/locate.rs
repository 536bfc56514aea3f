//! Where things stand in a route file: each route's block of lines and
//! key position (serde_yaml keeps no spans after deserializing), the
//! stand-ins that let one pass report every broken route, and serde_yaml's
//! messages with their positions made exact.

use std::collections::HashMap;

use serde::Deserialize;

/// The name stand-ins for broken routes take: not a name a file can use
/// without `check` saying so, since it starts a route that is never built.
pub(super) const STAND_IN: &str = "__switchyard_stand_in_";

/// One route as it stands in the file: its name, its lines (1-based, end
/// exclusive) and the indentation of its key.
#[derive(Debug)]
pub(super) struct RouteBlock<'a> {
    name: &'a str,
    pub(super) lines: std::ops::Range<usize>,
    indent: usize,
}

/// Finds each block-style route in one pass over the text, from its key to
/// the next route's key or the next top-level key. serde_yaml keeps no
/// spans after deserializing, and errors between routes (two routes
/// claiming the same match) still deserve a line. Route keys are the
/// least-indented keys under a top-level `routes:`; names are limited to
/// `[A-Za-z0-9_.-]`, so reading `name:` (optionally quoted) is unambiguous.
/// A flow-style `routes: { ... }` gives no blocks, which is allowed.
pub(super) fn route_blocks(text: &str) -> Vec<RouteBlock<'_>> {
    let mut blocks: Vec<RouteBlock<'_>> = Vec::new();
    let mut in_routes = false;
    let mut route_indent = None;
    let total = text.lines().count();
    for (index, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let indent = line.len() - trimmed.len();
        let number = index + 1;
        if indent == 0 {
            if let Some(last) = blocks.last_mut().filter(|b| b.lines.end > number) {
                last.lines.end = number;
            }
            in_routes = trimmed.starts_with("routes:");
            route_indent = None;
            continue;
        }
        if !in_routes || *route_indent.get_or_insert(indent) != indent {
            continue;
        }
        if let Some(last) = blocks.last_mut().filter(|b| b.lines.end > number) {
            last.lines.end = number;
        }
        let key = match trimmed.strip_prefix(['"', '\'']) {
            Some(quoted) => quoted.split(['"', '\'']).next(),
            None => trimmed.split(':').next(),
        };
        blocks.push(RouteBlock {
            name: key.map_or("", str::trim_end),
            lines: number..total + 1,
            indent,
        });
    }
    blocks
}

/// Where each route's key stands: line and column, the first key of a name
/// if it is repeated.
pub(super) fn key_positions<'a>(blocks: &[RouteBlock<'a>]) -> HashMap<&'a str, (usize, usize)> {
    let mut positions = HashMap::new();
    for block in blocks {
        positions
            .entry(block.name)
            .or_insert((block.lines.start, block.indent + 1));
    }
    positions
}

/// `text` with the route at `block` replaced by a valid stand-in on its
/// first line and blank lines after, so no other line moves.
pub(super) fn with_stand_in(text: &str, block: &RouteBlock, index: usize) -> String {
    let mut out = String::with_capacity(text.len());
    for (number, line) in (1..).zip(text.lines()) {
        if number == block.lines.start {
            let pad = " ".repeat(block.indent);
            out.push_str(&format!("{pad}{STAND_IN}{index}: {{ respond: {{}} }}"));
        } else if !block.lines.contains(&number) {
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

/// serde_yaml's message, with the position made exact where serde_yaml
/// leaves it out or puts it at the start of the enclosing mapping.
///
/// Three cases need help. serde's derived code raises `duplicate field`
/// after reading the whole mapping, so serde_yaml places it at the
/// mapping's first key; the repeated key is found in the text instead. A
/// field whose parts are only checked together once it has been read
/// (`rewrite`, `upstream_tls`) says so by starting its message with its
/// name in backticks (`` `rewrite`: ... ``), and is placed at its key the
/// same way. And serde_yaml prints no position at all for line 1 column 1.
pub(super) fn yaml_message(error: &serde_yaml::Error, text: &str) -> String {
    let message = error.to_string();
    let (bare, _) = message.rsplit_once(" at line ").unwrap_or((&message, ""));
    let (mapping, said) = bare.split_once(": ").unwrap_or(("", bare));
    let duplicate = said
        .strip_prefix("duplicate field `")
        .and_then(|rest| rest.split_once('`'))
        .and_then(|(field, _)| key_position(text, mapping, field, 2));
    let whole_field = || {
        let (field, _) = said.strip_prefix('`')?.split_once("`: ")?;
        key_position(text, mapping, field, 1)
    };
    let located = duplicate
        .or_else(whole_field)
        .or_else(|| error.location().map(|l| (l.line(), l.column())));
    match located {
        Some((line, column)) => format!("{bare} at line {line} column {column}"),
        None => message,
    }
}

/// Where `field` appears for the `nth` time among the keys of the mapping
/// at `path` (`""` for the top level, `routes.NAME` for a route): the keys
/// one indentation level below the mapping's own key, until the mapping
/// ends. Block-style YAML only; anything else keeps serde_yaml's position.
fn key_position(text: &str, path: &str, field: &str, nth: usize) -> Option<(usize, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    let (start, parent_indent) = match path {
        "" => (0, None),
        _ => {
            let name = path.strip_prefix("routes.")?;
            let (line, column) = *key_positions(&route_blocks(text)).get(name)?;
            (line, Some(column - 1))
        }
    };
    let mut key_indent = None;
    let mut seen = 0;
    for (index, line) in lines.iter().enumerate().skip(start) {
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let indent = line.len() - trimmed.len();
        if parent_indent.is_some_and(|parent| indent <= parent) {
            break;
        }
        if *key_indent.get_or_insert(indent) != indent {
            continue;
        }
        let key = trimmed
            .split(':')
            .next()
            .map(|k| k.trim().trim_matches(['"', '\'']));
        if key == Some(field) {
            seen += 1;
            if seen == nth {
                return Some((index + 1, indent + 1));
            }
        }
    }
    None
}

pub(super) fn is_empty_document(text: &str) -> bool {
    match serde_yaml::Deserializer::from_str(text).next() {
        None => true,
        Some(document) => matches!(
            serde_yaml::Value::deserialize(document),
            Ok(serde_yaml::Value::Null)
        ),
    }
}
