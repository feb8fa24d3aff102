//! The lines of a CSV file that the audit's examples are on: after the
//! profiling pass (which reads the file in parallel byte ranges, where line
//! numbers are not known), the file is read again record by record, and
//! only until every example has been found; its examples are the first
//! values of their kind, so this usually stops early.

use std::collections::HashMap;

use super::ColumnProfile;

/// Fills in the line of each example in `columns` (type breaks, replaced
/// bytes, double-encoded text), reading `reader` (the table's file, with
/// its dialect, decoded as the profile read it). A column is matched by
/// its header name, or by position when the file has none.
pub fn locate<R: std::io::Read>(mut reader: csv::Reader<R>, columns: &mut [ColumnProfile]) -> Result<(), csv::Error> {
    let headers: Option<HashMap<String, usize>> = if reader.has_headers() {
        Some(reader.headers()?.iter().enumerate().map(|(i, h)| (h.to_owned(), i)).collect())
    } else {
        None
    };
    // (field index, column, list, example) still to find.
    let mut wanted: Vec<(usize, usize, usize, usize)> = Vec::new();
    for (c, column) in columns.iter_mut().enumerate() {
        let Some(field) = headers.as_ref().map_or(Some(c), |h| h.get(&column.name).copied()) else { continue };
        for (list, examples) in column.examples_mut().into_iter().enumerate() {
            wanted.extend((0..examples.len()).map(|e| (field, c, list, e)));
        }
    }
    let mut record = csv::StringRecord::new();
    while !wanted.is_empty() && reader.read_record(&mut record)? {
        let line = record.position().map(csv::Position::line);
        wanted.retain(|&(field, c, list, e)| {
            let example = &mut columns[c].examples_mut()[list][e];
            if record.get(field) == Some(example.value.as_str()) {
                example.line = line;
                return false;
            }
            true
        });
    }
    Ok(())
}
