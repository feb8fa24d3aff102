//! PostgreSQL's binary COPY format: written straight from Arrow batches
//! (loads), and read a tuple at a time (database sources, pulled
//! reconciles).
//!
//! The format: a signature and two zero words, then per row a field count
//! and per field a byte length (-1 for NULL) and the value in the type's
//! binary send format; a -1 word ends the data. Each canonical Arrow type is
//! written as the PostgreSQL type [`super::sql_type`] creates for it.

use bytes::{BufMut, BytesMut};
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::record_batch::RecordBatch;

use crate::backend::LoadColumn;
use crate::values::cells::{self, Cell};

/// Days from 1970-01-01 to PostgreSQL's epoch, 2000-01-01.
pub const PG_EPOCH_DAYS: i32 = 10_957;
/// Microseconds from 1970-01-01 to 2000-01-01.
pub const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// The header every binary COPY stream starts with.
pub fn header(buf: &mut BytesMut) {
    buf.put_slice(b"PGCOPY\n\xff\r\n\0");
    buf.put_i32(0); // flags
    buf.put_i32(0); // header extension length
}

/// The word that ends the data.
pub fn trailer(buf: &mut BytesMut) {
    buf.put_i16(-1);
}

/// Appends every row of a normalized batch.
pub fn encode(batch: &RecordBatch, columns: &[LoadColumn], buf: &mut BytesMut) -> Result<(), ArrowError> {
    let mut cols = cells::columns(batch)?;
    let fields =
        i16::try_from(cols.len()).map_err(|_| ArrowError::InvalidArgumentError("more than 32767 columns".into()))?;
    for row in 0..batch.num_rows() {
        buf.put_i16(fields);
        for (col, spec) in cols.iter_mut().zip(columns) {
            put_cell(buf, col.cell(row), &spec.data_type);
        }
    }
    Ok(())
}

fn put_cell(buf: &mut BytesMut, cell: Cell<'_>, dt: &DataType) {
    match cell {
        Cell::Null => buf.put_i32(-1),
        Cell::Bool(b) => field(buf, [u8::from(b)]),
        Cell::Int(v) => match dt {
            DataType::Int8 | DataType::Int16 => field(buf, (v as i16).to_be_bytes()),
            DataType::Int32 => field(buf, (v as i32).to_be_bytes()),
            _ => field(buf, v.to_be_bytes()),
        },
        Cell::UInt(v) => match dt {
            DataType::UInt8 => field(buf, (v as i16).to_be_bytes()),
            DataType::UInt16 => field(buf, (v as i32).to_be_bytes()),
            DataType::UInt32 => field(buf, (v as i64).to_be_bytes()),
            _ => put_numeric(buf, &v.to_string(), 0),
        },
        Cell::Float(v) => {
            if matches!(dt, DataType::Float32) {
                field(buf, (v as f32).to_be_bytes());
            } else {
                field(buf, v.to_be_bytes());
            }
        }
        Cell::Decimal(v, scale) => put_numeric_i128(buf, v, scale),
        Cell::BigDecimal(digits, scale) => put_numeric(buf, &digits, scale),
        Cell::Text(s) => put_bytes(buf, s.as_bytes()),
        Cell::Bytes(b) => put_bytes(buf, b),
        Cell::Date(days) => field(buf, days.wrapping_sub(PG_EPOCH_DAYS).to_be_bytes()),
        Cell::Timestamp(micros) => field(buf, micros.wrapping_sub(PG_EPOCH_MICROS).to_be_bytes()),
        Cell::Time(micros) => field(buf, micros.to_be_bytes()),
        Cell::Interval { months, days, micros } => {
            buf.put_i32(16);
            buf.put_i64(micros);
            buf.put_i32(days);
            buf.put_i32(months);
        }
        Cell::Json(text) => {
            // jsonb's binary form: a version byte, then the text.
            buf.put_i32(i32::try_from(text.len() + 1).unwrap_or(i32::MAX));
            buf.put_u8(1);
            buf.put_slice(text.as_bytes());
        }
    }
}

/// A fixed-width field: its length, then its bytes, in one write (a COPY
/// row is mostly these; two small writes each cost as much as the copy).
#[inline]
fn field<const N: usize>(buf: &mut BytesMut, value: [u8; N]) {
    let mut out = [0u8; 12];
    out[..4].copy_from_slice(&(N as i32).to_be_bytes());
    out[4..4 + N].copy_from_slice(&value);
    buf.put_slice(&out[..4 + N]);
}

