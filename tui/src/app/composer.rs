//! The message composer: a small multi-line editor with a history of sent texts.
//!
//! It holds text and a cursor (a byte index on a char boundary); the UI decides how to wrap
//! it. Kept free of terminal types so every edit is a plain, testable method.

/// Sent texts remembered for Up/Down recall, at most.
pub const HISTORY_LIMIT: usize = 100;
/// Longest text the composer accepts (a paste beyond it is cut), in bytes.
pub const MAX_COMPOSER_BYTES: usize = 16 * 1024;

/// A multi-line text being written, with recall of earlier texts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Composer {
    /// The text as typed; lines are separated by `\n`.
    text: String,
    /// Byte index of the cursor in `text`, always on a char boundary.
    cursor: usize,
    /// Earlier texts, oldest first, for Up/Down recall.
    history: Vec<String>,
    /// Which history entry is shown, while recalling.
    recall: Option<usize>,
    /// What was being typed before recall started, restored after the newest entry.
    draft: String,
}

impl Composer {
    /// The current text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The cursor as a byte index into [`Self::text`].
    pub fn cursor(&self) -> usize {
        self.cursor
    }

    /// True when nothing is typed.
    pub fn is_empty(&self) -> bool {
        self.text.is_empty()
    }

    /// Replaces the text and puts the cursor at its end.
    pub fn set_text(&mut self, text: &str) {
        self.text = text.to_owned();
        self.cursor = self.text.len();
        self.recall = None;
    }

    /// Empties the composer and returns what it held; a non-blank text joins the history.
    pub fn take(&mut self) -> String {
        let text = std::mem::take(&mut self.text);
        self.cursor = 0;
        self.recall = None;
        self.draft.clear();
        if !text.trim().is_empty() && self.history.last() != Some(&text) {
            if self.history.len() == HISTORY_LIMIT {
                self.history.remove(0);
            }
            self.history.push(text.clone());
        }
        text
    }

    /// Inserts one character at the cursor.
    pub fn insert_char(&mut self, c: char) {
        if self.text.len() + c.len_utf8() > MAX_COMPOSER_BYTES {
            return;
        }
        self.text.insert(self.cursor, c);
        self.cursor += c.len_utf8();
    }

    /// Inserts pasted text at the cursor; `\r\n` and `\r` become `\n`, tabs become spaces,
    /// other control characters are dropped.
    pub fn insert_str(&mut self, pasted: &str) {
        let normalised = pasted.replace("\r\n", "\n").replace('\r', "\n");
        for c in normalised.chars() {
            match c {
                '\n' => self.insert_char('\n'),
                '\t' => self.insert_char(' '),
                c if c.is_control() => {}
                c => self.insert_char(c),
            }
        }
    }

    /// Deletes the character before the cursor.
    pub fn backspace(&mut self) {
        if let Some(c) = self.text[..self.cursor].chars().next_back() {
            self.cursor -= c.len_utf8();
            self.text.remove(self.cursor);
        }
    }

    /// Deletes the character under the cursor.
    pub fn delete(&mut self) {
        if self.cursor < self.text.len() {
            self.text.remove(self.cursor);
        }
    }

    /// Moves one character left.
    pub fn left(&mut self) {
        if let Some(c) = self.text[..self.cursor].chars().next_back() {
            self.cursor -= c.len_utf8();
        }
    }

    /// Moves one character right.
    pub fn right(&mut self) {
        if let Some(c) = self.text[self.cursor..].chars().next() {
            self.cursor += c.len_utf8();
        }
    }

    fn line_start(&self) -> usize {
        self.text[..self.cursor].rfind('\n').map_or(0, |i| i + 1)
    }

    fn line_end(&self) -> usize {
        self.text[self.cursor..]
            .find('\n')
            .map_or(self.text.len(), |i| self.cursor + i)
    }

    /// Moves to the start of the current line.
    pub fn home(&mut self) {
        self.cursor = self.line_start();
    }

    /// Moves to the end of the current line.
    pub fn end(&mut self) {
        self.cursor = self.line_end();
    }

    /// Deletes from the start of the line to the cursor.
    pub fn kill_to_start(&mut self) {
        let start = self.line_start();
        self.text.replace_range(start..self.cursor, "");
        self.cursor = start;
    }

    /// Deletes from the cursor to the end of the line.
    pub fn kill_to_end(&mut self) {
        let end = self.line_end();
        self.text.replace_range(self.cursor..end, "");
    }

    /// Deletes the word before the cursor (and the spaces after it).
    pub fn delete_word(&mut self) {
        let before = &self.text[..self.cursor];
        let trimmed = before.trim_end_matches(' ');
        let start = trimmed
            .rfind([' ', '\n'])
            .map_or(0, |i| i + 1)
            .min(trimmed.len());
        self.text.replace_range(start..self.cursor, "");
        self.cursor = start;
    }

