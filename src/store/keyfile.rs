//! Reading and writing OSTree's repository `config` file.
//!
//! OSTree keeps its configuration in GLib `GKeyFile` syntax: `[core]` and
//! `[remote "name"]` groups, `key=value` lines, GLib string escapes (`\s`,
//! `\n`, ...) and `;`-separated lists. No well-kept crate reads and rewrites
//! that format with GLib's escaping while keeping comments and ordering, so
//! this is a small hand-written reader/writer.
//!
//! Every input line is kept verbatim, so `parse` followed by `to_string`
//! reproduces the input byte for byte, and an edit only touches the lines it
//! changes. Parsing follows GLib's `gkeyfile.c`: leading whitespace of a line
//! is ignored, whitespace around the key and before the value is dropped
//! while trailing whitespace of the value is kept, a repeated group is merged
//! into the first one and a repeated key takes its last value. Where GLib
//! errs, this is lenient on reading (a bad escape is returned literally) and
//! strict on writing (names and values that would not read back are refused).

use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;

/// Largest input [`KeyFile::parse`] accepts, in bytes (1 MiB).
pub const MAX_SIZE: usize = 1024 * 1024;

/// Longest excerpt of offending input quoted in an error message.
const MAX_SNIPPET_CHARS: usize = 80;

/// Errors from parsing a key file, reading typed values or writing entries.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyFileError {
    #[error("key file is too large: {size} bytes (the limit is {limit} bytes)")]
    TooLarge { size: usize, limit: usize },
    #[error("line {line}: key file is not valid UTF-8")]
    InvalidUtf8 { line: usize },
    #[error("line {line}: key file contains a NUL byte")]
    NulByte { line: usize },
    #[error("line {line}: key {key:?} appears before the first [group] header")]
    KeyOutsideGroup { line: usize, key: String },
    #[error(
        "line {line}: invalid group name {name:?} (it must be non-empty and \
         contain no '[', ']' or control characters)"
    )]
    BadGroupHeader { line: usize, name: String },
    #[error("line {line}: invalid key name {key:?}")]
    BadKey { line: usize, key: String },
    #[error(
        "line {line}: expected a [group] header, a key=value pair or a # comment, \
         found {text:?}"
    )]
    BadLine { line: usize, text: String },
    #[error("line {line}: value {value:?} of key {key:?} in group [{group}] is not {expected}")]
    InvalidValue {
        line: usize,
        group: String,
        key: String,
        value: String,
        expected: &'static str,
    },
    #[error(
        "cannot write group {group:?}: a group name must be non-empty and contain \
         no '[', ']' or control characters"
    )]
    InvalidGroupName { group: String },
    #[error(
        "cannot write key {key:?}: a key must be non-empty, must not start with '#' \
         or whitespace, end with whitespace, or contain '=', control characters or \
         brackets other than a trailing locale suffix like \"name[de]\""
    )]
    InvalidKeyName { key: String },
    #[error("cannot write value {value:?}: it contains a NUL or starts with a form feed")]
    UnrepresentableValue { value: String },
}

/// What a line of the file is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    /// A `#` comment or a blank (whitespace-only) line.
    Comment,
    /// A `[name]` group header.
    Group(String),
    /// A `key=value` pair. `value_start` is the byte offset of the raw
    /// (still escaped) value in the line's text.
    Entry { key: String, value_start: usize },
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Line {
    /// The line as written, without its terminator.
    text: String,
    /// Whether the line was terminated by `\r\n` rather than `\n`.
    cr: bool,
    kind: Kind,
}

impl Line {
    fn is_blank(&self) -> bool {
        self.kind == Kind::Comment && self.text.chars().all(is_gspace)
    }

    fn entry_key(&self) -> Option<&str> {
        match &self.kind {
            Kind::Entry { key, .. } => Some(key),
            _ => None,
        }
    }

    fn raw_value(&self) -> Option<&str> {
        match &self.kind {
            Kind::Entry { value_start, .. } => self.text.get(*value_start..),
            _ => None,
        }
    }
}

/// A GLib key file that remembers its exact text.
///
/// Lookups merge repeated groups and let the last occurrence of a key win,
/// like GLib. Serialize with [`fmt::Display`] (`to_string()`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyFile {
    lines: Vec<Line>,
    /// Whether the last line ends with a newline.
    final_newline: bool,
}

impl KeyFile {
    /// An empty key file.
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses key file text. Fails on input over [`MAX_SIZE`] bytes, on a
    /// NUL byte, on a key before the first group, on an invalid group or key
    /// name, and on a line that is not a group header, `key=value` pair,
    /// comment or blank.
    pub fn parse(input: &str) -> Result<Self, KeyFileError> {
        check_size(input.len())?;
        let (body, final_newline) = match input.strip_suffix('\n') {
            Some(body) => (body, true),
            None => (input, false),
        };
        let mut lines = Vec::new();
        if input.is_empty() {
            return Ok(Self {
                lines,
                final_newline,
            });
        }
        let mut in_group = false;
        let mut pieces = body.split('\n').enumerate().peekable();
        while let Some((index, piece)) = pieces.next() {
            let line = index + 1;
            let terminated = pieces.peek().is_some() || final_newline;
            // GLib drops a '\r' only when it precedes a '\n'.
            let (text, cr) = match piece.strip_suffix('\r') {
                Some(text) if terminated => (text, true),
                _ => (piece, false),
            };
            if text.contains('\0') {
                return Err(KeyFileError::NulByte { line });
            }
            let kind = classify(text, line)?;
            match &kind {
                Kind::Group(_) => in_group = true,
                Kind::Entry { key, .. } if !in_group => {
                    return Err(KeyFileError::KeyOutsideGroup {
                        line,
                        key: snippet(key),
                    });
                }
                _ => {}
            }
            lines.push(Line {
                text: text.to_owned(),
                cr,
                kind,
            });
        }
        Ok(Self {
            lines,
            final_newline,
        })
    }

    /// Like [`KeyFile::parse`] for raw file contents, which must be UTF-8.
    pub fn parse_bytes(input: &[u8]) -> Result<Self, KeyFileError> {
        check_size(input.len())?;
        match std::str::from_utf8(input) {
            Ok(text) => Self::parse(text),
            Err(err) => {
                let valid = &input[..err.valid_up_to()];
                let line = valid.iter().filter(|&&b| b == b'\n').count() + 1;
                Err(KeyFileError::InvalidUtf8 { line })
            }
        }
    }

    /// Group names in order of first appearance, each once.
    pub fn groups(&self) -> impl Iterator<Item = &str> {
        let mut seen = HashSet::new();
        self.lines.iter().filter_map(move |line| match &line.kind {
            Kind::Group(name) if seen.insert(name.as_str()) => Some(name.as_str()),
            _ => None,
        })
    }

    /// Whether a `[group]` header exists.
    pub fn has_group(&self, group: &str) -> bool {
        self.lines
            .iter()
            .any(|line| matches!(&line.kind, Kind::Group(name) if name == group))
    }

