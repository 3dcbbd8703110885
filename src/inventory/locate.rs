//! Where each value of a YAML document stands, so validation errors can name file:line:column.
//!
//! serde gives positions only for syntax and type errors; checks made after parsing (a bad CIDR,
//! a duplicate name) look the path up here. Paths are written like `spec.hosts[1].address`.

use std::collections::HashMap;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// A 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

#[derive(Debug, Default)]
pub struct Positions {
    values: HashMap<String, Position>,
}

impl Positions {
    pub fn of(text: &str) -> Positions {
        let mut walker = Walker::default();
        // A document that does not parse has no positions; serde reports the syntax error itself.
        let _ = Parser::new_from_str(text).load(&mut walker, false);
        Positions {
            values: walker.values,
        }
    }

    /// The position of the value at `path`, or of the nearest enclosing value that has one.
    pub fn find(&self, path: &str) -> Option<Position> {
        let mut p = path.to_string();
        loop {
            if let Some(pos) = self.values.get(&p) {
                return Some(*pos);
            }
            let cut = p.rfind(['.', '['])?;
            p.truncate(cut);
        }
    }
}

enum Frame {
    /// `first_key`: the mapping is located at its first key (block mappings start late).
    Map {
        path: String,
        key: Option<String>,
        first_key: bool,
    },
    Seq {
        path: String,
        index: usize,
    },
}

#[derive(Default)]
struct Walker {
    stack: Vec<Frame>,
    values: HashMap<String, Position>,
}

impl Walker {
    /// The path of the value that starts now, or None when the event is a mapping key.
    fn next_value_path(&mut self) -> Option<String> {
        match self.stack.last_mut() {
            None => Some(String::new()),
            Some(Frame::Map { path, key, .. }) => key.take().map(|k| join(path, &k)),
            Some(Frame::Seq { path, index }) => {
                let p = format!("{path}[{index}]");
                *index += 1;
                Some(p)
            }
        }
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

impl MarkedEventReceiver for Walker {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let pos = Position {
            line: mark.line(),
            column: mark.col() + 1,
        };
        match ev {
            Event::Scalar(value, ..) => match self.next_value_path() {
                Some(path) => {
                    self.values.insert(path, pos);
                }
                None => {
                    if let Some(Frame::Map {
                        key,
                        first_key,
                        path,
                    }) = self.stack.last_mut()
                    {
                        *key = Some(value);
                        if *first_key {
                            *first_key = false;
                            self.values.insert(path.clone(), pos);
                        }
                    }
                }
            },
            Event::MappingStart(..) => {
                let path = self.next_value_path().unwrap_or_default();
                self.values.insert(path.clone(), pos);
                self.stack.push(Frame::Map {
                    path,
                    key: None,
                    first_key: true,
                });
            }
            Event::SequenceStart(..) => {
                let path = self.next_value_path().unwrap_or_default();
                self.values.insert(path.clone(), pos);
                self.stack.push(Frame::Seq { path, index: 0 });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            Event::Alias(_) => {
                if let Some(path) = self.next_value_path() {
                    self.values.insert(path, pos);
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_nested_values_with_one_based_positions() {
        let text = "a: 1\nb:\n  c: [x, y]\n  hosts:\n    - name: n1\n      address: 10.0.0.1\n";
        let p = Positions::of(text);
        assert_eq!(p.find("a"), Some(Position { line: 1, column: 4 }));
        assert_eq!(
            p.find("b.c[1]"),
            Some(Position {
                line: 3,
                column: 10
            })
        );
        assert_eq!(
            p.find("b.hosts[0].address"),
            Some(Position {
                line: 6,
                column: 16
            })
        );
        // a missing key falls back to its parent mapping
        assert_eq!(
            p.find("b.hosts[0].roles"),
            Some(Position { line: 5, column: 7 })
        );
    }
}
