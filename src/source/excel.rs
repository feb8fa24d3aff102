//! Excel workbooks (`.xlsx`, `.xlsm`, `.xlsb`, `.xls`) and OpenDocument
//! spreadsheets (`.ods`) through calamine: a sheet by name or position, a
//! header row, and optionally a cell range. Column types come from the cells
//! themselves (Excel knows a number from text); a cell holding an error
//! (`#DIV/0!`) is an error naming the sheet and cell.

use std::sync::Arc;

use calamine::{Data, Range, Reader, open_workbook_auto};
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use serde_json::Value as Json;

use super::columns::TextBatcher;
use super::{At, DataFile, Problem, ReadError, Spec, SpecError, send_full};

#[derive(Debug, Clone)]
pub struct Options {
    sheet: Sheet,
    /// The header's row number (from 1); by default the first row of the
    /// sheet's used cells or of `range`.
    header_row: Option<u32>,
    header: bool,
    /// `A1:D200`, as 0-based (row, column) corners.
    range: Option<((u32, u32), (u32, u32))>,
}

#[derive(Debug, Clone)]
enum Sheet {
    Name(String),
    /// 0-based position.
    Index(usize),
}

impl Options {
    /// `sheet: Customers` or `sheet: 0` (the first), `header_row: 3`,
    /// `range: A3:F500`, `header: false`.
    pub fn of(location: &serde_json::Map<String, Json>) -> Result<Self, SpecError> {
        let sheet = match location.get("sheet") {
            None => Sheet::Index(0),
            Some(Json::Number(n)) => Sheet::Index(n.as_u64().ok_or_else(|| SpecError::Invalid {
                key: "sheet",
                value: n.to_string(),
                expected: "a sheet name, or its position from 0",
            })? as usize),
            Some(Json::String(s)) => Sheet::Name(s.clone()),
            Some(other) => {
                return Err(SpecError::Invalid {
                    key: "sheet",
                    value: other.to_string(),
                    expected: "a sheet name, or its position from 0",
                });
            }
        };
        let header_row = match location.get("header_row") {
            None => None,
            Some(v) => Some(v.as_u64().filter(|&n| n >= 1 && n <= u64::from(u32::MAX)).ok_or_else(|| {
                SpecError::Invalid { key: "header_row", value: v.to_string(), expected: "a row number from 1" }
            })? as u32),
        };
        let range = match location.get("range") {
            None => None,
            Some(v) => Some(v.as_str().and_then(parse_range).ok_or_else(|| SpecError::Invalid {
                key: "range",
                value: v.to_string(),
                expected: "two cells such as `A1:F500`",
            })?),
        };
        let header = location.get("header").and_then(Json::as_bool).unwrap_or(true);
        Ok(Options { sheet, header_row, header, range })
    }
}

/// `B3` as 0-based (row, column).
fn parse_cell(cell: &str) -> Option<(u32, u32)> {
    let split = cell.find(|c: char| c.is_ascii_digit())?;
    let (letters, digits) = cell.split_at(split);
    if letters.is_empty() || !letters.chars().all(|c| c.is_ascii_alphabetic()) {
        return None;
    }
    let col = letters
        .to_ascii_uppercase()
        .bytes()
        .try_fold(0u32, |acc, b| acc.checked_mul(26)?.checked_add(u32::from(b - b'A' + 1)))?;
    let row: u32 = digits.parse().ok()?;
    (row >= 1).then(|| (row - 1, col - 1))
}

fn parse_range(range: &str) -> Option<((u32, u32), (u32, u32))> {
    let (a, b) = range.split_once(':')?;
    let (a, b) = (parse_cell(a.trim())?, parse_cell(b.trim())?);
    (a.0 <= b.0 && a.1 <= b.1).then_some((a, b))
}

