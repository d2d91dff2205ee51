//! The layout of a description: fields aligned per block, headers, tables, free text.

use std::collections::BTreeMap;

use crate::table;

/// A describe text under construction: `Key:  value` fields, nested by indent, and tables.
#[derive(Default)]
pub(super) struct Doc {
    pub(super) lines: Vec<Line>,
}

pub(super) enum Line {
    /// `Key:` then the value, aligned with the other fields of its level in its block; a
    /// multi-line value continues under its first line.
    Field { indent: usize, key: String, value: Option<String> },
    /// A line printed as it is, after its indent.
    Text { indent: usize, text: String },
}

impl Line {
    pub(super) fn indent(&self) -> usize {
        match self {
            Line::Field { indent, .. } | Line::Text { indent, .. } => *indent,
        }
    }
}

const INDENT: &str = "  ";

impl Doc {
    pub(super) fn field(&mut self, indent: usize, key: &str, value: impl Into<String>) {
        self.lines.push(Line::Field { indent, key: key.to_string(), value: Some(value.into()) });
    }

    /// A field only when it has a value: optional facts are left out rather than shown empty.
    pub(super) fn opt(&mut self, indent: usize, key: &str, value: &str) {
        if !value.is_empty() {
            self.field(indent, key, value);
        }
    }

    pub(super) fn header(&mut self, indent: usize, key: &str) {
        self.lines.push(Line::Field { indent, key: key.to_string(), value: None });
    }

    /// A line as it is: it takes no part in the alignment of fields.
    pub(super) fn text(&mut self, indent: usize, text: String) {
        self.lines.push(Line::Text { indent, text });
    }

    /// Labels or annotations: one `key=value` per line, in key order, or `<none>`.
    pub(super) fn map(&mut self, indent: usize, key: &str, map: &BTreeMap<String, String>, sep: &str) {
        let value = if map.is_empty() {
            "<none>".to_string()
        } else {
            map.iter().map(|(k, v)| format!("{k}{sep}{v}")).collect::<Vec<_>>().join("\n")
        };
        self.field(indent, key, value);
    }

    /// A table with its header underlined, as kubectl prints conditions and events.
    pub(super) fn table(&mut self, indent: usize, header: &[&str], rows: Vec<Vec<String>>) {
        let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
        let underline: Vec<String> = header.iter().map(|h| "-".repeat(h.len())).collect();
        let rows: Vec<Vec<String>> = std::iter::once(underline).chain(rows).collect();
        for text in table::render(&header, &rows, false).lines() {
            self.lines.push(Line::Text { indent, text: text.to_string() });
        }
    }

    pub(super) fn render(&self) -> String {
        let mut out = String::new();
        for (i, line) in self.lines.iter().enumerate() {
            match line {
                Line::Text { indent, text } => {
                    out.push_str(&INDENT.repeat(*indent));
                    out.push_str(text);
                }
                Line::Field { indent, key, value } => {
                    let prefix = format!("{}{key}:", INDENT.repeat(*indent));
                    out.push_str(&prefix);
                    if let Some(value) = value {
                        let column = INDENT.len() * indent + self.key_width(i) + 3;
                        let mut lines = value.lines();
                        let first = lines.next().unwrap_or_default();
                        out.extend(std::iter::repeat_n(' ', column.saturating_sub(prefix.chars().count())));
                        out.push_str(first);
                        for more in lines {
                            out.push('\n');
                            out.extend(std::iter::repeat_n(' ', column));
                            out.push_str(more);
                        }
                    }
                }
            }
            out.push('\n');
        }
        out
    }

    /// The widest key among the valued fields at line `i`'s level within its block: the lines
    /// around it that are not shallower.
    pub(super) fn key_width(&self, i: usize) -> usize {
        let level = self.lines[i].indent();
        let start = self.lines[..i].iter().rposition(|l| l.indent() < level).map_or(0, |p| p + 1);
        let end = self.lines[i..].iter().position(|l| l.indent() < level).map_or(self.lines.len(), |p| i + p);
        self.lines[start..end]
            .iter()
            .filter_map(|l| match l {
                Line::Field { indent, key, value: Some(_) } if *indent == level => Some(key.chars().count()),
                _ => None,
            })
            .max()
            .unwrap_or(0)
    }
}
