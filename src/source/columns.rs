//! Records of text values become typed record batches here: column types are
//! guessed from the values when not declared, and a value that does not
//! convert to its column's type is an error naming the record.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, BooleanArray, RecordBatch, StringBuilder};
use datafusion::arrow::compute::{CastOptions, cast_with_options, filter_record_batch};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::util::display::FormatOptions;

use super::quarantine::Quarantine;
use super::{At, Problem, ReadError, reject};

/// Rows per batch handed to DataFusion.
pub const BATCH_ROWS: usize = 8192;

/// Builds batches of `schema` from records of text values (`None` is NULL),
/// converting each column from text to its type.
pub struct TextBatcher {
    schema: SchemaRef,
    columns: Vec<StringBuilder>,
    /// Where each buffered record starts, for errors.
    places: Vec<At>,
    /// Each buffered record's raw text, when records may be quarantined.
    raws: Option<Vec<String>>,
}

impl TextBatcher {
    /// `keep_raw`: keep each record's raw text, to quarantine it.
    pub fn new(schema: SchemaRef, keep_raw: bool) -> Self {
        let columns = schema.fields().iter().map(|_| StringBuilder::new()).collect();
        TextBatcher { schema, columns, places: Vec::new(), raws: keep_raw.then(Vec::new) }
    }

    /// Adds one record: a value per schema column, in order; `raw` gives
    /// its text, asked for only when records may be quarantined.
    pub fn push<'a>(
        &mut self,
        at: At,
        values: impl IntoIterator<Item = Option<&'a str>>,
        raw: impl FnOnce() -> String,
    ) {
        if let Some(raws) = &mut self.raws {
            raws.push(raw());
        }
        let mut n = 0;
        for (builder, value) in self.columns.iter_mut().zip(values) {
            builder.append_option(value);
            n += 1;
        }
        for builder in &mut self.columns[n..] {
            builder.append_null();
        }
        self.places.push(at);
    }

    pub(super) fn buffered(&self) -> usize {
        self.places.len()
    }

    /// The buffered records as a batch. A value that does not convert is
    /// an error naming its record and column, or with `quarantine`, sets its
    /// record aside.
    pub fn flush(&mut self, table: &str, quarantine: Option<&Quarantine>) -> Result<Option<RecordBatch>, ReadError> {
        if self.places.is_empty() {
            return Ok(None);
        }
        let places = std::mem::take(&mut self.places);
        let raws = self.raws.as_mut().map(std::mem::take);
        let options = CastOptions { safe: true, format_options: FormatOptions::default() };
        let mut arrays: Vec<ArrayRef> = Vec::with_capacity(self.columns.len());
        // The first value of each bad record that does not convert.
        let mut bad: Vec<Option<Problem>> = Vec::new();
        for (field, builder) in self.schema.fields().iter().zip(&mut self.columns) {
            let text = builder.finish();
            let ty = field.data_type();
            if ty == &DataType::Utf8 {
                arrays.push(Arc::new(text));
                continue;
            }
            let cast = cast_with_options(&text, ty, &options).map_err(|e| {
                ReadError::new(table, places[0].clone(), Problem::Malformed(format!("column `{}`: {e}", field.name())))
            })?;
            // A value the cast could not convert came out NULL; an empty
            // value is NULL in a column that is not text.
            if cast.null_count() != text.null_count() {
                bad.resize_with(text.len(), || None);
                for r in (0..text.len()).filter(|&r| text.is_valid(r) && cast.is_null(r) && !text.value(r).is_empty()) {
                    bad[r].get_or_insert_with(|| Problem::Value {
                        column: field.name().clone(),
                        value: text.value(r).to_owned(),
                        ty: ty.to_string(),
                    });
                }
            }
            arrays.push(cast);
        }
        let batch = RecordBatch::try_new(Arc::clone(&self.schema), arrays)
            .map_err(|e| ReadError::new(table, places[0].clone(), Problem::Malformed(e.to_string())))?;
        if bad.is_empty() {
            return Ok(Some(batch));
        }
        let mut keep = Vec::with_capacity(batch.num_rows());
        for (r, problem) in bad.into_iter().enumerate() {
            keep.push(problem.is_none());
            if let Some(problem) = problem {
                let raw = raws.as_ref().map(|raws| raws[r].clone()).unwrap_or_default();
                reject(quarantine, ReadError::new(table, places[r].clone(), problem), || raw)?;
            }
        }
        keep.resize(batch.num_rows(), true);
        let kept = filter_record_batch(&batch, &BooleanArray::from(keep))
            .map_err(|e| ReadError::new(table, places[0].clone(), Problem::Malformed(e.to_string())))?;
        Ok(Some(kept))
    }
}