    /// Moves up a line; on the first line, recalls the previous history entry instead.
    pub fn up(&mut self) {
        let start = self.line_start();
        if start == 0 {
            self.recall_older();
            return;
        }
        let column = self.text[start..self.cursor].chars().count();
        let prev_start = self.text[..start - 1].rfind('\n').map_or(0, |i| i + 1);
        self.cursor = advance(&self.text, prev_start, start - 1, column);
    }

    /// Moves down a line; on the last line, recalls the next history entry instead.
    pub fn down(&mut self) {
        let end = self.line_end();
        if end == self.text.len() {
            self.recall_newer();
            return;
        }
        let column = self.text[self.line_start()..self.cursor].chars().count();
        let next_start = end + 1;
        let next_end = self.text[next_start..]
            .find('\n')
            .map_or(self.text.len(), |i| next_start + i);
        self.cursor = advance(&self.text, next_start, next_end, column);
    }

    /// Shows the previous history entry (saving what was typed).
    pub fn recall_older(&mut self) {
        let index = match self.recall {
            Some(0) => return,
            Some(i) => i - 1,
            None if self.history.is_empty() => return,
            None => {
                self.draft = self.text.clone();
                self.history.len() - 1
            }
        };
        self.recall = Some(index);
        self.text = self.history[index].clone();
        self.cursor = self.text.len();
    }

    /// Shows the next history entry, or the saved draft after the newest one.
    pub fn recall_newer(&mut self) {
        let Some(index) = self.recall else { return };
        if index + 1 < self.history.len() {
            self.recall = Some(index + 1);
            self.text = self.history[index + 1].clone();
        } else {
            self.recall = None;
            self.text = std::mem::take(&mut self.draft);
        }
        self.cursor = self.text.len();
    }
}

/// The byte index `column` chars after `start`, but not past `end`.
fn advance(text: &str, start: usize, end: usize, column: usize) -> usize {
    text[start..end]
        .char_indices()
        .nth(column)
        .map_or(end, |(i, _)| start + i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn typed(text: &str) -> Composer {
        let mut c = Composer::default();
        c.insert_str(text);
        c
    }

    #[test]
    fn typing_and_deleting_korean_keeps_char_boundaries() {
        let mut c = typed("안녕하세요");
        c.backspace();
        assert_eq!(c.text(), "안녕하세");
        c.left();
        c.left();
        c.delete();
        assert_eq!(c.text(), "안녕세");
        c.insert_char('🙂');
        assert_eq!(c.text(), "안녕🙂세");
    }

    #[test]
    fn paste_normalises_line_ends_and_drops_controls() {
        let c = typed("one\r\ntwo\rthree\tfour\u{1b}");
        assert_eq!(c.text(), "one\ntwo\nthree four");
    }

    #[test]
    fn up_and_down_move_between_lines_keeping_the_column() {
        let mut c = typed("abcdef\nxy\n123456");
        c.up();
        assert_eq!(&c.text()[c.cursor()..], "\n123456", "end of the short line");
        c.up();
        assert_eq!(&c.text()[c.cursor()..], "cdef\nxy\n123456");
        c.down();
        c.down();
        assert_eq!(&c.text()[c.cursor()..], "3456");
    }

    #[test]
    fn history_recalls_older_texts_and_restores_the_draft() {
        let mut c = Composer::default();
        c.insert_str("first");
        assert_eq!(c.take(), "first");
        c.insert_str("second");
        c.take();
        c.insert_str("draft");
        c.up();
        assert_eq!(c.text(), "second");
        c.up();
        assert_eq!(c.text(), "first");
        c.up();
        assert_eq!(c.text(), "first", "stays at the oldest");
        c.down();
        assert_eq!(c.text(), "second");
        c.down();
        assert_eq!(c.text(), "draft");
    }

    #[test]
    fn blank_texts_do_not_join_the_history() {
        let mut c = typed("   ");
        c.take();
        c.up();
        assert_eq!(c.text(), "");
    }

    #[test]
    fn line_editing_keys() {
        let mut c = typed("hello big world");
        c.delete_word();
        assert_eq!(c.text(), "hello big ");
        c.home();
        c.right();
        c.kill_to_end();
        assert_eq!(c.text(), "h");
        c.insert_str("ey\nthere");
        c.kill_to_start();
        assert_eq!(c.text(), "hey\n");
        c.end();
        assert_eq!(c.cursor(), 4);
    }

    #[test]
    fn paste_is_capped() {
        let big = "a".repeat(MAX_COMPOSER_BYTES + 10);
        let c = typed(&big);
        assert_eq!(c.text().len(), MAX_COMPOSER_BYTES);
    }
}
