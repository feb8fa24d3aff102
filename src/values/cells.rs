//! Reading staged Arrow batches cell by cell, in the handful of shapes
//! every backend knows how to write.
//!
//! Each staged column is first cast to its *canonical* type
//! ([`canonical`]): timestamps and times at microsecond precision (what
//! PostgreSQL, MySQL and SQLite keep), intervals as month-day-nano,
//! dictionaries unpacked. A backend then maps canonical types to SQL types
//! and [`Cell`]s to its wire format.

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, BinaryViewArray, BooleanArray, Decimal128Array, Decimal256Array,
    FixedSizeBinaryArray, LargeBinaryArray, LargeStringArray, PrimitiveArray, StringArray, StringViewArray,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{
    DataType, Date32Type, DurationMicrosecondType, FieldRef, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type,
    Int64Type, IntervalMonthDayNanoType, IntervalUnit, Time64MicrosecondType, TimeUnit, TimestampMicrosecondType,
    UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::record_batch::RecordBatch;

/// The type a staged column is loaded as, or `None` when no target can
/// hold it (unions).
pub fn canonical(dt: &DataType) -> Option<DataType> {
    use DataType as D;
    Some(match dt {
        D::Float16 => D::Float32,
        D::Decimal32(p, s) | D::Decimal64(p, s) => D::Decimal128(*p, *s),
        D::Date64 => D::Date32,
        D::Timestamp(_, tz) => D::Timestamp(TimeUnit::Microsecond, tz.clone()),
        D::Time32(_) | D::Time64(_) => D::Time64(TimeUnit::Microsecond),
        D::Duration(_) => D::Duration(TimeUnit::Microsecond),
        D::Interval(_) => D::Interval(IntervalUnit::MonthDayNano),
        D::Dictionary(_, values) => canonical(values)?,
        D::RunEndEncoded(_, values) => canonical(values.data_type())?,
        D::Union(..) => return None,
        other => other.clone(),
    })
}

/// The one type of values that several Arrow types hold alike: the
/// [`canonical`] type, with string and binary views and large forms as
/// plain strings and binaries (what a reader happened to choose does not
/// make a column another column).
pub fn value_type(dt: &DataType) -> DataType {
    one_layout(&canonical(dt).unwrap_or_else(|| dt.clone()))
}

/// `dt` with strings and bytes in one layout: views and large forms as
/// plain strings and binaries; other types as they are.
pub fn one_layout(dt: &DataType) -> DataType {
    match dt {
        DataType::Utf8View | DataType::LargeUtf8 => DataType::Utf8,
        DataType::BinaryView | DataType::LargeBinary => DataType::Binary,
        t => t.clone(),
    }
}

/// Whether values of `dt` are written as JSON text.
pub fn is_nested(dt: &DataType) -> bool {
    use DataType as D;
    matches!(
        dt,
        D::List(_)
            | D::LargeList(_)
            | D::ListView(_)
            | D::LargeListView(_)
            | D::FixedSizeList(..)
            | D::Struct(_)
            | D::Map(..)
    )
}

/// Casts every column of `batch` to its canonical type.
pub fn normalize(batch: RecordBatch) -> Result<RecordBatch, ArrowError> {
    let schema = batch.schema();
    let mut changed = false;
    let mut columns = Vec::with_capacity(batch.num_columns());
    let mut fields = Vec::with_capacity(batch.num_columns());
    for (field, column) in schema.fields().iter().zip(batch.columns()) {
        let want = canonical(field.data_type()).ok_or_else(|| {
            ArrowError::CastError(format!(
                "column `{}` has type {}, which no target can hold",
                field.name(),
                field.data_type()
            ))
        })?;
        if &want == column.data_type() {
            columns.push(column.clone());
            fields.push(field.clone());
        } else {
            changed = true;
            columns.push(cast(column, &want)?);
            fields.push(std::sync::Arc::new(field.as_ref().clone().with_data_type(want)));
        }
    }
    if !changed {
        return Ok(batch);
    }
    let schema = std::sync::Arc::new(datafusion::arrow::datatypes::Schema::new(fields));
    RecordBatch::try_new(schema, columns)
}

/// How nested values are written as JSON (arrow's defaults: nulls inside
/// structs are left out).
static JSON_OPTIONS: std::sync::LazyLock<arrow_json::writer::EncoderOptions> =
    std::sync::LazyLock::new(Default::default);

/// One value, borrowed from its batch where it can be.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell<'a> {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    /// An unscaled 128-bit decimal and its scale.
    Decimal(i128, i8),
    /// A wider unscaled decimal as digits with an optional leading `-`, and its scale.
    BigDecimal(String, i8),
    Text(&'a str),
    Bytes(&'a [u8]),
    /// Days since 1970-01-01.
    Date(i32),
    /// Microseconds since 1970-01-01 00:00 (UTC when the column has a time zone).
    Timestamp(i64),
    /// Microseconds since midnight.
    Time(i64),
    Interval {
        months: i32,
        days: i32,
        micros: i64,
    },
    /// JSON text (lists, structs, maps).
    Json(String),
}

/// A canonical column, ready to read cell by cell.
pub enum Column<'a> {
    Null,
    Bool(&'a BooleanArray),
    I8(&'a PrimitiveArray<Int8Type>),
    I16(&'a PrimitiveArray<Int16Type>),
    I32(&'a PrimitiveArray<Int32Type>),
    I64(&'a PrimitiveArray<Int64Type>),
    U8(&'a PrimitiveArray<UInt8Type>),
    U16(&'a PrimitiveArray<UInt16Type>),
    U32(&'a PrimitiveArray<UInt32Type>),
    U64(&'a PrimitiveArray<UInt64Type>),
    F32(&'a PrimitiveArray<Float32Type>),
    F64(&'a PrimitiveArray<Float64Type>),
    D128(&'a Decimal128Array, i8),
    D256(&'a Decimal256Array, i8),
    Utf8(&'a StringArray),
    LargeUtf8(&'a LargeStringArray),
    Utf8View(&'a StringViewArray),
    Binary(&'a BinaryArray),
    LargeBinary(&'a LargeBinaryArray),
    BinaryView(&'a BinaryViewArray),
    FixedBinary(&'a FixedSizeBinaryArray),
    Date(&'a PrimitiveArray<Date32Type>),
    Timestamp(&'a PrimitiveArray<TimestampMicrosecondType>),
    Time(&'a PrimitiveArray<Time64MicrosecondType>),
    Duration(&'a PrimitiveArray<DurationMicrosecondType>),
    Interval(&'a PrimitiveArray<IntervalMonthDayNanoType>),
    Json(&'a dyn Array, arrow_json::writer::NullableEncoder<'a>),
}

impl<'a> Column<'a> {
    /// Wraps a column of a [`normalize`]d batch.
    pub fn new(field: &'a FieldRef, array: &'a ArrayRef) -> Result<Self, ArrowError> {
        use DataType as D;
        let a = array.as_ref();
        Ok(match a.data_type() {
            D::Null => Column::Null,
            D::Boolean => Column::Bool(a.as_boolean()),
            D::Int8 => Column::I8(a.as_primitive()),
            D::Int16 => Column::I16(a.as_primitive()),
            D::Int32 => Column::I32(a.as_primitive()),
            D::Int64 => Column::I64(a.as_primitive()),
            D::UInt8 => Column::U8(a.as_primitive()),
            D::UInt16 => Column::U16(a.as_primitive()),
            D::UInt32 => Column::U32(a.as_primitive()),
            D::UInt64 => Column::U64(a.as_primitive()),
            D::Float32 => Column::F32(a.as_primitive()),
            D::Float64 => Column::F64(a.as_primitive()),
            D::Decimal128(_, s) => Column::D128(a.as_primitive(), *s),
            D::Decimal256(_, s) => Column::D256(a.as_primitive(), *s),
            D::Utf8 => Column::Utf8(a.as_string()),
            D::LargeUtf8 => Column::LargeUtf8(a.as_string()),
            D::Utf8View => Column::Utf8View(a.as_string_view()),
            D::Binary => Column::Binary(a.as_binary()),
            D::LargeBinary => Column::LargeBinary(a.as_binary()),
            D::BinaryView => Column::BinaryView(a.as_binary_view()),
            D::FixedSizeBinary(_) => Column::FixedBinary(a.as_fixed_size_binary()),
            D::Date32 => Column::Date(a.as_primitive()),
            D::Timestamp(TimeUnit::Microsecond, _) => Column::Timestamp(a.as_primitive()),
            D::Time64(TimeUnit::Microsecond) => Column::Time(a.as_primitive()),
            D::Duration(TimeUnit::Microsecond) => Column::Duration(a.as_primitive()),
            D::Interval(IntervalUnit::MonthDayNano) => Column::Interval(a.as_primitive()),
            dt if is_nested(dt) => {
                let encoder = arrow_json::writer::make_encoder(field, a, &JSON_OPTIONS)?;
                Column::Json(a, encoder)
            }
            other => {
                return Err(ArrowError::CastError(format!(
                    "column `{}` has type {other}, which is not canonical for loading",
                    field.name()
                )));
            }
        })
    }

    /// The value at `row`.
    pub fn cell(&mut self, row: usize) -> Cell<'a> {
        macro_rules! prim {
            ($a:expr, $v:ident => $e:expr) => {
                if $a.is_null(row) {
                    Cell::Null
                } else {
                    let $v = $a.value(row);
                    $e
                }
            };
        }
        match self {
            Column::Null => Cell::Null,
            Column::Bool(a) => prim!(a, v => Cell::Bool(v)),
            Column::I8(a) => prim!(a, v => Cell::Int(i64::from(v))),
            Column::I16(a) => prim!(a, v => Cell::Int(i64::from(v))),
            Column::I32(a) => prim!(a, v => Cell::Int(i64::from(v))),
            Column::I64(a) => prim!(a, v => Cell::Int(v)),
            Column::U8(a) => prim!(a, v => Cell::UInt(u64::from(v))),
            Column::U16(a) => prim!(a, v => Cell::UInt(u64::from(v))),
            Column::U32(a) => prim!(a, v => Cell::UInt(u64::from(v))),
            Column::U64(a) => prim!(a, v => Cell::UInt(v)),
            Column::F32(a) => prim!(a, v => Cell::Float(f64::from(v))),
            Column::F64(a) => prim!(a, v => Cell::Float(v)),
            Column::D128(a, s) => {
                let s = *s;
                prim!(a, v => Cell::Decimal(v, s))
            }
            Column::D256(a, s) => {
                let s = *s;
                prim!(a, v => Cell::BigDecimal(v.to_string(), s))
            }
            Column::Utf8(a) => prim!(a, v => Cell::Text(v)),
            Column::LargeUtf8(a) => prim!(a, v => Cell::Text(v)),
            Column::Utf8View(a) => prim!(a, v => Cell::Text(v)),
            Column::Binary(a) => prim!(a, v => Cell::Bytes(v)),
            Column::LargeBinary(a) => prim!(a, v => Cell::Bytes(v)),
            Column::BinaryView(a) => prim!(a, v => Cell::Bytes(v)),
            Column::FixedBinary(a) => prim!(a, v => Cell::Bytes(v)),
            Column::Date(a) => prim!(a, v => Cell::Date(v)),
            Column::Timestamp(a) => prim!(a, v => Cell::Timestamp(v)),
            Column::Time(a) => prim!(a, v => Cell::Time(v)),
            Column::Duration(a) => prim!(a, v => Cell::Interval { months: 0, days: 0, micros: v }),
            Column::Interval(a) => {
                prim!(a, v => Cell::Interval { months: v.months, days: v.days, micros: v.nanoseconds / 1_000 })
            }
            Column::Json(a, encoder) => {
                if a.is_null(row) {
                    Cell::Null
                } else {
                    let mut out = Vec::new();
                    encoder.encode(row, &mut out);
                    Cell::Json(String::from_utf8(out).unwrap_or_default())
                }
            }
        }
    }
}

/// All the columns of a normalized batch.
pub fn columns(batch: &RecordBatch) -> Result<Vec<Column<'_>>, ArrowError> {
    let schema = batch.schema_ref();
    schema.fields().iter().zip(batch.columns()).map(|(f, a)| Column::new(f, a)).collect()
}

/// An unscaled decimal (`-12345`, scale 2) as text (`-123.45`).
pub fn decimal_text(unscaled: &str, scale: i8) -> String {
    let (sign, digits) = match unscaled.strip_prefix('-') {
        Some(d) => ("-", d),
        None => ("", unscaled),
    };
    if scale <= 0 {
        let zeros = "0".repeat(usize::from(scale.unsigned_abs()));
        return if digits == "0" { "0".to_owned() } else { format!("{sign}{digits}{zeros}") };
    }
    let scale = usize::from(scale.unsigned_abs());
    let padded = if digits.len() <= scale {
        format!("{}{digits}", "0".repeat(scale + 1 - digits.len()))
    } else {
        digits.to_owned()
    };
    let (int, frac) = padded.split_at(padded.len() - scale);
    format!("{sign}{int}.{frac}")
}

/// Writes a 128-bit unscaled decimal at `scale` as text, without
/// allocating (the hot path of text bulk formats).
pub fn write_decimal(out: &mut Vec<u8>, v: i128, scale: i8) {
    let mut digits = itoa::Buffer::new();
    if scale <= 0 || scale > 38 {
        out.extend_from_slice(decimal_text(digits.format(v), scale).as_bytes());
        return;
    }
    if v < 0 {
        out.push(b'-');
    }
    let m = v.unsigned_abs();
    let p = 10u128.pow(u32::from(scale.unsigned_abs()));
    out.extend_from_slice(digits.format(m / p).as_bytes());
    out.push(b'.');
    let frac = digits.format(m % p);
    out.resize(out.len() + usize::from(scale.unsigned_abs()) - frac.len(), b'0');
    out.extend_from_slice(frac.as_bytes());
}

fn write_padded(out: &mut Vec<u8>, v: u32, width: usize) {
    let mut b = itoa::Buffer::new();
    let s = b.format(v);
    out.resize(out.len() + width.saturating_sub(s.len()), b'0');
    out.extend_from_slice(s.as_bytes());
}

/// Days since 1970-01-01 as `YYYY-MM-DD`.
pub fn write_date(out: &mut Vec<u8>, days: i32) {
    use chrono::Datelike;
    let Some(d) = days.checked_add(719_163).and_then(chrono::NaiveDate::from_num_days_from_ce_opt) else {
        out.extend_from_slice(format!("invalid date ({days} days)").as_bytes());
        return;
    };
    if d.year() < 0 {
        out.push(b'-');
    }
    write_padded(out, d.year().unsigned_abs(), 4);
    out.push(b'-');
    write_padded(out, d.month(), 2);
    out.push(b'-');
    write_padded(out, d.day(), 2);
}

/// Microseconds since midnight as `HH:MM:SS.ffffff`.
pub fn write_time(out: &mut Vec<u8>, micros: i64) {
    let secs = micros.div_euclid(1_000_000);
    write_padded(out, (secs / 3600) as u32, 2);
    out.push(b':');
    write_padded(out, (secs / 60 % 60) as u32, 2);
    out.push(b':');
    write_padded(out, (secs % 60) as u32, 2);
    out.push(b'.');
    write_padded(out, micros.rem_euclid(1_000_000) as u32, 6);
}

/// Microseconds since the epoch as `YYYY-MM-DD HH:MM:SS.ffffff`.
pub fn write_timestamp(out: &mut Vec<u8>, micros: i64) {
    const DAY: i64 = 86_400_000_000;
    match i32::try_from(micros.div_euclid(DAY)) {
        Ok(days) => {
            write_date(out, days);
            out.push(b' ');
            write_time(out, micros.rem_euclid(DAY));
        }
        Err(_) => out.extend_from_slice(format!("invalid timestamp ({micros} µs)").as_bytes()),
    }
}

fn text(write: impl FnOnce(&mut Vec<u8>)) -> String {
    let mut out = Vec::with_capacity(32);
    write(&mut out);
    String::from_utf8(out).unwrap_or_default()
}

/// Days since 1970-01-01 as `YYYY-MM-DD`.
pub fn date_text(days: i32) -> String {
    text(|o| write_date(o, days))
}

/// Microseconds since the epoch as `YYYY-MM-DD HH:MM:SS.ffffff`.
pub fn timestamp_text(micros: i64) -> String {
    text(|o| write_timestamp(o, micros))
}

/// Microseconds since midnight as `HH:MM:SS.ffffff`.
pub fn time_text(micros: i64) -> String {
    text(|o| write_time(o, micros))
}

/// A 128-bit unscaled decimal at `scale` as text.
pub fn decimal128_text(v: i128, scale: i8) -> String {
    text(|o| write_decimal(o, v, scale))
}

/// A decimal's text without trailing fraction zeros (`1.50` -> `1.5`,
/// `2.00` -> `2`, `-0.0` -> `0`).
pub fn trim_decimal(text: &str) -> &str {
    if !text.contains('.') {
        return text;
    }
    let t = text.trim_end_matches('0').trim_end_matches('.');
    match t {
        "-0" | "" | "-" => "0",
        t => t,
    }
}

/// An interval as PostgreSQL's unambiguous text (`1 mons 2 days 00:00:01.5`),
/// which PostgreSQL reads back.
pub fn interval_text(months: i32, days: i32, micros: i64) -> String {
    let sign = if micros < 0 { "-" } else { "" };
    let m = micros.unsigned_abs();
    let secs = m / 1_000_000;
    format!(
        "{months} mons {days} days {sign}{:02}:{:02}:{:02}.{:06}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        m % 1_000_000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_text_places_the_point() {
        assert_eq!(decimal_text("12345", 2), "123.45");
        assert_eq!(decimal_text("-5", 3), "-0.005");
        assert_eq!(decimal_text("0", 2), "0.00");
        assert_eq!(decimal_text("7", 0), "7");
        assert_eq!(decimal_text("7", -2), "700");
    }

    #[test]
    fn the_decimal_writer_matches_the_text_path() {
        for (v, s) in
            [(12345i128, 2i8), (-5, 3), (0, 2), (7, 0), (7, -2), (-1, 10), (i128::MAX, 38), (i128::MIN + 1, 5)]
        {
            assert_eq!(decimal128_text(v, s), decimal_text(&v.to_string(), s), "{v} scale {s}");
        }
    }

    #[test]
    fn dates_times_and_intervals_as_text() {
        assert_eq!(date_text(19_782), "2024-02-29");
        assert_eq!(date_text(-719_528), "0000-01-01");
        assert_eq!(timestamp_text(-1), "1969-12-31 23:59:59.999999");
        assert_eq!(date_text(0), "1970-01-01");
        assert_eq!(date_text(-1), "1969-12-31");
        assert_eq!(timestamp_text(1_500_000), "1970-01-01 00:00:01.500000");
        assert_eq!(time_text(3_723_000_001), "01:02:03.000001");
        assert_eq!(interval_text(1, 2, -1_500_000), "1 mons 2 days -00:00:01.500000");
    }

    #[test]
    fn decimals_lose_trailing_zeros_only() {
        assert_eq!(trim_decimal("1.50"), "1.5");
        assert_eq!(trim_decimal("2.00"), "2");
        assert_eq!(trim_decimal("100"), "100");
        assert_eq!(trim_decimal("-0.00"), "0");
        assert_eq!(trim_decimal("-0.250"), "-0.25");
    }

    #[test]
    fn canonical_types_are_what_targets_keep() {
        use std::sync::Arc;
        assert_eq!(
            canonical(&DataType::Timestamp(TimeUnit::Nanosecond, Some(Arc::from("UTC")))),
            Some(DataType::Timestamp(TimeUnit::Microsecond, Some(Arc::from("UTC"))))
        );
        assert_eq!(
            canonical(&DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8))),
            Some(DataType::Utf8)
        );
        assert_eq!(canonical(&DataType::Time32(TimeUnit::Second)), Some(DataType::Time64(TimeUnit::Microsecond)));
    }
}
