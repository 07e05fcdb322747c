//! Text tables on stdout: columns padded to their widest cell.

use crate::run::out;

/// Prints `rows` (the first is the header) as columns two spaces apart.
pub fn print<const N: usize>(rows: &[[String; N]]) {
    let widths: Vec<usize> = (0..N)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    for r in rows {
        let cells: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out(cells.join("  ").trim_end());
    }
}
