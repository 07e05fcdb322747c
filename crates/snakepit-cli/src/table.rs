//! Text tables: columns padded to their widest cell, two spaces apart (the one table
//! printer of `jobs`, `runs` and `runs show`).

use crate::output::outln;

/// `rows` (the first is the header) as lines of left-aligned columns two spaces apart,
/// `indent` before each, trailing spaces trimmed.
pub fn lines<const N: usize>(rows: &[[String; N]], indent: &str) -> Vec<String> {
    let widths: Vec<usize> = (0..N)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    rows.iter()
        .map(|r| {
            let cells: Vec<String> = r
                .iter()
                .zip(&widths)
                .map(|(cell, w)| format!("{cell:<w$}"))
                .collect();
            format!("{indent}{}", cells.join("  ").trim_end())
        })
        .collect()
}

/// Prints `rows` (the first is the header) on stdout as [`lines`] without indent.
pub fn print<const N: usize>(rows: &[[String; N]]) {
    for line in lines(rows, "") {
        outln!("{line}");
    }
}

#[cfg(test)]
mod tests {
    use super::lines;

    #[test]
    fn columns_are_padded_to_their_widest_cell_and_lines_trimmed() {
        let rows = [
            ["ID".to_owned(), "STATUS".to_owned(), "µs".to_owned()],
            ["a1".to_owned(), "ok".to_owned(), String::new()],
            ["b".to_owned(), "succeeded".to_owned(), "85µs".to_owned()],
        ];
        assert_eq!(
            lines(&rows, "  "),
            ["  ID  STATUS     µs", "  a1  ok", "  b   succeeded  85µs",]
        );
    }
}
