//! Text from clients in log lines, escaped: the one rule for every log
//! line of this crate, and of an app that wants its lines to match (the
//! demo app's error lines and access log use it).
//!
//! A log line is a record only as long as nothing inside it can end it. An
//! error that quotes the client (serde names the unknown field a client
//! sent; a path; a field name a handler refused) would otherwise let a
//! client write a newline and then a line of its own choosing, in the same
//! stream as the access log, or send terminal escapes to whoever reads
//! the log. So every character that could end or disguise a line is shown
//! escaped, as Rust writes it in a string literal: `\n`, `\r`, `\t`,
//! `\u{1b}`, and `\"` and `\\`, so that an escape the client typed reads
//! differently from one written here.

use std::convert::Infallible;
use std::fmt::{self, Write as _};

/// `T`'s `Display` text, with every character that could break or disguise
/// a log line escaped (see the module docs). Costs nothing unless the line
/// is written.
///
/// ```
/// use session::log_text::Escaped;
/// let name = "user\n[FORGED] GET /admin";
/// assert_eq!(
///     format!("unknown field {}", Escaped(name)),
///     r"unknown field user\n[FORGED] GET /admin"
/// );
/// assert_eq!(Escaped("\u{1b}[2J \"a\\b\"").to_string(), r#"\u{1b}[2J \"a\\b\""#);
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Escaped<T>(pub T);

impl<T: fmt::Display> fmt::Display for Escaped<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(EscapingWriter(f), "{}", self.0)
    }
}

/// Passes what it is given on to the formatter, escaped.
struct EscapingWriter<'a, 'b>(&'a mut fmt::Formatter<'b>);

impl fmt::Write for EscapingWriter<'_, '_> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        escape(text, |piece| self.0.write_str(piece))
    }
}

/// Appends `text` to `out`, escaped as [`Escaped`] shows it: for a line
/// built by hand into a byte buffer, as the demo app's access log builds
/// its lines. Plain printable ASCII, the common case, is copied at once.
///
/// ```
/// let mut line = b"GET ".to_vec();
/// session::log_text::push_escaped(&mut line, "/a\tb");
/// assert_eq!(line, br"GET /a\tb");
/// ```
pub fn push_escaped(out: &mut Vec<u8>, text: &str) {
    let plain = |byte: u8| matches!(byte, b' '..=b'~') && byte != b'"' && byte != b'\\';
    if text.bytes().all(plain) {
        out.extend_from_slice(text.as_bytes());
        return;
    }
    let appended: Result<(), Infallible> = escape(text, |piece| {
        out.extend_from_slice(piece.as_bytes());
        Ok(())
    });
    let Ok(()) = appended;
}

/// Whether `c` is shown escaped: `"` and `\`, every control character (C0,
/// DEL and C1, where NEL is a line break to some readers), the Unicode line
/// and paragraph separators, and the marks and overrides that reorder text
/// on screen (a line that reads one way and is another).
fn needs_escape(c: char) -> bool {
    c == '"'
        || c == '\\'
        || c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{061c}' | '\u{200e}' | '\u{200f}'
                | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
}

/// Hands `text` to `write` piece by piece: runs of characters that need no
/// escape as they are, and each one that does as its escape.
fn escape<E>(text: &str, mut write: impl FnMut(&str) -> Result<(), E>) -> Result<(), E> {
    let mut plain_from = 0;
    for (at, c) in text.char_indices() {
        if !needs_escape(c) {
            continue;
        }
        write(&text[plain_from..at])?;
        // `escape_default`: `\n`, `\t`, `\"`, `\\`, `\u{1b}`; ASCII only.
        for shown in c.escape_default() {
            write(shown.encode_utf8(&mut [0; 4]))?;
        }
        plain_from = at + c.len_utf8();
    }
    write(&text[plain_from..])
}

#[cfg(test)]
mod tests {
    use super::{Escaped, push_escaped};

    fn pushed(text: &str) -> String {
        let mut out = Vec::new();
        push_escaped(&mut out, text);
        String::from_utf8(out).expect("UTF-8")
    }

    #[test]
    fn nothing_that_ends_or_disguises_a_line_is_written_raw() {
        let hostile =
            "a\nb\rc\td\u{0}e\u{1b}[31mf\u{7f}g\u{85}h\u{2028}i\u{2029}j\u{202e}k\u{2066}l\u{61c}m";
        let expected = r"a\nb\rc\td\u{0}e\u{1b}[31mf\u{7f}g\u{85}h\u{2028}i\u{2029}j\u{202e}k\u{2066}l\u{61c}m";
        assert_eq!(Escaped(hostile).to_string(), expected);
        assert_eq!(pushed(hostile), expected, "one rule for both");
        for shown in [Escaped(hostile).to_string(), pushed(hostile)] {
            assert!(shown.chars().all(|c| c.is_ascii_graphic()), "{shown}");
        }
    }

    #[test]
    fn quotes_and_backslashes_are_escaped_so_a_typed_escape_reads_apart() {
        assert_eq!(Escaped(r#"a"b\nc"#).to_string(), r#"a\"b\\nc"#);
        assert_eq!(pushed(r#"a"b\nc"#), r#"a\"b\\nc"#);
    }

    #[test]
    fn other_text_passes_whole_utf8_included() {
        let text = "GET /café?q=ü 日本 `x`, 'y' {z} 😀";
        assert_eq!(Escaped(text).to_string(), text);
        assert_eq!(pushed(text), text);
        assert_eq!(pushed(""), "");
    }

    #[test]
    fn display_arguments_of_any_type_are_escaped_as_they_are_written() {
        let error = std::io::Error::other("bad field `x\ny`");
        assert_eq!(
            format!("failed: {}", Escaped(&error)),
            r"failed: bad field `x\ny`"
        );
        assert_eq!(Escaped(format_args!("{}-{}", 1, "\n")).to_string(), r"1-\n");
    }
}