    /// Keys of `group` (over all its occurrences) in order of first
    /// appearance, each once. Empty if the group does not exist.
    pub fn keys<'a>(&'a self, group: &str) -> impl Iterator<Item = &'a str> + use<'a> {
        let mut seen = HashSet::new();
        self.sections(group)
            .into_iter()
            .flat_map(move |(start, end)| self.lines[start + 1..end].iter())
            .filter_map(Line::entry_key)
            .filter(move |key| seen.insert(*key))
    }

    /// Whether `key` exists in `group`.
    pub fn has_key(&self, group: &str, key: &str) -> bool {
        self.find_entry(group, key).is_some()
    }

    /// The value of `key` as written in the file, escapes not processed.
    pub fn get_raw(&self, group: &str, key: &str) -> Option<&str> {
        self.lines[self.find_entry(group, key)?].raw_value()
    }

    /// The value of `key` with GLib escapes (`\s`, `\n`, `\t`, `\r`, `\\`)
    /// decoded. Unlike GLib, which refuses the whole value, an unknown escape
    /// or a lone trailing backslash is kept literally.
    pub fn get(&self, group: &str, key: &str) -> Option<String> {
        let raw = self.get_raw(group, key)?;
        Some(unescape(raw, false).pop().unwrap_or_default())
    }

    /// The value of `key` as a boolean: `true`/`1` or `false`/`0`, as GLib
    /// accepts them (case-sensitive, trailing whitespace ignored).
    pub fn get_bool(&self, group: &str, key: &str) -> Result<Option<bool>, KeyFileError> {
        let Some(index) = self.find_entry(group, key) else {
            return Ok(None);
        };
        let raw = self.lines[index].raw_value().unwrap_or_default();
        match raw.trim_end_matches(is_gspace) {
            "true" | "1" => Ok(Some(true)),
            "false" | "0" => Ok(Some(false)),
            _ => Err(self.invalid_value(index, group, key, raw, "a boolean")),
        }
    }

    /// The value of `key` as an unsigned decimal integer (digits only,
    /// trailing whitespace ignored; out-of-range values are an error).
    pub fn get_u64(&self, group: &str, key: &str) -> Result<Option<u64>, KeyFileError> {
        let Some(index) = self.find_entry(group, key) else {
            return Ok(None);
        };
        let raw = self.lines[index].raw_value().unwrap_or_default();
        let digits = raw.trim_end_matches(is_gspace);
        // Rust's parser alone would also take a leading '+'.
        match digits.parse() {
            Ok(value) if digits.bytes().all(|b| b.is_ascii_digit()) => Ok(Some(value)),
            _ => Err(self.invalid_value(index, group, key, raw, "an unsigned 64-bit integer")),
        }
    }

    /// The value of `key` as a `;`-separated list, with `\;` standing for a
    /// literal `;` and one trailing `;` ignored (`a;b;` is `["a", "b"]`).
    pub fn get_list(&self, group: &str, key: &str) -> Option<Vec<String>> {
        Some(unescape(self.get_raw(group, key)?, true))
    }

    /// Sets `key` in `group` to `value`, escaping it as GLib does.
    ///
    /// An existing key keeps its place (the last occurrence if repeated) and
    /// the text before its value. A new key goes right after the last
    /// `key=value` line of the group (so before the group's trailing blank
    /// lines and comments), or right after the header of a group without
    /// keys. A missing group is appended at the end of the file, separated by
    /// a blank line.
    pub fn set(&mut self, group: &str, key: &str, value: &str) -> Result<(), KeyFileError> {
        let raw = escape_checked(value)?;
        self.set_raw(group, key, &raw)
    }

    /// Sets `key` to `true` or `false`.
    pub fn set_bool(&mut self, group: &str, key: &str, value: bool) -> Result<(), KeyFileError> {
        self.set_raw(group, key, if value { "true" } else { "false" })
    }

    /// Sets `key` to a decimal integer.
    pub fn set_u64(&mut self, group: &str, key: &str, value: u64) -> Result<(), KeyFileError> {
        self.set_raw(group, key, &value.to_string())
    }

    /// Sets `key` to a list, written like GLib does: every item followed by
    /// `;`, with `;` inside items escaped as `\;`.
    pub fn set_list<I, S>(&mut self, group: &str, key: &str, items: I) -> Result<(), KeyFileError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut raw = String::new();
        for item in items {
            let item = item.as_ref();
            let escaped = escape(item, true);
            // Readers strip whitespace only at the start of the whole value.
            if item.contains('\0') || (raw.is_empty() && escaped.starts_with(is_gspace)) {
                return Err(KeyFileError::UnrepresentableValue {
                    value: snippet(item),
                });
            }
            raw.push_str(&escaped);
            raw.push(';');
        }
        self.set_raw(group, key, &raw)
    }

    /// Removes every occurrence of `key` from `group`. Returns whether
    /// anything was removed.
    pub fn remove_key(&mut self, group: &str, key: &str) -> bool {
        let doomed: Vec<usize> = self
            .sections(group)
            .into_iter()
            .flat_map(|(start, end)| start + 1..end)
            .filter(|&i| self.lines[i].entry_key() == Some(key))
            .collect();
        for &i in doomed.iter().rev() {
            if i + 1 == self.lines.len() {
                // The new last line was terminated in the original text.
                self.final_newline = true;
            }
            self.lines.remove(i);
        }
        !doomed.is_empty()
    }

    /// Removes every occurrence of `group`: its header and all lines up to
    /// the next header, as GLib does (comments above the header belong to
    /// the previous group and stay). When the file then ends in blank lines
    /// that separated it from the removed group, those are dropped too.
    /// Returns whether the group existed.
    pub fn remove_group(&mut self, group: &str) -> bool {
        let sections = self.sections(group);
        let Some(&(_, last_end)) = sections.last() else {
            return false;
        };
        let reached_end = last_end == self.lines.len();
        for &(start, end) in sections.iter().rev() {
            self.lines.drain(start..end);
        }
        if reached_end {
            while self.lines.last().is_some_and(Line::is_blank) {
                self.lines.pop();
            }
            self.final_newline = true;
        }
        true
    }

    /// Validates names and stores an already escaped value.
    fn set_raw(&mut self, group: &str, key: &str, raw: &str) -> Result<(), KeyFileError> {
        if !is_group_name(group) {
            return Err(KeyFileError::InvalidGroupName {
                group: snippet(group),
            });
        }
        if !is_writable_key(key) {
            return Err(KeyFileError::InvalidKeyName { key: snippet(key) });
        }
        if let Some(index) = self.find_entry(group, key) {
            let line = &mut self.lines[index];
            if let Kind::Entry { value_start, .. } = &mut line.kind {
                // Keep the text before the value ("key = "), except the
                // whitespace after '=' when the old value was empty.
                let prefix_end = if *value_start == line.text.len() {
                    line.text.find('=').map_or(*value_start, |eq| eq + 1)
                } else {
                    *value_start
                };
                line.text.truncate(prefix_end);
                line.text.push_str(raw);
                *value_start = prefix_end;
            }
            return Ok(());
        }
        let cr = self.lines.first().is_some_and(|line| line.cr);
        let entry = Line {
            text: format!("{key}={raw}"),
            cr,
            kind: Kind::Entry {
                key: key.to_owned(),
                value_start: key.len() + 1,
            },
        };
        if let Some(&(start, end)) = self.sections(group).last() {
            let at = (start + 1..end)
                .rev()
                .find(|&i| self.lines[i].entry_key().is_some())
                .map_or(start + 1, |i| i + 1);
            self.insert_line(at, entry);
        } else {
            if self.lines.last().is_some_and(|line| !line.is_blank()) {
                self.push_line(Line {
                    text: String::new(),
                    cr,
                    kind: Kind::Comment,
                });
            }
            self.push_line(Line {
                text: format!("[{group}]"),
                cr,
                kind: Kind::Group(group.to_owned()),
            });
            self.push_line(entry);
        }
        Ok(())
    }

    fn push_line(&mut self, line: Line) {
        self.insert_line(self.lines.len(), line);
    }

    fn insert_line(&mut self, at: usize, line: Line) {
        if at == self.lines.len() {
            if !self.final_newline {
                // The old last line gets a terminator now; match the new one.
                if let Some(last) = self.lines.last_mut() {
                    last.cr = line.cr;
                }
            }
            self.final_newline = true;
        }
        self.lines.insert(at, line);
    }

    /// `(header, end)` line index ranges of every occurrence of `group`,
    /// `end` exclusive.
    fn sections(&self, group: &str) -> Vec<(usize, usize)> {
        let mut sections = Vec::new();
        let mut open: Option<usize> = None;
        for (i, line) in self.lines.iter().enumerate() {
            if let Kind::Group(name) = &line.kind {
                if let Some(start) = open.take() {
                    sections.push((start, i));
                }
                if name == group {
                    open = Some(i);
                }
            }
        }
        if let Some(start) = open {
            sections.push((start, self.lines.len()));
        }
        sections
    }

    /// Index of the line holding the effective (last) value of `key`.
    fn find_entry(&self, group: &str, key: &str) -> Option<usize> {
        self.sections(group)
            .into_iter()
            .flat_map(|(start, end)| start + 1..end)
            .rev()
            .find(|&i| self.lines[i].entry_key() == Some(key))
    }

    fn invalid_value(
        &self,
        index: usize,
        group: &str,
        key: &str,
        raw: &str,
        expected: &'static str,
    ) -> KeyFileError {
        KeyFileError::InvalidValue {
            line: index + 1,
            group: group.to_owned(),
            key: key.to_owned(),
            value: snippet(raw),
            expected,
        }
    }
}