/// Column letters of a 0-based column (`0` is `A`, `26` is `AA`).
fn column_letters(mut col: u32) -> String {
    let mut out = Vec::new();
    loop {
        out.push(b'A' + (col % 26) as u8);
        if col < 26 {
            break;
        }
        col = col / 26 - 1;
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

/// The sheet's cells within the options' range, with its name.
fn sheet(spec: &Spec, options: &Options, file: &DataFile) -> Result<(String, Range<Data>), ReadError> {
    let at = At::file(file.shown.clone());
    let mut workbook = open_workbook_auto(&file.full)
        .map_err(|e| spec.error(at.clone(), Problem::Malformed(format!("not a readable workbook: {e}"))))?;
    let names = workbook.sheet_names();
    let name = match &options.sheet {
        Sheet::Name(n) if names.contains(n) => n.clone(),
        Sheet::Name(n) => {
            let hint = crate::diagnostic::did_you_mean(n, names.iter().map(String::as_str)).unwrap_or_default();
            return Err(spec.error(
                at,
                Problem::Malformed(format!(
                    "the workbook has no sheet `{n}`; its sheets are {}{}",
                    quoted(&names),
                    if hint.is_empty() { String::new() } else { format!(" ({hint})") }
                )),
            ));
        }
        Sheet::Index(i) => names.get(*i).cloned().ok_or_else(|| {
            spec.error(
                at.clone(),
                Problem::Malformed(format!(
                    "the workbook has no sheet {i} (from 0); its sheets are {}",
                    quoted(&names)
                )),
            )
        })?,
    };
    let range = workbook
        .worksheet_range(&name)
        .map_err(|e| spec.error(At { sheet: Some(name.clone()), ..at }, Problem::Malformed(e.to_string())))?;
    let range = match options.range {
        Some((start, end)) => range.range(start, end),
        None => range,
    };
    Ok((name, range))
}

fn quoted(names: &[String]) -> String {
    names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
}

/// The header row's index within `range`, and the column names.
fn header(options: &Options, range: &Range<Data>) -> (usize, Vec<String>) {
    let (top, width) = (range.start().map_or(0, |s| s.0), range.width());
    let at = options.header_row.map_or(0, |r| (r - 1).saturating_sub(top) as usize);
    let header_row = if options.header { range.rows().nth(at) } else { None };
    let mut names: Vec<String> = Vec::with_capacity(width);
    for c in 0..width {
        let raw = header_row.and_then(|row| row.get(c)).map(|d| d.to_string().trim().to_owned()).unwrap_or_default();
        let base = if raw.is_empty() { format!("column_{}", c + 1) } else { raw };
        let mut name = base.clone();
        let mut n = 2;
        while names.contains(&name) {
            name = format!("{base}_{n}");
            n += 1;
        }
        names.push(name);
    }
    (if options.header { at + 1 } else { at }, names)
}

/// What a column's cells have held.
#[derive(Debug, Clone, Default)]
struct Kinds {
    int: bool,
    fraction: bool,
    boolean: bool,
    date: bool,
    time_of_day: bool,
    text: bool,
}

impl Kinds {
    fn add(&mut self, d: &Data) {
        match d {
            Data::Empty | Data::Error(_) => {}
            Data::Int(_) => self.int = true,
            Data::Float(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => self.int = true,
            Data::Float(_) => self.fraction = true,
            Data::Bool(_) => self.boolean = true,
            Data::DateTime(dt) if dt.is_datetime() => {
                self.date = true;
                self.time_of_day |= dt.as_f64().fract() != 0.0;
            }
            Data::DateTimeIso(s) => {
                self.date = true;
                self.time_of_day |= s.contains('T') && !s.ends_with("T00:00:00");
            }
            Data::String(_) | Data::DateTime(_) | Data::DurationIso(_) => self.text = true,
        }
    }

    fn data_type(&self) -> DataType {
        let numeric = self.int || self.fraction;
        match (numeric, self.boolean, self.date, self.text) {
            (true, false, false, false) if self.fraction => DataType::Float64,
            (true, false, false, false) => DataType::Int64,
            (false, true, false, false) => DataType::Boolean,
            (false, false, true, false) if self.time_of_day => DataType::Timestamp(TimeUnit::Millisecond, None),
            (false, false, true, false) => DataType::Date32,
            _ => DataType::Utf8,
        }
    }
}

/// A cell as text for a column of type `ty`; a cell error is an `Err` with
/// its text (`#N/A`).
fn cell_text(d: &Data, ty: &DataType) -> Result<Option<String>, String> {
    Ok(Some(match d {
        Data::Empty => return Ok(None),
        Data::Error(e) => return Err(e.to_string()),
        Data::Int(i) => i.to_string(),
        Data::Float(f) if f.fract() == 0.0 && f.abs() < 9.0e15 && ty != &DataType::Float64 => (*f as i64).to_string(),
        Data::Float(f) => f.to_string(),
        Data::Bool(b) => b.to_string(),
        Data::String(s) => s.clone(),
        Data::DateTime(dt) if dt.is_datetime() => {
            let (y, mo, d, h, mi, s, ms) = dt.to_ymd_hms_milli();
            if ty == &DataType::Date32 {
                format!("{y:04}-{mo:02}-{d:02}")
            } else {
                format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{ms:03}")
            }
        }
        Data::DateTime(dt) => d_duration(dt.as_f64()),
        Data::DateTimeIso(s) if ty == &DataType::Date32 => s.split('T').next().unwrap_or_default().to_owned(),
        Data::DateTimeIso(s) | Data::DurationIso(s) => s.clone(),
    }))
}

/// An Excel duration (days as a fraction) as `[h]:mm:ss`.
fn d_duration(days: f64) -> String {
    let total = (days * 86_400.0).round() as i64;
    format!("{}:{:02}:{:02}", total / 3600, (total % 3600) / 60, total % 60)
}

pub(super) fn infer(spec: &Spec, options: &Options) -> Result<SchemaRef, ReadError> {
    let (_, range) = sheet(spec, options, &spec.files[0])?;
    let (first, names) = header(options, &range);
    let mut kinds = vec![Kinds::default(); names.len()];
    for row in range.rows().skip(first) {
        for (k, d) in kinds.iter_mut().zip(row) {
            k.add(d);
        }
    }
    let fields: Vec<Field> = names.iter().zip(&kinds).map(|(n, k)| Field::new(n, k.data_type(), true)).collect();
    Ok(Arc::new(Schema::new(fields)))
}

pub(super) fn read(
    spec: &Spec,
    options: &Options,
    file: &DataFile,
    schema: &SchemaRef,
    send: &mut dyn FnMut(RecordBatch) -> bool,
) -> Result<(), ReadError> {
    let (name, range) = sheet(spec, options, file)?;
    let (first, names) = header(options, &range);
    let (top, left) = range.start().unwrap_or((0, 0));
    // Schema column -> sheet column.
    let order: Vec<Option<usize>> = schema.fields().iter().map(|f| names.iter().position(|n| n == f.name())).collect();
    let mut batcher = TextBatcher::new(Arc::clone(schema), spec.quarantine.is_some());
    for (r, row) in range.rows().enumerate().skip(first) {
        let excel_row = u64::from(top) + r as u64 + 1;
        let at = At { path: file.shown.clone(), sheet: Some(name.clone()), line: Some(excel_row) };
        let raw = || Json::from(row.iter().map(|d| d.to_string()).collect::<Vec<_>>()).to_string();
        let mut values: Vec<Option<String>> = Vec::with_capacity(order.len());
        let mut broken = None;
        for (field, column) in schema.fields().iter().zip(&order) {
            let cell = column.and_then(|c| row.get(c)).unwrap_or(&Data::Empty);
            match cell_text(cell, field.data_type()) {
                Ok(text) => values.push(text),
                Err(e) => {
                    let cell_ref = format!("{}{excel_row}", column_letters(left + column.unwrap_or(0) as u32));
                    let message = format!("cell {cell_ref} (column `{}`) holds the error {e}", field.name());
                    broken = Some(spec.error(at.clone(), Problem::Malformed(message)));
                    break;
                }
            }
        }
        if let Some(e) = broken {
            spec.reject(e, raw)?;
            continue;
        }
        if values.iter().all(Option::is_none) {
            continue;
        }
        batcher.push(at, values.iter().map(Option::as_deref), raw);
        if !send_full(spec, &mut batcher, send, false)? {
            return Ok(());
        }
    }
    send_full(spec, &mut batcher, send, true)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_and_ranges_parse() {
        assert_eq!(parse_cell("A1"), Some((0, 0)));
        assert_eq!(parse_cell("AA10"), Some((9, 26)));
        assert_eq!(parse_cell("A0"), None);
        assert_eq!(parse_range("B2:D9"), Some(((1, 1), (8, 3))));
        assert_eq!(parse_range("D9:B2"), None);
        assert_eq!(column_letters(0), "A");
        assert_eq!(column_letters(25), "Z");
        assert_eq!(column_letters(26), "AA");
        assert_eq!(column_letters(701), "ZZ");
        assert_eq!(column_letters(702), "AAA");
    }
}
