//! Where each field of a case file is written, so a validation error can name the line of the
//! field that is wrong rather than the first line that happens to contain the same text.
//!
//! serde gives the plan builder values without positions, so the source is read a second
//! time, as YAML events, only when there is an error to place: every node's path
//! (`call.remote[1].base`, `target.regions[0]`, `race.region`; block or flow style alike)
//! maps to its line and column.

use saphyr_parser::{Event, Parser, Span};
use std::collections::HashMap;

/// A 1-based line and column in the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pos {
    pub line: usize,
    pub column: usize,
}

/// Field path → position. A mapping entry is placed at its key (where the field is written,
/// also when its value starts on a later line), a sequence item at its first character.
#[derive(Debug, Default)]
pub struct Positions {
    map: HashMap<String, Pos>,
}

enum Frame {
    /// `key`: the key whose value comes next, `None` while a key is awaited.
    Map {
        path: String,
        key: Option<String>,
    },
    Seq {
        path: String,
        next: usize,
    },
}

impl Positions {
    /// Every node of the first document in `src`. Text the parser rejects keeps whatever
    /// came before the error (serde has reported such a file already).
    pub fn of(src: &str) -> Positions {
        let mut map = HashMap::new();
        let mut stack: Vec<Frame> = Vec::new();
        for ev in Parser::new_from_str(src) {
            let Ok((ev, span)) = ev else { break };
            match ev {
                Event::DocumentEnd => break,
                Event::MappingEnd | Event::SequenceEnd => {
                    stack.pop();
                }
                Event::Scalar(ref text, ..) => {
                    // A scalar is a leaf, or the key of the entry that follows.
                    if let Some(Frame::Map {
                        path,
                        key: key @ None,
                    }) = stack.last_mut()
                    {
                        let k = join(path, text);
                        map.entry(k).or_insert_with(|| pos(&span));
                        *key = Some(text.to_string());
                    } else {
                        node_path(&mut stack, &mut map, &span);
                    }
                }
                Event::Alias(_) => {
                    if let Some(Frame::Map {
                        key: key @ None, ..
                    }) = stack.last_mut()
                    {
                        *key = Some("*".into());
                    } else {
                        node_path(&mut stack, &mut map, &span);
                    }
                }
                Event::MappingStart(..) | Event::SequenceStart(..) => {
                    let path = match stack.last_mut() {
                        // A collection as a key: nothing a case file names.
                        Some(Frame::Map {
                            path,
                            key: key @ None,
                        }) => {
                            *key = Some("?".into());
                            join(path, "?")
                        }
                        _ => node_path(&mut stack, &mut map, &span),
                    };
                    stack.push(if matches!(ev, Event::MappingStart(..)) {
                        Frame::Map { path, key: None }
                    } else {
                        Frame::Seq { path, next: 0 }
                    });
                }
                _ => {}
            }
        }
        Positions { map }
    }

    /// Where `field` is written, or else the nearest enclosing field that is (for a field
    /// the file leaves out, its section); `None` if not even the top-level section is.
    pub fn locate(&self, field: &str) -> Option<Pos> {
        let mut f = field;
        loop {
            if f.is_empty() {
                return None;
            }
            if let Some(p) = self.map.get(f) {
                return Some(*p);
            }
            f = parent(f);
        }
    }
}

fn pos(span: &Span) -> Pos {
    Pos {
        line: span.start.line(),
        column: span.start.col() + 1,
    }
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

/// `a.b[2].c` → `a.b[2]` → `a.b` → `a` → ``.
fn parent(field: &str) -> &str {
    let cut = if field.ends_with(']') {
        field.rfind('[')
    } else {
        field.rfind('.')
    };
    &field[..cut.unwrap_or(0)]
}

/// The path of a value node (the root, a mapping value or a sequence item), recording a
/// sequence item's position; a mapping value is placed at its key, recorded already.
fn node_path(stack: &mut [Frame], map: &mut HashMap<String, Pos>, span: &Span) -> String {
    match stack.last_mut() {
        None => String::new(),
        Some(Frame::Map { path, key }) => join(path, &key.take().unwrap_or_default()),
        Some(Frame::Seq { path, next }) => {
            let p = format!("{path}[{next}]");
            *next += 1;
            map.entry(p.clone()).or_insert_with(|| pos(span));
            p
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(src: &str, field: &str) -> Option<(usize, usize)> {
        Positions::of(src).locate(field).map(|p| (p.line, p.column))
    }

    #[test]
    fn block_and_flow_nodes() {
        let src = "description: a page\ncall:\n  remote:\n    - {base: a, len: 1}\n    - base: g\n      len: 2\n  local: [{base: b,\n           len: 3}, {base: c, len: 4}]\n";
        assert_eq!(at(src, "description"), Some((1, 1)));
        assert_eq!(at(src, "call"), Some((2, 1)));
        assert_eq!(at(src, "call.remote"), Some((3, 3)));
        assert_eq!(at(src, "call.remote[0]"), Some((4, 7)));
        assert_eq!(at(src, "call.remote[0].len"), Some((4, 17)));
        assert_eq!(at(src, "call.remote[1]"), Some((5, 7)));
        assert_eq!(at(src, "call.remote[1].base"), Some((5, 7)));
        assert_eq!(at(src, "call.remote[1].len"), Some((6, 7)));
        assert_eq!(at(src, "call.local[0].len"), Some((8, 12)));
        assert_eq!(at(src, "call.local[1].base"), Some((8, 22)));
        // Absent fields fall back to what encloses them; nothing encloses a missing section.
        assert_eq!(at(src, "call.remote[1].stride"), Some((5, 7)));
        assert_eq!(at(src, "call.remote[7].base"), Some((3, 3)));
        assert_eq!(at(src, "race.region"), None);
    }

    #[test]
    fn parents() {
        assert_eq!(parent("a.b[2].c"), "a.b[2]");
        assert_eq!(parent("a.b[2]"), "a.b");
        assert_eq!(parent("a.b"), "a");
        assert_eq!(parent("a"), "");
    }

    #[test]
    fn nested_keys_do_not_leak_between_entries() {
        let src = "a:\n  b: &x {c: [1, {d: x}]}\n  e: 2\nf: *x\n";
        assert_eq!(at(src, "a.b.c[1].d"), Some((2, 18)));
        assert_eq!(at(src, "a.e"), Some((3, 3)));
        assert_eq!(at(src, "f"), Some((4, 1)));
    }
}