impl FromStr for KeyFile {
    type Err = KeyFileError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for KeyFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = self.lines.len();
        for (i, line) in self.lines.iter().enumerate() {
            f.write_str(&line.text)?;
            if i + 1 < count || self.final_newline {
                f.write_str(if line.cr { "\r\n" } else { "\n" })?;
            }
        }
        Ok(())
    }
}

fn check_size(size: usize) -> Result<(), KeyFileError> {
    if size > MAX_SIZE {
        return Err(KeyFileError::TooLarge {
            size,
            limit: MAX_SIZE,
        });
    }
    Ok(())
}

/// GLib's `g_ascii_isspace`: space, `\t`, `\n`, form feed and `\r`, but
/// not vertical tab (the same set as [`char::is_ascii_whitespace`]).
fn is_gspace(c: char) -> bool {
    c.is_ascii_whitespace()
}

/// Classifies one line (without terminator) the way GLib's
/// `g_key_file_parse_line` does.
fn classify(text: &str, line: usize) -> Result<Kind, KeyFileError> {
    let trimmed = text.trim_start_matches(is_gspace);
    let indent = text.len() - trimmed.len();
    if trimmed.is_empty() || trimmed.starts_with('#') {
        return Ok(Kind::Comment);
    }
    if let Some(name) = group_header_name(trimmed) {
        if !is_group_name(name) {
            return Err(KeyFileError::BadGroupHeader {
                line,
                name: snippet(name),
            });
        }
        return Ok(Kind::Group(name.to_owned()));
    }
    // `trimmed` starts with neither whitespace nor '#', so a key-value line
    // is one with an '=' past its first character.
    if let Some(eq) = trimmed.find('=').filter(|&eq| eq > 0) {
        let key = trimmed[..eq].trim_end_matches(is_gspace);
        if !is_key_name(key) {
            return Err(KeyFileError::BadKey {
                line,
                key: snippet(key),
            });
        }
        let after = &trimmed[eq + 1..];
        let value = after.trim_start_matches(is_gspace);
        return Ok(Kind::Entry {
            key: key.to_owned(),
            value_start: indent + eq + 1 + (after.len() - value.len()),
        });
    }
    Err(KeyFileError::BadLine {
        line,
        text: snippet(text),
    })
}

/// The name in a `[name]` header line (leading whitespace already removed),
/// which may be followed by spaces and tabs only.
fn group_header_name(trimmed: &str) -> Option<&str> {
    let inner = trimmed.strip_prefix('[')?;
    let close = inner.find(']')?;
    inner[close + 1..]
        .chars()
        .all(|c| c == ' ' || c == '\t')
        .then(|| &inner[..close])
}

/// GLib's `g_key_file_is_group_name`.
fn is_group_name(name: &str) -> bool {
    !name.is_empty()
        && !name
            .chars()
            .any(|c| c == '[' || c == ']' || c.is_ascii_control())
}

/// GLib's `g_key_file_is_key_name`: a non-empty name without `=`, `[` or
/// `]`, not starting or ending with a space, optionally followed by a
/// `[locale]` suffix.
fn is_key_name(key: &str) -> bool {
    let base_end = key.find(['=', '[', ']']).unwrap_or(key.len());
    let (base, suffix) = key.split_at(base_end);
    if base.is_empty() || base.starts_with(' ') || base.ends_with(' ') {
        return false;
    }
    if suffix.is_empty() {
        return true;
    }
    suffix
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
        .is_some_and(|locale| {
            locale
                .chars()
                .all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'))
        })
}

/// A key that reads back as itself once written. Stricter than GLib, which
/// would write keys that reparse as comments or split across lines.
fn is_writable_key(key: &str) -> bool {
    is_key_name(key)
        && !key.starts_with('#')
        && !key.starts_with(is_gspace)
        && !key.ends_with(is_gspace)
        && !key.chars().any(char::is_control)
}

/// Escapes `value` like GLib's `g_key_file_parse_string_as_value`: leading
/// spaces and tabs become `\s` and `\t`, newline, carriage return and
/// backslash are always escaped, and in list items `;` becomes `\;` (after
/// which leading spaces are escaped again).
fn escape(value: &str, list_item: bool) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    let mut leading = true;
    for c in value.chars() {
        match c {
            ' ' if leading => out.push_str("\\s"),
            '\t' if leading => out.push_str("\\t"),
            ' ' | '\t' => out.push(c),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\\' => {
                out.push_str("\\\\");
                leading = false;
            }
            ';' if list_item => {
                out.push_str("\\;");
                leading = true;
            }
            _ => {
                out.push(c);
                leading = false;
            }
        }
    }
    out
}

/// Escapes a single value, refusing what no escaped form can carry: a NUL,
/// or a leading form feed (GLib strips it on reading and has no escape for it).
fn escape_checked(value: &str) -> Result<String, KeyFileError> {
    let raw = escape(value, false);
    if value.contains('\0') || raw.starts_with(is_gspace) {
        return Err(KeyFileError::UnrepresentableValue {
            value: snippet(value),
        });
    }
    Ok(raw)
}

