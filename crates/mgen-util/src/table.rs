//! Plain-text tables whose columns fit their widest cell, so a long task
//! name or task-set name never pushes a row out of line.
//!
//! Invariants: every row has as many cells as the header (missing cells are
//! blank, extra ones dropped); columns are separated by `gap` spaces;
//! lines carry no trailing spaces. Widths count characters, not bytes.

/// How a column's cells are aligned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

/// A table: a header, rows of cells, and an indent for every line.
pub struct Table {
    cols: Vec<(String, Align)>,
    rows: Vec<Vec<String>>,
    indent: usize,
    gap: usize,
}

impl Table {
    /// A table with these column headers and alignments.
    pub fn new(cols: &[(&str, Align)]) -> Table {
        Table {
            cols: cols.iter().map(|(h, a)| (h.to_string(), *a)).collect(),
            rows: Vec::new(),
            indent: 0,
            gap: 1,
        }
    }

    /// Every line starts with `n` spaces.
    pub fn indent(mut self, n: usize) -> Table {
        self.indent = n;
        self
    }

    /// Columns are `n` spaces apart (default 1).
    pub fn gap(mut self, n: usize) -> Table {
        self.gap = n;
        self
    }

    /// Adds a row.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as text, one line per row after the header.
    pub fn render(&self) -> String {
        let n = self.cols.len();
        let width = |c: usize| {
            self.rows
                .iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .chain([self.cols[c].0.chars().count()])
                .max()
                .unwrap_or(0)
        };
        let widths: Vec<usize> = (0..n).map(width).collect();
        let header: Vec<String> = self.cols.iter().map(|(h, _)| h.clone()).collect();
        let mut out = String::new();
        for cells in std::iter::once(&header).chain(&self.rows) {
            let mut line = " ".repeat(self.indent);
            for (c, w) in widths.iter().enumerate() {
                let cell = cells.get(c).map(String::as_str).unwrap_or("");
                if c > 0 {
                    line.push_str(&" ".repeat(self.gap));
                }
                let pad = " ".repeat(w - cell.chars().count().min(*w));
                match self.cols[c].1 {
                    Align::Left => {
                        line.push_str(cell);
                        line.push_str(&pad);
                    }
                    Align::Right => {
                        line.push_str(&pad);
                        line.push_str(cell);
                    }
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_fit_the_widest_cell() {
        let mut t = Table::new(&[("task", Align::Left), ("value", Align::Right)]);
        t.row(vec!["a".into(), "1.0".into()]);
        t.row(vec!["a_very_long_task_name".into(), "12.25".into()]);
        let text = t.render();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "task                  value");
        assert_eq!(lines[1], "a                       1.0");
        assert_eq!(lines[2], "a_very_long_task_name 12.25");
    }

    #[test]
    fn short_rows_are_padded_and_lines_trimmed() {
        let mut t = Table::new(&[("x", Align::Left), ("y", Align::Left)]).indent(2);
        t.row(vec!["é".into()]);
        assert_eq!(t.render(), "  x y\n  é\n");
    }
}
