//! The one policy for untrusted text: file names, process names, labels,
//! Dockerfile instructions, container and image names. Each output has one
//! function here and uses nothing else:
//!
//! - terminal, live view and `layers`: [`terminal`] / [`terminal_bytes`];
//! - HTML: [`html`] / [`html_bytes`];
//! - Prometheus label values: [`prometheus_label`];
//! - JSON: the exact text (serde_json escapes what JSON needs); paths that are
//!   not UTF-8 also go out as base64 bytes.
//!
//! Whatever a container controls must not move the cursor, change colours,
//! or reorder what a reader sees (a name `evil\u{202e}txt.exe` displays as
//! `evilexe.txt`). So control characters and invisible formatting characters
//! are shown as escapes, and backslashes are doubled to keep that unambiguous.

use std::fmt::Write as _;

/// Characters that change how the text around them is laid out without being
/// visible: bidi marks, embeddings, overrides and isolates, zero-width
/// characters, line and paragraph separators, the BOM, interlinear annotation.
fn is_hidden(c: char) -> bool {
    matches!(
        c as u32,
        0x00AD | 0x061C | 0x180E | 0x200B..=0x200F | 0x2028..=0x202E | 0x2060..=0x206F
            | 0xFEFF | 0xFFF9..=0xFFFB
    )
}

/// Untrusted text made printable and unambiguous for a terminal: `\`, `\n`,
/// `\t`, `\r` escaped; other control characters (C0, DEL, C1) and hidden
/// formatting characters as `\u{1b}`.
pub fn terminal(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    push_visible(&mut out, s);
    out
}

/// Raw bytes (a path that need not be UTF-8) for a terminal: valid UTF-8 as
/// [`terminal`] shows it, other bytes as `\xNN`.
pub fn terminal_bytes(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        push_visible(&mut out, chunk.valid());
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out
}

fn push_visible(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() || is_hidden(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
}

/// Escapes `&`, `<`, `>`, `"` and `'`: the result is inert in HTML text and in
/// quoted attribute values. For text the tool wrote itself; untrusted text
/// goes through [`html`].
pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Untrusted text for HTML text or a quoted attribute: made visible as for
/// the terminal, then HTML-escaped.
pub fn html(s: &str) -> String {
    escape_html(&terminal(s))
}

/// Raw bytes for HTML: [`terminal_bytes`], then HTML-escaped.
pub fn html_bytes(bytes: &[u8]) -> String {
    escape_html(&terminal_bytes(bytes))
}

/// A Prometheus label value: made visible as for the terminal (a label shown
/// in Grafana must not reorder a legend either), then the format's own
/// escapes (backslash, double quote, line feed).
pub fn prometheus_label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for ch in v.chars() {
        match ch {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c if c.is_control() || is_hidden(c) => {
                let _ = write!(out, "\\\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Everything a hostile container can put in a name.
    const HOSTILE: &str = "a\x1b[2Jb\rc\0d\u{202a}\u{202b}\u{202c}\u{202d}\u{202e}\u{2066}\u{2067}\u{2068}\u{2069}<b>&\"'\\";

    fn no_raw_controls(s: &str) {
        for c in s.chars() {
            assert!(!c.is_control() && !is_hidden(c), "raw {c:?} in {s:?}");
        }
    }

    #[test]
    fn terminal_shows_every_hidden_character() {
        let t = terminal(HOSTILE);
        no_raw_controls(&t);
        assert_eq!(
            t,
            "a\\u{1b}[2Jb\\rc\\u{0}d\\u{202a}\\u{202b}\\u{202c}\\u{202d}\\u{202e}\\u{2066}\\u{2067}\\u{2068}\\u{2069}<b>&\"'\\\\"
        );
    }

    #[test]
    fn bytes_that_are_not_utf8_are_shown_as_hex() {
        assert_eq!(terminal_bytes(b"x\xff\xfe\x1b/y"), "x\\xff\\xfe\\u{1b}/y");
        assert_eq!(html_bytes(b"<\xff>"), "&lt;\\xff&gt;");
    }

    #[test]
    fn html_is_inert_and_visible() {
        let h = html(HOSTILE);
        no_raw_controls(&h);
        assert!(!h.contains('<') && !h.contains('>') && !h.contains('"') && !h.contains('\''));
        assert!(h.contains("&lt;b&gt;&amp;&quot;&#39;"), "{h}");
        assert!(h.contains("\\u{202e}"), "{h}");
    }

    #[test]
    fn prometheus_labels_keep_the_format_and_hide_nothing() {
        let p = prometheus_label(HOSTILE);
        no_raw_controls(&p);
        // The exposition format only knows \\, \" and \n; a visible escape
        // of a control character is written with its backslash escaped.
        assert!(
            p.starts_with("a\\\\u{1b}[2Jb\\\\u{d}c\\\\u{0}d\\\\u{202a}"),
            "{p}"
        );
        assert!(p.ends_with("<b>&\\\"'\\\\"), "{p}");
        assert_eq!(prometheus_label("a\nb"), "a\\nb");
    }
}