/// Decodes a raw value. Without `list` the result is one string; with it,
/// the value is split at unescaped `;`, a final empty item being dropped.
fn unescape(raw: &str, list: bool) -> Vec<String> {
    let mut items = Vec::new();
    let mut current = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some('s') => current.push(' '),
                Some('n') => current.push('\n'),
                Some('t') => current.push('\t'),
                Some('r') => current.push('\r'),
                Some('\\') => current.push('\\'),
                Some(';') if list => current.push(';'),
                Some(other) => {
                    current.push('\\');
                    current.push(other);
                }
                None => current.push('\\'),
            },
            ';' if list => items.push(std::mem::take(&mut current)),
            _ => current.push(c),
        }
    }
    if !list || !current.is_empty() {
        items.push(current);
    }
    items
}

/// `text` cut to a length fit for an error message.
fn snippet(text: &str) -> String {
    match text.char_indices().nth(MAX_SNIPPET_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(text: &str) -> KeyFile {
        KeyFile::parse(text).unwrap_or_else(|err| panic!("parse failed: {err}\n{text}"))
    }

    fn assert_round_trip(text: &str) {
        assert_eq!(parse(text).to_string(), text);
    }

    /// `ostree --repo=R init --mode=archive` (ostree 2022.7, GLib 2.74).
    const OSTREE_INIT: &str = "[core]\nrepo_version=1\nmode=archive-z2\n";

    /// Then `ostree --repo=R remote add --no-gpg-verify origin http://127.0.0.1/repo`.
    const OSTREE_REMOTE_ADD: &str = "[core]\n\
        repo_version=1\n\
        mode=archive-z2\n\
        \n\
        [remote \"origin\"]\n\
        url=http://127.0.0.1/repo\n\
        gpg-verify=false\n";

    /// Then `ostree --repo=R config set core.foo bar`.
    const OSTREE_CONFIG_SET: &str = "[core]\n\
        repo_version=1\n\
        mode=archive-z2\n\
        foo=bar\n\
        \n\
        [remote \"origin\"]\n\
        url=http://127.0.0.1/repo\n\
        gpg-verify=false\n";

    /// Then `ostree remote add --no-gpg-verify --set=branches='main;dev;'
    /// --set=tls-permissive=1 other http://127.0.0.1/other`.
    const OSTREE_SECOND_REMOTE: &str = "[core]\n\
        repo_version=1\n\
        mode=archive-z2\n\
        foo=bar\n\
        \n\
        [remote \"origin\"]\n\
        url=http://127.0.0.1/repo\n\
        gpg-verify=false\n\
        \n\
        [remote \"other\"]\n\
        url=http://127.0.0.1/other\n\
        branches=main;dev;\n\
        tls-permissive=1\n\
        gpg-verify=false\n";

    /// Then `ostree remote delete origin`.
    const OSTREE_DELETE_ORIGIN: &str = "[core]\n\
        repo_version=1\n\
        mode=archive-z2\n\
        foo=bar\n\
        \n\
        [remote \"other\"]\n\
        url=http://127.0.0.1/other\n\
        branches=main;dev;\n\
        tls-permissive=1\n\
        gpg-verify=false\n";

    /// Then `ostree remote delete other`.
    const OSTREE_DELETE_OTHER: &str = "[core]\nrepo_version=1\nmode=archive-z2\nfoo=bar\n";

    const COMMENTED: &str = "# Repository configuration\n\
        \n\
        [core]\n\
        # the format version\n\
        repo_version = 1\n\
        \x20 mode=archive-z2\n\
        \n\
        \n\
        # the main remote\n\
        [remote \"origin\"]  \n\
        url=http://example.com/repo\n\
        \t\n\
        gpg-verify=false\n";

    #[test]
    fn real_ostree_configs_round_trip() {
        for text in [
            OSTREE_INIT,
            OSTREE_REMOTE_ADD,
            OSTREE_CONFIG_SET,
            OSTREE_SECOND_REMOTE,
            OSTREE_DELETE_ORIGIN,
            OSTREE_DELETE_OTHER,
        ] {
            assert_round_trip(text);
        }
        let kf = parse(OSTREE_SECOND_REMOTE);
        assert_eq!(
            kf.groups().collect::<Vec<_>>(),
            ["core", "remote \"origin\"", "remote \"other\""]
        );
        assert_eq!(kf.get_u64("core", "repo_version"), Ok(Some(1)));
        assert_eq!(kf.get("core", "mode").as_deref(), Some("archive-z2"));
        assert_eq!(kf.get("core", "foo").as_deref(), Some("bar"));
        assert_eq!(
            kf.get("remote \"origin\"", "url").as_deref(),
            Some("http://127.0.0.1/repo")
        );
        assert_eq!(
            kf.get_bool("remote \"origin\"", "gpg-verify"),
            Ok(Some(false))
        );
        assert_eq!(
            kf.get_bool("remote \"other\"", "tls-permissive"),
            Ok(Some(true))
        );
        assert_eq!(
            kf.get_list("remote \"other\"", "branches"),
            Some(vec!["main".to_owned(), "dev".to_owned()])
        );
        assert_eq!(
            kf.keys("remote \"other\"").collect::<Vec<_>>(),
            ["url", "branches", "tls-permissive", "gpg-verify"]
        );
    }

    /// The same edits ostree made give the same bytes ostree wrote.
    #[test]
    fn edits_match_ostree_output() {
        let mut kf = parse(OSTREE_INIT);
        kf.set("remote \"origin\"", "url", "http://127.0.0.1/repo")
            .unwrap();
        kf.set_bool("remote \"origin\"", "gpg-verify", false)
            .unwrap();
        assert_eq!(kf.to_string(), OSTREE_REMOTE_ADD);

        kf.set("core", "foo", "bar").unwrap();
        assert_eq!(kf.to_string(), OSTREE_CONFIG_SET);

        let other = "remote \"other\"";
        kf.set(other, "url", "http://127.0.0.1/other").unwrap();
        kf.set_list(other, "branches", ["main", "dev"]).unwrap();
        kf.set_u64(other, "tls-permissive", 1).unwrap();
        kf.set_bool(other, "gpg-verify", false).unwrap();
        assert_eq!(kf.to_string(), OSTREE_SECOND_REMOTE);

        assert!(kf.remove_group("remote \"origin\""));
        assert_eq!(kf.to_string(), OSTREE_DELETE_ORIGIN);
        assert!(kf.remove_group(other));
        assert_eq!(kf.to_string(), OSTREE_DELETE_OTHER);
    }

    /// `ostree config set 'remote "origin".url' ' lead  trail '` writes
    /// `url=\slead  trail ` (GLib escapes leading but not trailing spaces).
    #[test]
    fn leading_space_escaped_like_ostree() {
        let mut kf = parse(OSTREE_REMOTE_ADD);
        kf.set("remote \"origin\"", "url", " lead  trail ").unwrap();
        assert!(kf.to_string().contains("\nurl=\\slead  trail \n"));
        assert_eq!(
            kf.get("remote \"origin\"", "url").as_deref(),
            Some(" lead  trail ")
        );
    }

    #[test]
    fn round_trips_preserve_everything() {
        for text in [
            "",
            "\n",
            "\n\n\n",
            "# only a comment",
            "# only a comment\n",
            "[g]",
            "[g]\n",
            "[g]\nk=v",
            "[g]\r\nk=v\r\n\r\n# c\r\n",
            "[g]\r\nk=v\r",
            "  \t\n[g]\t \n  k  =  v  \n\x0c \n\x0bk\x0b=\x0bv\x0b\n",
            "[g]\nk=\nk2=   \n",
            "[g]\nname[de]=Hallo\nname[sr@latin]=x\nname=Hello\n",
            "[g]\nk=a;b\\;c;;\n",
            "[a]\nx=1\n[b]\ny=2\n[a]\nz=3\n",
            "[g]\nmulti word key = value with = signs\n",
            "[g]\nk=\u{1F600} unicode \u{e9}\n",
            COMMENTED,
        ] {
            assert_round_trip(text);
        }
    }

    #[test]
    fn parses_commented_file() {
        let kf = parse(COMMENTED);
        assert_eq!(
            kf.groups().collect::<Vec<_>>(),
            ["core", "remote \"origin\""]
        );
        assert_eq!(kf.get("core", "repo_version").as_deref(), Some("1"));
        assert_eq!(kf.get("core", "mode").as_deref(), Some("archive-z2"));
        assert_eq!(
            kf.keys("core").collect::<Vec<_>>(),
            ["repo_version", "mode"]
        );
        assert_eq!(
            kf.get_bool("remote \"origin\"", "gpg-verify"),
            Ok(Some(false))
        );
        assert!(kf.has_group("remote \"origin\""));
        assert!(!kf.has_group("remote \"other\""));
        assert!(!kf.has_group("remote"));
        assert!(kf.has_key("core", "mode"));
        assert!(!kf.has_key("core", "url"));
    }

    #[test]
    fn whitespace_rules_follow_glib() {
        let kf = parse("[g]\n  key \t=  \t value with trailing  \nempty=\nspaces=   \n");
        // Whitespace around the key and before the value goes; trailing stays.
        assert_eq!(kf.get("g", "key").as_deref(), Some("value with trailing  "));
        assert_eq!(kf.get_raw("g", "key"), Some("value with trailing  "));
        assert_eq!(kf.get("g", "empty").as_deref(), Some(""));
        assert_eq!(kf.get("g", "spaces").as_deref(), Some(""));
        assert_eq!(kf.get("g", "missing"), None);
        assert_eq!(kf.get("nogroup", "key"), None);
        // Only spaces and tabs may follow a group header's ']'.
        let kf = parse("[a b] \t\n[ c ]\nk=v\n");
        assert_eq!(kf.groups().collect::<Vec<_>>(), ["a b", " c "]);
        assert_eq!(kf.get(" c ", "k").as_deref(), Some("v"));
        // GLib's whitespace excludes vertical tab, so it stays in keys and
        // values.
        let kf = parse("[g]\n\x0bk\x0b = \x0bv\x0b\n");
        assert_eq!(kf.keys("g").collect::<Vec<_>>(), ["\x0bk\x0b"]);
        assert_eq!(kf.get("g", "\x0bk\x0b").as_deref(), Some("\x0bv\x0b"));
        assert_eq!(
            KeyFile::parse("[g]\n\x0b\n"),
            Err(KeyFileError::BadLine {
                line: 2,
                text: "\x0b".into()
            })
        );
        // CRLF: the '\r' is not part of the value.
        let kf = parse("[g]\r\nk=v\r\n");
        assert_eq!(kf.get("g", "k").as_deref(), Some("v"));
    }

    #[test]
    fn duplicates_merge_and_last_value_wins() {
        let text = "[a]\nx=1\nx=2\n[b]\nx=b\n[a]\ny=3\nx=4\n";
        let kf = parse(text);
        assert_eq!(kf.groups().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(kf.get("a", "x").as_deref(), Some("4"));
        assert_eq!(kf.get("a", "y").as_deref(), Some("3"));
        assert_eq!(kf.get("b", "x").as_deref(), Some("b"));
        assert_eq!(kf.keys("a").collect::<Vec<_>>(), ["x", "y"]);
        assert_eq!(kf.keys("zzz").count(), 0);

        let mut kf = parse(text);
        kf.set("a", "x", "new").unwrap();
        assert_eq!(kf.to_string(), "[a]\nx=1\nx=2\n[b]\nx=b\n[a]\ny=3\nx=new\n");
        kf.set("a", "z", "5").unwrap();
        assert_eq!(
            kf.to_string(),
            "[a]\nx=1\nx=2\n[b]\nx=b\n[a]\ny=3\nx=new\nz=5\n"
        );
        assert!(kf.remove_key("a", "x"));
        assert_eq!(kf.to_string(), "[a]\n[b]\nx=b\n[a]\ny=3\nz=5\n");
        assert_eq!(kf.get("a", "x"), None);
        assert!(kf.remove_group("a"));
        assert_eq!(kf.to_string(), "[b]\nx=b\n");
    }

    #[test]
    fn locale_keys_are_distinct_keys() {
        let kf = parse("[g]\nName=Hello\nName[de]=Hallo\n");
        assert_eq!(kf.get("g", "Name").as_deref(), Some("Hello"));
        assert_eq!(kf.get("g", "Name[de]").as_deref(), Some("Hallo"));
        assert_eq!(kf.keys("g").collect::<Vec<_>>(), ["Name", "Name[de]"]);
        let mut kf = kf;
        kf.set("g", "Name[fr]", "Bonjour").unwrap();
        assert_eq!(
            kf.to_string(),
            "[g]\nName=Hello\nName[de]=Hallo\nName[fr]=Bonjour\n"
        );
    }

    #[test]
    fn set_replaces_in_place_keeping_layout() {
        let mut kf = parse(COMMENTED);
        kf.set("core", "repo_version", "2").unwrap();
        kf.set("core", "mode", "bare").unwrap();
        let expected = COMMENTED
            .replace("repo_version = 1", "repo_version = 2")
            .replace("mode=archive-z2", "mode=bare");
        assert_eq!(kf.to_string(), expected);
        assert_eq!(kf.get("core", "repo_version").as_deref(), Some("2"));

        // Replacing an empty value drops the whitespace after '='.
        let mut kf = parse("[g]\na=   \nb = \n");
        kf.set("g", "a", "x").unwrap();
        kf.set("g", "b", "y").unwrap();
        assert_eq!(kf.to_string(), "[g]\na=x\nb =y\n");
        kf.set("g", "a", "").unwrap();
        assert_eq!(kf.to_string(), "[g]\na=\nb =y\n");
    }

    #[test]
    fn set_appends_after_last_key_of_group() {
        let mut kf = parse(COMMENTED);
        kf.set("core", "foo", "bar").unwrap();
        // After "mode", before the blank lines and the next group's comment.
        let expected = COMMENTED.replace("mode=archive-z2\n", "mode=archive-z2\nfoo=bar\n");
        assert_eq!(kf.to_string(), expected);

        // A group with no keys gets the key right after its header.
        let mut kf = parse("[a]\n# commented=out\n\n[b]\n");
        kf.set("a", "k", "v").unwrap();
        assert_eq!(kf.to_string(), "[a]\nk=v\n# commented=out\n\n[b]\n");
        kf.set("b", "k", "v").unwrap();
        assert_eq!(kf.to_string(), "[a]\nk=v\n# commented=out\n\n[b]\nk=v\n");

        // The last line of the file without a newline.
        let mut kf = parse("[a]\nx=1");
        kf.set("a", "y", "2").unwrap();
        assert_eq!(kf.to_string(), "[a]\nx=1\ny=2\n");
        let mut kf = parse("[a]\nx=1\n# trailing");
        kf.set("a", "y", "2").unwrap();
        assert_eq!(kf.to_string(), "[a]\nx=1\ny=2\n# trailing");
    }

    #[test]
    fn set_creates_groups_at_end() {
        let mut kf = KeyFile::new();
        kf.set("core", "repo_version", "1").unwrap();
        assert_eq!(kf.to_string(), "[core]\nrepo_version=1\n");
        kf.set("remote \"a\"", "url", "u").unwrap();
        assert_eq!(
            kf.to_string(),
            "[core]\nrepo_version=1\n\n[remote \"a\"]\nurl=u\n"
        );

        // No extra blank line when the file already ends with one.
        let mut kf = parse("[core]\nx=1\n\n");
        kf.set("new", "k", "v").unwrap();
        assert_eq!(kf.to_string(), "[core]\nx=1\n\n[new]\nk=v\n");

        // A separator after comments and after a missing final newline.
        let mut kf = parse("# header");
        kf.set("new", "k", "v").unwrap();
        assert_eq!(kf.to_string(), "# header\n\n[new]\nk=v\n");

        // New lines follow the file's CRLF convention.
        let mut kf = parse("[core]\r\nx=1\r\n");
        kf.set("core", "y", "2").unwrap();
        kf.set("new", "k", "v").unwrap();
        assert_eq!(
            kf.to_string(),
            "[core]\r\nx=1\r\ny=2\r\n\r\n[new]\r\nk=v\r\n"
        );
        let mut kf = parse("[core]\r\nx=1");
        kf.set("new", "k", "v").unwrap();
        assert_eq!(kf.to_string(), "[core]\r\nx=1\r\n\r\n[new]\r\nk=v\r\n");
    }

    #[test]
    fn remove_key_behaviour() {
        let mut kf = parse(COMMENTED);
        assert!(kf.remove_key("core", "repo_version"));
        assert_eq!(kf.to_string(), COMMENTED.replace("repo_version = 1\n", ""));
        assert!(!kf.remove_key("core", "repo_version"));
        assert!(!kf.remove_key("nogroup", "mode"));
        // Only the named group is affected.
        let mut kf = parse("[a]\nk=1\n[b]\nk=2\n");
        assert!(kf.remove_key("b", "k"));
        assert_eq!(kf.to_string(), "[a]\nk=1\n[b]\n");
        assert!(kf.has_group("b"));
        // Removing an unterminated last line keeps the previous newline.
        let mut kf = parse("[a]\nx=1\ny=2");
        assert!(kf.remove_key("a", "y"));
        assert_eq!(kf.to_string(), "[a]\nx=1\n");
    }

    #[test]
    fn remove_group_behaviour() {
        let text = "# top\n\n[a]\nx=1\n\n# about b\n[b]\ny=2\n# inside b\n\n[c]\nz=3\n";
        let mut kf = parse(text);
        assert!(kf.remove_group("b"));
        assert_eq!(kf.to_string(), "# top\n\n[a]\nx=1\n\n# about b\n[c]\nz=3\n");
        assert!(!kf.remove_group("b"));
        assert!(kf.remove_group("c"));
        assert_eq!(kf.to_string(), "# top\n\n[a]\nx=1\n\n# about b\n");
        assert!(kf.remove_group("a"));
        assert_eq!(kf.to_string(), "# top\n");
        assert_eq!(kf.groups().count(), 0);

        // Blank lines that only separated a removed last group go too.
        let mut kf = parse("[a]\nx=1\n\n\n[b]\ny=2");
        assert!(kf.remove_group("b"));
        assert_eq!(kf.to_string(), "[a]\nx=1\n");
        let mut kf = parse("[a]\nx=1\n");
        assert!(kf.remove_group("a"));
        assert_eq!(kf.to_string(), "");
        // And the group can be re-created.
        kf.set("a", "x", "2").unwrap();
        assert_eq!(kf.to_string(), "[a]\nx=2\n");
    }

    #[test]
    fn escapes_are_decoded() {
        let kf = parse(
            "[g]\n\
             a=\\sleading\n\
             b=tab\\there\n\
             c=line\\nbreak\\r\n\
             d=back\\\\slash\n\
             e=not\\xvalid\n\
             f=trailing\\\n\
             g=semi\\;colon\n\
             h=\\\\s\n",
        );
        assert_eq!(kf.get("g", "a").as_deref(), Some(" leading"));
        assert_eq!(kf.get("g", "b").as_deref(), Some("tab\there"));
        assert_eq!(kf.get("g", "c").as_deref(), Some("line\nbreak\r"));
        assert_eq!(kf.get("g", "d").as_deref(), Some("back\\slash"));
        // Invalid escapes are kept literally (GLib refuses such values).
        assert_eq!(kf.get("g", "e").as_deref(), Some("not\\xvalid"));
        assert_eq!(kf.get("g", "f").as_deref(), Some("trailing\\"));
        assert_eq!(kf.get("g", "g").as_deref(), Some("semi\\;colon"));
        assert_eq!(kf.get("g", "h").as_deref(), Some("\\s"));
        assert_eq!(kf.get_raw("g", "a"), Some("\\sleading"));
    }

    #[test]
    fn values_are_escaped_like_glib() {
        let cases = [
            (" x", "\\sx"),
            ("  x y ", "\\s\\sx y "),
            ("\tx\t", "\\tx\t"),
            (" \t x", "\\s\\t\\sx"),
            ("a\nb\rc", "a\\nb\\rc"),
            ("\n x", "\\n\\sx"),
            ("back\\slash", "back\\\\slash"),
            ("\\ x", "\\\\ x"),
            ("semi;colon", "semi;colon"),
            ("#not a comment", "#not a comment"),
            ("[not a group]", "[not a group]"),
            ("a=b", "a=b"),
            ("", ""),
        ];
        for (value, raw) in cases {
            let mut kf = KeyFile::new();
            kf.set("g", "k", value).unwrap();
            assert_eq!(kf.to_string(), format!("[g]\nk={raw}\n"), "value {value:?}");
            let reparsed = parse(&kf.to_string());
            assert_eq!(reparsed.get("g", "k").as_deref(), Some(value));
        }
    }

    #[test]
    fn lists() {
        let kf = parse(
            "[g]\n\
             a=x;y;z\n\
             b=x;y;\n\
             c=\n\
             d=;\n\
             e=x;;\n\
             f=x\\;y;z\n\
             g=\\sx; y\n\
             h=one\n\
             i=;;\n",
        );
        let list = |key| kf.get_list("g", key).unwrap();
        assert_eq!(list("a"), ["x", "y", "z"]);
        assert_eq!(list("b"), ["x", "y"]);
        assert_eq!(list("c"), Vec::<String>::new());
        assert_eq!(list("d"), [""]);
        assert_eq!(list("e"), ["x", ""]);
        assert_eq!(list("f"), ["x;y", "z"]);
        assert_eq!(list("g"), [" x", " y"]);
        assert_eq!(list("h"), ["one"]);
        assert_eq!(list("i"), ["", ""]);
        assert_eq!(kf.get_list("g", "missing"), None);

        let mut kf = KeyFile::new();
        kf.set_list("g", "k", ["a", "b;c", " d", "", "e\\"])
            .unwrap();
        assert_eq!(kf.to_string(), "[g]\nk=a;b\\;c;\\sd;;e\\\\;\n");
        assert_eq!(
            kf.get_list("g", "k").unwrap(),
            ["a", "b;c", " d", "", "e\\"]
        );
        kf.set_list("g", "k", Vec::<String>::new()).unwrap();
        assert_eq!(kf.to_string(), "[g]\nk=\n");
        assert_eq!(kf.get_list("g", "k").unwrap(), Vec::<String>::new());
        kf.set_list("g", "k", [""]).unwrap();
        assert_eq!(kf.get_list("g", "k").unwrap(), [""]);
    }

    #[test]
    fn booleans_and_integers() {
        let kf = parse(
            "[g]\n\
             t=true\n\
             f=false\n\
             one=1\n\
             zero=0\n\
             padded=true \t\n\
             upper=True\n\
             yes=yes\n\
             n=18446744073709551615\n\
             big=18446744073709551616\n\
             neg=-1\n\
             plus=+1\n\
             hex=0x10\n\
             empty=\n",
        );
        assert_eq!(kf.get_bool("g", "t"), Ok(Some(true)));
        assert_eq!(kf.get_bool("g", "f"), Ok(Some(false)));
        assert_eq!(kf.get_bool("g", "one"), Ok(Some(true)));
        assert_eq!(kf.get_bool("g", "zero"), Ok(Some(false)));
        assert_eq!(kf.get_bool("g", "padded"), Ok(Some(true)));
        assert_eq!(kf.get_bool("g", "missing"), Ok(None));
        assert_eq!(kf.get_bool("missing", "t"), Ok(None));
        let err = kf.get_bool("g", "upper").unwrap_err();
        assert_eq!(
            err,
            KeyFileError::InvalidValue {
                line: 7,
                group: "g".into(),
                key: "upper".into(),
                value: "True".into(),
                expected: "a boolean",
            }
        );
        assert_eq!(
            err.to_string(),
            "line 7: value \"True\" of key \"upper\" in group [g] is not a boolean"
        );
        assert!(kf.get_bool("g", "yes").is_err());
        assert!(kf.get_bool("g", "empty").is_err());

        assert_eq!(kf.get_u64("g", "one"), Ok(Some(1)));
        assert_eq!(kf.get_u64("g", "n"), Ok(Some(u64::MAX)));
        assert_eq!(kf.get_u64("g", "missing"), Ok(None));
        for key in ["big", "neg", "plus", "hex", "empty", "t"] {
            assert!(
                matches!(kf.get_u64("g", key), Err(KeyFileError::InvalidValue { .. })),
                "{key}"
            );
        }

        let mut kf = KeyFile::new();
        kf.set_bool("g", "b", true).unwrap();
        kf.set_u64("g", "n", 42).unwrap();
        assert_eq!(kf.to_string(), "[g]\nb=true\nn=42\n");
        kf.set_bool("g", "b", false).unwrap();
        assert_eq!(kf.get_bool("g", "b"), Ok(Some(false)));
        assert_eq!(kf.get_u64("g", "n"), Ok(Some(42)));
    }

    #[test]
    fn parse_errors_name_the_line() {
        let cases: &[(&str, KeyFileError)] = &[
            (
                "# c\n\nkey=value\n[g]\n",
                KeyFileError::KeyOutsideGroup {
                    line: 3,
                    key: "key".into(),
                },
            ),
            (
                "[g]\nk=v\njust some text\n",
                KeyFileError::BadLine {
                    line: 3,
                    text: "just some text".into(),
                },
            ),
            (
                "[g]\n=value\n",
                KeyFileError::BadLine {
                    line: 2,
                    text: "=value".into(),
                },
            ),
            (
                "[g]\n  \t= value\n",
                KeyFileError::BadLine {
                    line: 2,
                    text: "  \t= value".into(),
                },
            ),
            (
                "[g]\n[g]x\n",
                KeyFileError::BadLine {
                    line: 2,
                    text: "[g]x".into(),
                },
            ),
            (
                "[g\n",
                KeyFileError::BadLine {
                    line: 1,
                    text: "[g".into(),
                },
            ),
            (
                "[]\n",
                KeyFileError::BadGroupHeader {
                    line: 1,
                    name: "".into(),
                },
            ),
            (
                "[a]\n[b[c]\n",
                KeyFileError::BadGroupHeader {
                    line: 2,
                    name: "b[c".into(),
                },
            ),
            (
                "[a\x01]\n",
                KeyFileError::BadGroupHeader {
                    line: 1,
                    name: "a\x01".into(),
                },
            ),
            (
                "[g]\nk]=v\n",
                KeyFileError::BadKey {
                    line: 2,
                    key: "k]".into(),
                },
            ),
            (
                "[g]\nk[de=v\n",
                KeyFileError::BadKey {
                    line: 2,
                    key: "k[de".into(),
                },
            ),
            (
                "[g]\nk[d e]=v\n",
                KeyFileError::BadKey {
                    line: 2,
                    key: "k[d e]".into(),
                },
            ),
            (
                "[g]\nk[de]x=v\n",
                KeyFileError::BadKey {
                    line: 2,
                    key: "k[de]x".into(),
                },
            ),
            ("[g]\nk=v\nx=a\0b\n", KeyFileError::NulByte { line: 3 }),
        ];
        for (text, expected) in cases {
            assert_eq!(KeyFile::parse(text).as_ref(), Err(expected), "{text:?}");
        }
        assert_eq!(
            KeyFile::parse("[g]\nk=v\ngarbage\n")
                .unwrap_err()
                .to_string(),
            "line 3: expected a [group] header, a key=value pair or a # comment, \
             found \"garbage\""
        );
        assert_eq!(
            KeyFile::parse("x=1\n").unwrap_err().to_string(),
            "line 1: key \"x\" appears before the first [group] header"
        );
    }

    #[test]
    fn long_lines_are_cut_in_errors() {
        let text = format!("[g]\n{}\n", "x".repeat(10_000));
        let err = KeyFile::parse(&text).unwrap_err();
        let KeyFileError::BadLine { line, text } = &err else {
            panic!("unexpected {err:?}");
        };
        assert_eq!(*line, 2);
        assert_eq!(text.chars().count(), MAX_SNIPPET_CHARS + 1);
        assert!(err.to_string().len() < 200);
    }

    #[test]
    fn size_limit() {
        let mut text = String::from("[g]\n");
        while text.len() < MAX_SIZE {
            text.push_str("# padding padding padding padding\n");
        }
        text.truncate(MAX_SIZE);
        text.pop();
        text.push('\n');
        assert!(KeyFile::parse(&text).is_ok());
        text.push('\n');
        assert_eq!(
            KeyFile::parse(&text),
            Err(KeyFileError::TooLarge {
                size: MAX_SIZE + 1,
                limit: MAX_SIZE,
            })
        );
        assert!(matches!(
            KeyFile::parse_bytes(text.as_bytes()),
            Err(KeyFileError::TooLarge { .. })
        ));
    }

    #[test]
    fn parse_bytes_checks_utf8() {
        assert_eq!(
            KeyFile::parse_bytes(b"[g]\nk=v\nbad=\xff\n"),
            Err(KeyFileError::InvalidUtf8 { line: 3 })
        );
        assert_eq!(
            KeyFile::parse_bytes(OSTREE_CONFIG_SET.as_bytes()),
            KeyFile::parse(OSTREE_CONFIG_SET)
        );
        assert_eq!(
            "[g]\nk=v\n".parse::<KeyFile>().map(|kf| kf.get("g", "k")),
            Ok(Some("v".to_owned()))
        );
    }

    #[test]
    fn set_refuses_unwritable_names_and_values() {
        let mut kf = parse(OSTREE_INIT);
        for group in ["", "a]b", "a[b", "line\nbreak", "tab\there", "del\x7f"] {
            assert_eq!(
                kf.set(group, "k", "v"),
                Err(KeyFileError::InvalidGroupName {
                    group: group.into()
                })
            );
        }
        for key in [
            "", "a=b", "#comment", " lead", "trail ", "trail\t", "\tlead", "a\nb", "a]", "[a]",
            "a[b", "a[b c]", "a [b]", "nul\0",
        ] {
            assert_eq!(
                kf.set("core", key, "v"),
                Err(KeyFileError::InvalidKeyName { key: key.into() }),
                "{key:?}"
            );
            assert!(kf.set_bool("core", key, true).is_err());
            assert!(kf.set_list("core", key, ["x"]).is_err());
        }
        for value in ["a\0b", "\x0cff", "\x0c"] {
            assert_eq!(
                kf.set("core", "k", value),
                Err(KeyFileError::UnrepresentableValue {
                    value: value.into()
                })
            );
            assert!(kf.set_list("core", "k", [value]).is_err());
        }
        // Nothing was written by the failed calls.
        assert_eq!(kf.to_string(), OSTREE_INIT);
        // Allowed: inner spaces, locale suffixes, odd but valid group names.
        kf.set("core", "a key", "v").unwrap();
        kf.set("core", "k[en_US.UTF-8@euro]", "v").unwrap();
        kf.set("remote \"x y\"", "k", "\x0bvt").unwrap();
        kf.set_list("core", "l", ["x", "\x0cy"]).unwrap();
        let reparsed = parse(&kf.to_string());
        assert_eq!(
            reparsed.get("remote \"x y\"", "k").as_deref(),
            Some("\x0bvt")
        );
        assert_eq!(reparsed.get_list("core", "l").unwrap(), ["x", "\x0cy"]);
        assert_eq!(
            reparsed.get("core", "k[en_US.UTF-8@euro]").as_deref(),
            Some("v")
        );
    }

    /// Key-file-like text: mostly well-formed lines whose contents are drawn
    /// from characters that matter to the syntax, some lines of garbage.
    fn keyfile_like() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            4 => prop::sample::select(vec![
                "[", "]", "=", "#", ";", "\\", "\\s", "\\;", " ", "\t", "\r", "\x0b", "\x0c",
                "x", "true", "0", "\u{e9}",
            ])
            .prop_map(str::to_owned),
            1 => any::<char>().prop_map(String::from),
        ];
        let text = prop::collection::vec(piece, 0..8).prop_map(|parts| parts.concat());
        let line = prop_oneof![
            4 => (text.clone(), text.clone()).prop_map(|(k, v)| format!("k{k}={v}")),
            1 => text.clone().prop_map(|name| format!("[g{name}]")),
            1 => text.clone().prop_map(|comment| format!("#{comment}")),
            1 => Just(String::new()),
            1 => text,
        ];
        (
            prop::collection::vec(line, 0..12),
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(|(lines, crlf, final_newline)| {
                let sep = if crlf { "\r\n" } else { "\n" };
                let mut text = format!("[core]{sep}{}", lines.join(sep));
                if final_newline {
                    text.push_str(sep);
                }
                text
            })
    }

    /// Exercises every read accessor of a parsed file.
    fn read_everything(kf: &KeyFile) {
        for group in kf.groups() {
            assert!(kf.has_group(group));
            for key in kf.keys(group) {
                assert!(kf.get(group, key).is_some());
                assert!(kf.get_list(group, key).is_some());
                let _ = kf.get_bool(group, key);
                let _ = kf.get_u64(group, key);
            }
        }
    }

    proptest! {
        #[test]
        fn arbitrary_text_never_panics(text in any::<String>()) {
            if let Ok(kf) = KeyFile::parse(&text) {
                prop_assert_eq!(kf.to_string(), text);
                read_everything(&kf);
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            let _ = KeyFile::parse_bytes(&bytes);
        }

        #[test]
        fn keyfile_like_text_round_trips(text in keyfile_like()) {
            if let Ok(mut kf) = KeyFile::parse(&text) {
                prop_assert_eq!(&kf.to_string(), &text);
                read_everything(&kf);
                let groups: Vec<String> = kf.groups().map(str::to_owned).collect();
                for group in &groups {
                    let keys: Vec<String> = kf.keys(group).map(str::to_owned).collect();
                    for key in &keys {
                        if kf.set(group, key, "new value").is_ok() {
                            let reparsed = KeyFile::parse(&kf.to_string()).unwrap();
                            prop_assert_eq!(reparsed.get(group, key), Some("new value".to_owned()));
                        }
                    }
                    let _ = kf.set(group, "added", "x");
                    let _ = KeyFile::parse(&kf.to_string()).unwrap();
                    kf.remove_key(group, "added");
                    kf.remove_group(group);
                    let reparsed = KeyFile::parse(&kf.to_string()).unwrap();
                    prop_assert!(!reparsed.has_group(group));
                }
            }
        }

        #[test]
        fn set_get_round_trip(
            group in "[^\\[\\]\\x00-\\x1f\\x7f]{1,8}",
            key in "[A-Za-z0-9_-][A-Za-z0-9 _.-]{0,6}[A-Za-z0-9_-]",
            value in any::<String>(),
            items in prop::collection::vec(any::<String>(), 0..5),
        ) {
            let mut kf = KeyFile::parse(OSTREE_CONFIG_SET).unwrap();
            match kf.set(&group, &key, &value) {
                Ok(()) => {
                    let reparsed = KeyFile::parse(&kf.to_string()).unwrap();
                    prop_assert_eq!(reparsed.get(&group, &key), Some(value.clone()));
                    if (group.as_str(), key.as_str()) != ("core", "foo") {
                        prop_assert_eq!(reparsed.get("core", "foo"), Some("bar".to_owned()));
                    }
                }
                Err(_) => prop_assert!(
                    value.contains('\0') || value.starts_with('\x0c')
                ),
            }
            if kf.set_list(&group, &key, &items).is_ok() {
                let reparsed = KeyFile::parse(&kf.to_string()).unwrap();
                prop_assert_eq!(reparsed.get_list(&group, &key), Some(items));
            }
        }
    }
}