fn put_bytes(buf: &mut BytesMut, b: &[u8]) {
    buf.put_i32(i32::try_from(b.len()).unwrap_or(i32::MAX));
    buf.put_slice(b);
}

/// [`put_numeric`] for a 128-bit unscaled decimal, without going through
/// text (the common case: Decimal128 columns).
pub fn put_numeric_i128(buf: &mut BytesMut, v: i128, scale: i8) {
    let Ok(s) = u32::try_from(scale) else { return put_numeric(buf, &v.to_string(), scale) };
    // Pad the fraction to whole base-10000 groups.
    let pad = (4 - s % 4) % 4;
    let Some(mut m) = v.unsigned_abs().checked_mul(10u128.pow(pad)) else {
        return put_numeric(buf, &v.to_string(), scale);
    };
    let frac_groups = ((s + pad) / 4) as i16;
    let mut groups = [0i16; 12];
    let mut n = 0;
    while m > 0 {
        groups[n] = (m % 10_000) as i16;
        m /= 10_000;
        n += 1;
    }
    // groups[..n] is least significant first; drop trailing zero groups.
    let mut low = 0;
    while low < n && groups[low] == 0 {
        low += 1;
    }
    let digits = &groups[low..n];
    let weight = if digits.is_empty() { 0 } else { n as i16 - frac_groups - 1 };
    // One write: length, header, digit groups most significant first.
    let mut out = [0u8; 12 + 2 * 12];
    out[..4].copy_from_slice(&(8 + 2 * digits.len() as i32).to_be_bytes());
    out[4..6].copy_from_slice(&(digits.len() as i16).to_be_bytes());
    out[6..8].copy_from_slice(&weight.to_be_bytes());
    out[8..10].copy_from_slice(&(if v < 0 && !digits.is_empty() { 0x4000u16 } else { 0 }).to_be_bytes());
    out[10..12].copy_from_slice(&(s as u16).to_be_bytes());
    for (k, g) in digits.iter().rev().enumerate() {
        out[12 + 2 * k..14 + 2 * k].copy_from_slice(&g.to_be_bytes());
    }
    buf.put_slice(&out[..12 + 2 * digits.len()]);
}

/// Writes an unscaled decimal (digits with an optional `-`) at `scale` as
/// `numeric`: base-10000 digit groups with a weight, a sign and a display
/// scale.
pub fn put_numeric(buf: &mut BytesMut, unscaled: &str, scale: i8) {
    let (mut negative, digits) = match unscaled.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, unscaled),
    };
    let (digits, scale) = if scale < 0 {
        (format!("{digits}{}", "0".repeat(usize::from(scale.unsigned_abs()))), 0usize)
    } else {
        (digits.to_owned(), usize::from(scale.unsigned_abs()))
    };
    let digits = digits.trim_start_matches('0');
    let (int, frac) = if digits.len() > scale {
        let (i, f) = digits.split_at(digits.len() - scale);
        (i.to_owned(), f.to_owned())
    } else {
        (String::new(), format!("{}{digits}", "0".repeat(scale - digits.len())))
    };
    let int = format!("{}{int}", "0".repeat((4 - int.len() % 4) % 4));
    let frac = format!("{frac}{}", "0".repeat((4 - frac.len() % 4) % 4));
    let mut weight = (int.len() / 4) as i16 - 1;
    let all = format!("{int}{frac}");
    let mut groups: Vec<i16> =
        all.as_bytes().chunks(4).map(|c| c.iter().fold(0i16, |acc, d| acc * 10 + i16::from(d - b'0'))).collect();
    let lead = groups.iter().take_while(|g| **g == 0).count();
    groups.drain(..lead);
    weight -= lead as i16;
    while groups.last() == Some(&0) {
        groups.pop();
    }
    if groups.is_empty() {
        weight = 0;
        negative = false;
    }
    buf.put_i32(8 + 2 * groups.len() as i32);
    buf.put_i16(groups.len() as i16);
    buf.put_i16(weight);
    buf.put_u16(if negative { 0x4000 } else { 0 });
    buf.put_u16(scale as u16);
    for g in groups {
        buf.put_i16(g);
    }
}

/// The signature that opens a binary COPY stream.
pub const SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";

/// `b` as an array of `N` bytes, when it has that length.
#[inline]
pub fn be<const N: usize>(b: &[u8]) -> Option<[u8; N]> {
    b.try_into().ok()
}

