//! The composer's text laid out in rows of the pane's width, with the cursor's place.

use super::text::char_width;

/// Most rows the composer grows to before it scrolls.
pub const MAX_ROWS: usize = 5;

/// `text` broken into rows of at most `width` columns (at `\n` and where a row is full),
/// and the cursor's `(column, row)`.
pub fn layout(text: &str, cursor: usize, width: usize) -> (Vec<String>, (usize, usize)) {
    let width = width.max(2);
    let mut rows = vec![String::new()];
    let mut used = 0;
    let mut at = (0, 0);
    for (i, c) in text.char_indices() {
        if i == cursor {
            at = (used, rows.len() - 1);
        }
        if c == '\n' {
            rows.push(String::new());
            used = 0;
            continue;
        }
        let w = char_width(c);
        if used + w > width {
            rows.push(String::new());
            used = 0;
            if i == cursor {
                at = (0, rows.len() - 1);
            }
        }
        if let Some(row) = rows.last_mut() {
            row.push(c);
        }
        used += w;
    }
    if cursor >= text.len() {
        if used >= width {
            rows.push(String::new());
            used = 0;
        }
        at = (used, rows.len() - 1);
    }
    (rows, at)
}

/// Rows the composer pane needs (text rows, 1 to [`MAX_ROWS`]).
pub fn height(text: &str, cursor: usize, width: usize) -> usize {
    layout(text, cursor, width).0.len().clamp(1, MAX_ROWS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn breaks_at_newlines_and_full_rows() {
        let (rows, at) = layout("ab\ncdef", 7, 3);
        assert_eq!(rows, vec!["ab", "cde", "f"]);
        assert_eq!(at, (1, 2));
    }

    #[test]
    fn wide_chars_do_not_split_across_rows() {
        let (rows, at) = layout("안녕하", 0, 5);
        assert_eq!(rows, vec!["안녕", "하"]);
        assert_eq!(at, (0, 0));
        let (_, at) = layout("안녕하", "안녕".len(), 5);
        assert_eq!(at, (0, 1), "the cursor moves with the char to the next row");
    }

    #[test]
    fn cursor_at_a_full_row_end_goes_to_a_new_row() {
        let (rows, at) = layout("abc", 3, 3);
        assert_eq!(rows, vec!["abc", ""]);
        assert_eq!(at, (0, 1));
        assert_eq!(height("abc", 3, 3), 2);
    }
}
