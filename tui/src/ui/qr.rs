//! A QR code drawn with half-block characters: two modules per character cell, dark
//! modules on a light background, with a quiet zone so a phone can scan it.

use qrcode::{Color as Module, EcLevel, QrCode};

/// Light modules around the code (the standard asks for 4; 2 scans well on screens).
const QUIET: usize = 2;

/// The rows of characters for `text`, or `None` if it cannot be encoded.
pub fn qr_rows(text: &str) -> Option<Vec<String>> {
    let code = QrCode::with_error_correction_level(text.as_bytes(), EcLevel::L).ok()?;
    let size = code.width();
    let colors = code.to_colors();
    let full = size + 2 * QUIET;
    let dark = |x: usize, y: usize| -> bool {
        if x < QUIET || y < QUIET || x >= size + QUIET || y >= size + QUIET {
            return false;
        }
        colors[(y - QUIET) * size + (x - QUIET)] == Module::Dark
    };
    let mut rows = Vec::new();
    for y in (0..full).step_by(2) {
        let row: String = (0..full)
            .map(|x| match (dark(x, y), dark(x, y + 1)) {
                (true, true) => '█',
                (true, false) => '▀',
                (false, true) => '▄',
                (false, false) => ' ',
            })
            .collect();
        rows.push(row);
    }
    Some(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_finder_patterns_in_the_corners() {
        let rows = qr_rows("BH1TESTCODE").expect("encodes");
        let width = rows[0].chars().count();
        assert_eq!(rows.len(), width.div_ceil(2));
        assert!(rows[0].chars().all(|c| c == ' '), "quiet zone on top");
        // Row 1 covers modules 2 and 3: the top edge of the top-left finder pattern
        // (7 dark modules) over the pattern's light ring.
        let row: Vec<char> = rows[1].chars().collect();
        assert_eq!(&row[2..9], &['█', '▀', '▀', '▀', '▀', '▀', '█']);
    }
}
