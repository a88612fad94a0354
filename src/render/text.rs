//! Small text helpers for cards: Markdown escaping of record values and the summary limit.
//!
//! Values that come from the patient record (evidence descriptions, resource ids) are
//! inserted into GitHub-flavoured Markdown. A display text such as `*see note*` or
//! `[C20]` must come out as written, not as emphasis or a link, so the card templates escape
//! every interpolated value (see [`super::Renderer`]'s formatter) with [`escape_markdown`].

/// CDS Hooks: "`summary` ... SHOULD be less than 140 characters".
pub const SUMMARY_MAX_CHARS: usize = 139;

/// Backslash-escapes the characters that start Markdown inline constructs, and folds line
/// breaks into spaces so a value cannot start a new block (heading, list, table row).
pub fn escape_markdown(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for ch in s.chars() {
        match ch {
            '\\' | '`' | '*' | '_' | '[' | ']' | '<' | '>' | '|' | '~' | '#' => {
                out.push('\\');
                out.push(ch);
            }
            '\r' | '\n' => out.push(' '),
            _ => out.push(ch),
        }
    }
    out
}

/// One line: runs of whitespace (including line breaks left by template tags) become one
/// space, and the ends are trimmed.
pub fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// At most `max` characters (not bytes, so multi-byte text is never split inside a
/// character); a cut text ends with an ellipsis, within the limit.
pub fn truncate_chars(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let keep = max.saturating_sub(1);
    let mut out: String = s.chars().take(keep).collect();
    // Do not leave a dangling space before the ellipsis.
    let trimmed = out.trim_end().len();
    out.truncate(trimmed);
    out.push('…');
    out
}

/// Tidies rendered Markdown: no trailing spaces, at most one blank line in a row, no blank
/// lines at either end. Template tags on lines of their own leave such gaps behind, and a
/// policy editor should not have to manage whitespace by hand.
pub fn tidy_markdown(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut blank_run = 0;
    for line in s.lines() {
        let line = line.trim_end();
        if line.is_empty() {
            blank_run += 1;
            if blank_run > 1 || out.is_empty() {
                continue;
            }
        } else {
            blank_run = 0;
        }
        out.push_str(line);
        out.push('\n');
    }
    out.trim_end().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_inline_markdown() {
        assert_eq!(escape_markdown("*x* [C20](y)"), "\\*x\\* \\[C20\\](y)");
        assert_eq!(escape_markdown("a_b|c"), "a\\_b\\|c");
        assert_eq!(escape_markdown("<script>"), "\\<script\\>");
        assert_eq!(escape_markdown("plain 1.5 mm"), "plain 1.5 mm");
    }

    #[test]
    fn line_breaks_cannot_start_blocks() {
        assert_eq!(escape_markdown("a\n# b\r\n- c"), "a \\# b  - c");
    }

    #[test]
    fn tidy_markdown_limits_blank_lines() {
        assert_eq!(tidy_markdown("\n\na  \n\n\n\nb\n- c\n\n"), "a\n\nb\n- c");
    }

    #[test]
    fn one_line_collapses_whitespace() {
        assert_eq!(
            one_line("\n  IORT  meets\n criteria \n"),
            "IORT meets criteria"
        );
    }

    #[test]
    fn truncation_respects_char_boundaries_and_limit() {
        let s = "é".repeat(200);
        let t = truncate_chars(&s, SUMMARY_MAX_CHARS);
        assert_eq!(t.chars().count(), SUMMARY_MAX_CHARS);
        assert!(t.ends_with('…'));
        assert_eq!(truncate_chars("short", 10), "short");
        assert_eq!(truncate_chars("abcd efgh", 6), "abcd…");
        let exact = "x".repeat(SUMMARY_MAX_CHARS);
        assert_eq!(truncate_chars(&exact, SUMMARY_MAX_CHARS), exact);
    }
}
