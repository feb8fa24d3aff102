//! The text `LOAD DATA` reads: tab-separated fields, `\`-escaped, `\N` for
//! NULL, one row per line. Binary columns travel as hex and are decoded with
//! `UNHEX()` on the server, so no byte is ever read in the wrong character set.

use std::io::Write as _;

use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::record_batch::RecordBatch;

use crate::backend::LoadColumn;
use crate::values::cells::{self, Cell};

/// Appends every row of a normalized batch.
pub fn encode(batch: &RecordBatch, columns: &[LoadColumn], out: &mut Vec<u8>) -> Result<(), ArrowError> {
    let mut cols = cells::columns(batch)?;
    for row in 0..batch.num_rows() {
        for (k, (col, spec)) in cols.iter_mut().zip(columns).enumerate() {
            if k > 0 {
                out.push(b'\t');
            }
            put_cell(out, col.cell(row), &spec.data_type)?;
        }
        out.push(b'\n');
    }
    Ok(())
}

fn put_cell(out: &mut Vec<u8>, cell: Cell<'_>, dt: &DataType) -> Result<(), ArrowError> {
    let bad = |what: String| ArrowError::InvalidArgumentError(what);
    match cell {
        Cell::Null => out.extend_from_slice(b"\\N"),
        Cell::Bool(b) => out.push(if b { b'1' } else { b'0' }),
        Cell::Int(v) => out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes()),
        Cell::UInt(v) => out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes()),
        Cell::Float(v) => {
            if !v.is_finite() {
                return Err(bad(format!("MySQL cannot store the float `{v}`")));
            }
            if matches!(dt, DataType::Float32) {
                write!(out, "{}", v as f32).map_err(|e| bad(e.to_string()))?;
            } else {
                write!(out, "{v}").map_err(|e| bad(e.to_string()))?;
            }
        }
        Cell::Decimal(v, s) => cells::write_decimal(out, v, s),
        Cell::BigDecimal(d, s) => out.extend_from_slice(cells::decimal_text(&d, s).as_bytes()),
        Cell::Text(s) => escape(out, s.as_bytes()),
        Cell::Bytes(b) => {
            for byte in b {
                write!(out, "{byte:02X}").map_err(|e| bad(e.to_string()))?;
            }
        }
        Cell::Date(d) => cells::write_date(out, d),
        Cell::Timestamp(us) => cells::write_timestamp(out, us),
        Cell::Time(us) => cells::write_time(out, us),
        Cell::Interval { months, days, micros } => {
            out.extend_from_slice(cells::interval_text(months, days, micros).as_bytes());
        }
        Cell::Json(s) => escape(out, s.as_bytes()),
    }
    Ok(())
}

/// Escapes what `FIELDS ESCAPED BY '\\'` treats specially.
fn escape(out: &mut Vec<u8>, bytes: &[u8]) {
    if !bytes.iter().any(|b| matches!(b, b'\\' | b'\t' | b'\n' | b'\r' | 0)) {
        out.extend_from_slice(bytes);
        return;
    }
    for &b in bytes {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            0 => out.extend_from_slice(b"\\0"),
            _ => out.push(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_tabs_newlines_backslashes_and_nul() {
        let mut out = Vec::new();
        escape(&mut out, b"a\tb\nc\\d\0e\r");
        assert_eq!(out, b"a\\tb\\nc\\\\d\\0e\\r");
    }
}
