//! Text measuring and shaping by display width (Korean syllables and most emoji take two
//! columns), and times in the user's zone.

use chrono::{DateTime, Datelike, FixedOffset, Local, Offset, TimeZone, Timelike, Utc};
use unicode_width::{UnicodeWidthChar, UnicodeWidthStr};

use crate::app::Zone;

/// Columns a string takes.
pub fn width(text: &str) -> usize {
    UnicodeWidthStr::width(text)
}

/// Columns a char takes (control characters count as zero).
pub fn char_width(c: char) -> usize {
    UnicodeWidthChar::width(c).unwrap_or(0)
}

/// `text` cut to at most `max` columns, ending in `…` when cut.
pub fn truncate(text: &str, max: usize) -> String {
    if width(text) <= max {
        return text.to_owned();
    }
    if max == 0 {
        return String::new();
    }
    let mut out = String::new();
    let mut used = 0;
    for c in text.chars() {
        let w = char_width(c);
        if used + w > max - 1 {
            break;
        }
        out.push(c);
        used += w;
    }
    out.push('…');
    out
}

/// `text` padded with spaces to exactly `columns` (cut first if longer).
pub fn pad(text: &str, columns: usize) -> String {
    let cut = truncate(text, columns);
    let fill = columns.saturating_sub(width(&cut));
    format!("{cut}{}", " ".repeat(fill))
}

/// Wraps one paragraph (no `\n`) into lines: the first at most `first` columns wide, the
/// others at most `rest`. Breaks at spaces when it can, inside a word when it must (a long
/// URL, or Korean or Chinese without spaces). Always returns at least one line.
pub fn wrap(text: &str, first: usize, rest: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    let mut used = 0;
    let limit = |lines: &Vec<String>| if lines.is_empty() { first } else { rest }.max(1);
    for word in split_keeping_spaces(text) {
        let w = width(word);
        if used + w <= limit(&lines) {
            line.push_str(word);
            used += w;
            continue;
        }
        if word == " " {
            // A space at a break disappears.
            lines.push(std::mem::take(&mut line));
            used = 0;
            continue;
        }
        if used > 0 && w <= rest.max(1) {
            // The word fits on a line of its own: move it down whole.
            lines.push(std::mem::take(&mut line).trim_end().to_owned());
            line.push_str(word);
            used = w;
            continue;
        }
        for c in word.chars() {
            let cw = char_width(c);
            if used + cw > limit(&lines) && used > 0 {
                lines.push(std::mem::take(&mut line));
                used = 0;
            }
            line.push(c);
            used += cw;
        }
    }
    lines.push(line);
    lines
}

/// Splits into words and single spaces, so wrapping can keep or drop each space.
fn split_keeping_spaces(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut start = 0;
    for (i, c) in text.char_indices() {
        if c == ' ' {
            if start < i {
                parts.push(&text[start..i]);
            }
            parts.push(" ");
            start = i + 1;
        }
    }
    if start < text.len() {
        parts.push(&text[start..]);
    }
    parts
}

/// A moment as the user's clock shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Moment {
    /// Days since 1970-01-01 in the user's zone (for day separators).
    pub day: i64,
    /// `HH:MM`.
    pub hour: u32,
    /// Minute.
    pub minute: u32,
    /// Year.
    pub year: i32,
    /// Month 1–12.
    pub month: u32,
    /// Day of month.
    pub mday: u32,
    /// 0 = Monday.
    pub weekday: u32,
}

impl Moment {
    /// Unix milliseconds in `zone`.
    pub fn at(ms: u64, zone: Zone) -> Moment {
        let utc = DateTime::<Utc>::from_timestamp_millis(i64::try_from(ms).unwrap_or(i64::MAX))
            .unwrap_or_default();
        let offset = match zone {
            Zone::Fixed(secs) => FixedOffset::east_opt(secs).unwrap_or(Utc.fix()),
            Zone::Local => Local.offset_from_utc_datetime(&utc.naive_utc()),
        };
        let local = utc.with_timezone(&offset);
        let naive = local.date_naive();
        let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default();
        Moment {
            day: (naive - epoch).num_days(),
            hour: local.hour(),
            minute: local.minute(),
            year: local.year(),
            month: local.month(),
            mday: local.day(),
            weekday: local.weekday().num_days_from_monday(),
        }
    }

    /// `14:05`.
    pub fn clock(&self) -> String {
        format!("{:02}:{:02}", self.hour, self.minute)
    }

    /// `Tue 12 May 2026`.
    pub fn date(&self) -> String {
        const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
        const MONTHS: [&str; 12] = [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ];
        let day = DAYS.get(self.weekday as usize).copied().unwrap_or("");
        let month = MONTHS
            .get(self.month.saturating_sub(1) as usize)
            .copied()
            .unwrap_or("");
        format!("{day} {} {month} {}", self.mday, self.year)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn korean_and_emoji_take_two_columns() {
        assert_eq!(width("안녕"), 4);
        assert_eq!(width("hi🙂"), 4);
        assert_eq!(truncate("안녕하세요", 5), "안녕…");
        assert_eq!(pad("봉화", 6), "봉화  ");
    }

    #[test]
    fn wraps_at_spaces_and_inside_long_words() {
        assert_eq!(wrap("hello big world", 9, 9), vec!["hello big", "world"]);
        assert_eq!(wrap("abcdefghij", 4, 4), vec!["abcd", "efgh", "ij"]);
        assert_eq!(wrap("", 5, 5), vec![""]);
        assert_eq!(wrap("ab cd", 2, 5), vec!["ab", "cd"]);
    }

    #[test]
    fn wraps_korean_by_columns() {
        let lines = wrap("안녕하세요 반갑습니다", 10, 10);
        assert_eq!(lines, vec!["안녕하세요", "반갑습니다"]);
        for line in wrap("가나다라마바사아자차카타파하", 7, 7) {
            assert!(width(&line) <= 7, "{line:?} is too wide");
        }
    }

    #[test]
    fn formats_times_in_the_given_zone() {
        // 2024-05-06 23:30 UTC is Tuesday 08:30 in Seoul (UTC+9).
        let ms = 1_715_038_200_000;
        let utc = Moment::at(ms, Zone::Fixed(0));
        assert_eq!(
            (utc.clock(), utc.date()),
            ("23:30".into(), "Mon 6 May 2024".into())
        );
        let seoul = Moment::at(ms, Zone::Fixed(9 * 3600));
        assert_eq!(
            (seoul.clock(), seoul.date()),
            ("08:30".into(), "Tue 7 May 2024".into())
        );
        assert_eq!(seoul.day, utc.day + 1);
    }
}