/// A column type guessed from text values, narrowest first. Values with a
/// leading zero (`007`, `01234`) stay text: codes and account numbers keep
/// their zeros.
#[derive(Debug, Clone, Default)]
pub struct Guess {
    seen: bool,
    not_int: bool,
    not_float: bool,
    not_bool: bool,
    not_date: bool,
    not_timestamp: bool,
}

impl Guess {
    pub fn add(&mut self, value: &str) {
        if value.is_empty() {
            return;
        }
        self.seen = true;
        let numeric = looks_numeric(value);
        if !self.not_int {
            self.not_int = !numeric || value.parse::<i64>().is_err();
        }
        if !self.not_float {
            self.not_float = !numeric || value.parse::<f64>().is_err();
        }
        if !self.not_bool {
            self.not_bool = !(value.eq_ignore_ascii_case("true") || value.eq_ignore_ascii_case("false"));
        }
        if !self.not_date {
            self.not_date = chrono::NaiveDate::parse_from_str(value, "%Y-%m-%d").is_err();
        }
        if !self.not_timestamp {
            self.not_timestamp = ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"]
                .iter()
                .all(|f| chrono::NaiveDateTime::parse_from_str(value, f).is_err());
        }
    }

    pub fn data_type(&self) -> DataType {
        match self {
            Guess { seen: false, .. } => DataType::Utf8,
            Guess { not_int: false, .. } => DataType::Int64,
            Guess { not_float: false, .. } => DataType::Float64,
            Guess { not_bool: false, .. } => DataType::Boolean,
            Guess { not_date: false, .. } => DataType::Date32,
            Guess { not_timestamp: false, .. } => DataType::Timestamp(TimeUnit::Microsecond, None),
            _ => DataType::Utf8,
        }
    }
}

/// Digits with an optional sign, point and exponent, and no leading zero
/// before another digit.
fn looks_numeric(value: &str) -> bool {
    let digits = value.strip_prefix(['-', '+']).unwrap_or(value);
    let mut chars = digits.chars();
    let leading_zero = chars.next() == Some('0') && chars.next().is_some_and(|c| c.is_ascii_digit());
    !leading_zero
        && digits.starts_with(|c: char| c.is_ascii_digit() || c == '.')
        && digits.chars().all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '-' | '+'))
}

/// A schema of guessed column types.
pub fn guessed_schema(names: &[String], guesses: &[Guess]) -> SchemaRef {
    let fields: Vec<Field> =
        names.iter().zip(guesses).map(|(n, g)| Field::new(n.as_str(), g.data_type(), true)).collect();
    Arc::new(Schema::new(fields))
}

#[cfg(test)]
mod tests {
    use super::*;
    use camino::Utf8PathBuf;

    fn guess(values: &[&str]) -> DataType {
        let mut g = Guess::default();
        values.iter().for_each(|v| g.add(v));
        g.data_type()
    }

    #[test]
    fn types_are_guessed_from_text() {
        assert_eq!(guess(&["1", "-20", ""]), DataType::Int64);
        assert_eq!(guess(&["1", "2.5", "1e3"]), DataType::Float64);
        assert_eq!(guess(&["007", "12"]), DataType::Utf8);
        assert_eq!(guess(&["0", "0.5"]), DataType::Float64);
        assert_eq!(guess(&["true", "False"]), DataType::Boolean);
        assert_eq!(guess(&["2024-02-29", "1999-01-01"]), DataType::Date32);
        assert_eq!(
            guess(&["2024-02-29 10:00:00", "2024-02-29T10:00:00.5"]),
            DataType::Timestamp(TimeUnit::Microsecond, None)
        );
        assert_eq!(guess(&["2024-02-30"]), DataType::Utf8);
        assert_eq!(guess(&["inf", "NaN"]), DataType::Utf8);
        assert_eq!(guess(&[]), DataType::Utf8);
    }

    #[test]
    fn a_value_that_does_not_convert_names_its_line_and_column() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("amount", DataType::Decimal128(10, 2), true),
        ]));
        let mut b = TextBatcher::new(schema, false);
        let at = |line| At::line(Utf8PathBuf::from("data/x.txt"), line);
        b.push(at(1), [Some("1"), Some("2.50")], String::new);
        b.push(at(2), [Some("2"), None], String::new);
        let batch = b.flush("legacy.x", None).unwrap().unwrap();
        assert_eq!(batch.num_rows(), 2);
        b.push(at(3), [Some("3"), Some("1.00")], String::new);
        b.push(at(4), [Some("4"), Some("12,50")], String::new);
        b.push(at(5), [Some("x"), Some("12,50")], String::new);
        let e = b.flush("legacy.x", None).unwrap_err();
        assert_eq!(e.at.line, Some(4));
        assert_eq!(
            e.to_string(),
            "cannot read `legacy.x`: `12,50` in column `amount` is not a valid Decimal128(10, 2)"
        );
    }
}