/// A binary `numeric`'s digit-group count, weight and sign; `None` when
/// the bytes are not a numeric, or are NaN or infinite.
pub fn numeric_header(b: &[u8]) -> Option<(usize, i32, bool)> {
    let word = |i: usize| be::<2>(b.get(i * 2..i * 2 + 2)?).map(u16::from_be_bytes);
    let (ndigits, weight, sign) = (usize::from(word(0)?), i32::from(word(1)? as i16), word(2)?);
    if b.len() != 8 + 2 * ndigits {
        return None;
    }
    match sign {
        0x0000 => Some((ndigits, weight, false)),
        0x4000 => Some((ndigits, weight, true)),
        _ => None,
    }
}

/// A binary `numeric` as an unscaled 128-bit integer at `scale`: `None`
/// when it has more fraction digits than that, does not fit, is NaN or
/// infinite, or the bytes are not a numeric.
pub fn numeric_unscaled(b: &[u8], scale: i8) -> Option<i128> {
    let (ndigits, weight, negative) = numeric_header(b)?;
    let word = |i: usize| be::<2>(b.get(i * 2..i * 2 + 2)?).map(u16::from_be_bytes);
    // Group i is worth 10^e unscaled, e = 4 (weight - i) + scale: whole
    // groups (e >= 0) are gathered in base 10000, a group cut by the scale
    // (-4 < e < 0) must end in zeros, and groups past it must be zero.
    let (mut acc, mut unit) = (0i128, 0u32);
    for i in 0..ndigits {
        let g = i128::from(word(4 + i)?);
        let e = 4 * (weight - i as i32) + i32::from(scale);
        if e >= 0 {
            acc = acc.checked_mul(10_000)?.checked_add(g)?;
            unit = e as u32;
        } else if e > -4 {
            let cut = 10i128.pow(e.unsigned_abs());
            if g % cut != 0 {
                return None;
            }
            acc = acc.checked_mul(10_000 / cut)?.checked_add(g / cut)?;
            unit = 0;
        } else if g != 0 {
            return None;
        }
    }
    let v = acc.checked_mul(10i128.checked_pow(unit)?)?;
    Some(if negative { -v } else { v })
}

/// Reads a binary COPY stream fed in chunks, a tuple at a time.
pub struct CopyReader {
    header_read: bool,
    /// Whether the trailer has been read.
    pub ended: bool,
    /// The start of a tuple cut by a chunk's end.
    pending: Vec<u8>,
    /// Each field's byte range in the tuple's buffer (`None`: NULL).
    fields: Vec<Option<(usize, usize)>>,
}

impl CopyReader {
    pub fn new() -> Self {
        CopyReader { header_read: false, ended: false, pending: Vec::new(), fields: Vec::new() }
    }

