//! Column-aligned text tables, as kubectl's tabwriter lays them out: left-aligned cells, three
//! spaces between columns, no padding after the last one.

const GAP: usize = 3;

/// Column widths, fixed once so that rows printed later (by `get -w`) line up with the first.
#[derive(Debug, Clone, Default)]
pub struct Layout {
    widths: Vec<usize>,
}

impl Layout {
    /// The widths that fit every given row.
    pub fn fit<'a>(rows: impl IntoIterator<Item = &'a [String]>) -> Layout {
        let mut widths: Vec<usize> = Vec::new();
        for row in rows {
            for (i, cell) in row.iter().enumerate() {
                let w = cell.chars().count();
                match widths.get_mut(i) {
                    Some(cur) => *cur = (*cur).max(w),
                    None => widths.push(w),
                }
            }
        }
        Layout { widths }
    }

    /// One line (without its newline). A cell wider than its column pushes the rest of its
    /// line right rather than being cut: nothing printed is lost.
    pub fn line(&self, cells: &[String]) -> String {
        let mut line = String::new();
        for (i, cell) in cells.iter().enumerate() {
            line.push_str(cell);
            if i + 1 < cells.len() {
                let width = self.widths.get(i).copied().unwrap_or(0);
                let pad = width.saturating_sub(cell.chars().count()) + GAP;
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        line.truncate(line.trim_end().len());
        line
    }
}

/// A whole table: the header (unless `no_headers`), then the rows.
pub fn render(header: &[String], rows: &[Vec<String>], no_headers: bool) -> String {
    let all = std::iter::once(header).filter(|_| !no_headers).chain(rows.iter().map(Vec::as_slice));
    let layout = Layout::fit(all.clone());
    let mut out = String::new();
    for row in all {
        out.push_str(&layout.line(row));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(cells: &[&str]) -> Vec<String> {
        cells.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn columns_align_with_three_spaces_and_no_trailing_padding() {
        let header = row(&["NAME", "READY", "AGE"]);
        let rows = vec![row(&["hello", "True", "5s"]), row(&["a-much-longer-name", "False", "10m"])];
        let text = render(&header, &rows, false);
        assert_eq!(
            text,
            "NAME                 READY   AGE\n\
             hello                True    5s\n\
             a-much-longer-name   False   10m\n"
        );
    }

    #[test]
    fn headers_can_be_left_out() {
        let text = render(&row(&["NAME", "AGE"]), &[row(&["x", "1s"])], true);
        assert_eq!(text, "x   1s\n");
    }

    #[test]
    fn a_later_wider_cell_pushes_its_line_instead_of_being_cut() {
        let layout = Layout::fit([row(&["NAME", "AGE"]).as_slice()]);
        assert_eq!(layout.line(&row(&["a-long-name", "1s"])), "a-long-name   1s");
        assert_eq!(layout.line(&row(&["x", "1s"])), "x      1s");
    }

    #[test]
    fn widths_count_characters_not_bytes() {
        let text = render(&row(&["NAME", "MESSAGE"]), &[row(&["héllo", "ok"])], false);
        assert_eq!(text, "NAME    MESSAGE\nhéllo   ok\n");
    }
}