    /// Calls `each` with every whole tuple in `chunk` (after what a former
    /// chunk left), as its buffer and its fields' ranges.
    pub fn feed(
        &mut self,
        chunk: &[u8],
        mut each: impl FnMut(&[u8], &[Option<(usize, usize)>]) -> Result<(), String>,
    ) -> Result<(), String> {
        let mut pending = std::mem::take(&mut self.pending);
        let data: &[u8] = if pending.is_empty() {
            chunk
        } else {
            pending.extend_from_slice(chunk);
            &pending
        };
        let mut at = 0;
        if !self.header_read {
            let Some(ext) = data.get(15..19) else {
                self.pending = data.to_vec();
                return Ok(());
            };
            if !data.starts_with(SIGNATURE) {
                return Err("the server's COPY stream does not start with the binary signature".into());
            }
            at = 19 + u32::from_be_bytes(ext.try_into().unwrap_or_default()) as usize;
            self.header_read = true;
        }
        while !self.ended {
            match self.tuple(data, at)? {
                Some(end) if end == usize::MAX => self.ended = true,
                Some(end) => {
                    each(data, &self.fields)?;
                    at = end;
                }
                None => {
                    self.pending = data.get(at..).unwrap_or_default().to_vec();
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// Reads the tuple at `at` into `fields`: its end, `usize::MAX` for the
    /// trailer, or `None` when it runs past the data.
    fn tuple(&mut self, data: &[u8], mut at: usize) -> Result<Option<usize>, String> {
        let Some(count) = data.get(at..at + 2) else { return Ok(None) };
        let count = i16::from_be_bytes([count[0], count[1]]);
        if count == -1 {
            return Ok(Some(usize::MAX));
        }
        at += 2;
        self.fields.clear();
        for _ in 0..count {
            let Some(len) = data.get(at..at + 4) else { return Ok(None) };
            let len = i32::from_be_bytes([len[0], len[1], len[2], len[3]]);
            at += 4;
            if len < 0 {
                self.fields.push(None);
                continue;
            }
            let end = at + len as usize;
            if end > data.len() {
                return Ok(None);
            }
            self.fields.push(Some((at, end)));
            at = end;
        }
        Ok(Some(at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numeric(unscaled: &str, scale: i8) -> Vec<i16> {
        let mut buf = BytesMut::new();
        put_numeric(&mut buf, unscaled, scale);
        buf[4..].chunks(2).map(|c| i16::from_be_bytes([c[0], c[1]])).collect()
    }

    #[test]
    fn the_i128_path_matches_the_text_path() {
        for (v, s) in [
            (12345i128, 2i8),
            (-5, 3),
            (10000, 0),
            (0, 2),
            (123456789, 4),
            (-1, 0),
            (i128::MAX, 0),
            (i128::MIN + 1, 10),
            (99_999_999, 8),
            (7, -3),
        ] {
            let (mut a, mut b) = (BytesMut::new(), BytesMut::new());
            put_numeric_i128(&mut a, v, s);
            put_numeric(&mut b, &v.to_string(), s);
            assert_eq!(a, b, "{v} scale {s}");
        }
    }

    #[test]
    fn numeric_groups_weight_sign_and_scale() {
        // ndigits, weight, sign, dscale, digits...
        assert_eq!(numeric("12345", 2), vec![2, 0, 0, 2, 123, 4500]);
        assert_eq!(numeric("-5", 3), vec![1, -1, 0x4000, 3, 50]);
        assert_eq!(numeric("10000", 0), vec![1, 1, 0, 0, 1]);
        assert_eq!(numeric("0", 2), vec![0, 0, 0, 2]);
        assert_eq!(numeric("-0", 0), vec![0, 0, 0, 0]);
        assert_eq!(numeric("12", -3), vec![2, 1, 0, 0, 1, 2000]);
        assert_eq!(numeric("123456789", 4), vec![3, 1, 0, 4, 1, 2345, 6789]);
    }

    #[test]
    fn numerics_read_back_unscaled_at_any_scale_that_holds_them() {
        let max38 = 10i128.pow(38) - 1;
        for (v, s) in [(12345i128, 2i8), (-5, 3), (10000, 0), (0, 2), (max38, 10), (-max38, 0), (1, 10), (99_990, 4)] {
            let mut buf = BytesMut::new();
            put_numeric_i128(&mut buf, v, s);
            let b = &buf[4..];
            assert_eq!(numeric_unscaled(b, s), Some(v), "{v} at scale {s}");
            // A wider scale adds zeros, while they fit.
            let wider = v.checked_mul(1000);
            assert_eq!(numeric_unscaled(b, s + 3), wider, "{v} at scale {}", s + 3);
            // A narrower scale holds the value only when it drops zeros.
            let narrower = (v % 10 == 0).then_some(v / 10);
            assert_eq!(numeric_unscaled(b, s - 1), narrower, "{v} at scale {}", s - 1);
        }
    }

    #[test]
    fn the_copy_reader_joins_tuples_cut_between_chunks() {
        let mut stream = SIGNATURE.to_vec();
        stream.extend(0u32.to_be_bytes());
        stream.extend(0u32.to_be_bytes());
        for (a, b) in [(Some(&b"xy"[..]), None), (None, Some(&b"z"[..]))] {
            stream.extend(2i16.to_be_bytes());
            for f in [a, b] {
                match f {
                    Some(v) => {
                        stream.extend((v.len() as i32).to_be_bytes());
                        stream.extend(v);
                    }
                    None => stream.extend((-1i32).to_be_bytes()),
                }
            }
        }
        stream.extend((-1i16).to_be_bytes());
        // Every cut point, including inside the header.
        for cut in 0..stream.len() {
            let mut reader = CopyReader::new();
            let mut seen: Vec<Vec<Option<Vec<u8>>>> = Vec::new();
            for part in [&stream[..cut], &stream[cut..]] {
                reader
                    .feed(part, |data, fields| {
                        seen.push(fields.iter().map(|f| f.map(|(a, b)| data[a..b].to_vec())).collect());
                        Ok(())
                    })
                    .unwrap();
            }
            assert!(reader.ended, "cut at {cut}");
            assert_eq!(seen, vec![vec![Some(b"xy".to_vec()), None], vec![None, Some(b"z".to_vec())]], "cut {cut}");
        }
    }
}
