//! PostgreSQL database sources read with `COPY (query) TO STDOUT (FORMAT
//! binary)`, each field decoded straight into an Arrow builder.
//!
//! connectorx reads the same rows one at a time through the synchronous
//! `postgres` client (entering the async runtime per row) and decodes
//! `numeric` through rust_decimal before ferry rescales it; on the 6M-row
//! W1 extract that was most of ferry's CPU. This reader takes a query whose
//! every column has a type it decodes ([`Decode::of`]: booleans, integers,
//! floats, declared `numeric(p, s)`, text, `bytea`, dates, times and
//! timestamps), producing exactly the Arrow types connectorx would; any other
//! query is read by connectorx as before (`source::database`).

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use datafusion::arrow::array::{
    ArrayRef, BinaryBuilder, BooleanBuilder, Date32Builder, Decimal128Builder, Float64Builder, Int64Builder,
    LargeBinaryBuilder, LargeStringBuilder, RecordBatch, RecordBatchOptions, StringBuilder, Time64MicrosecondBuilder,
    Time64NanosecondBuilder, TimestampMicrosecondBuilder, TimestampNanosecondBuilder,
};
use datafusion::arrow::datatypes::{DataType, Schema, SchemaRef, TimeUnit};
use tokio_postgres::config::SslMode;
use tokio_postgres::types::Type;

use super::copy::{CopyReader, PG_EPOCH_DAYS, PG_EPOCH_MICROS, be, numeric_unscaled};

/// CopyData messages (about one row each) handed to the decoding thread at once.
const CHUNKS_PER_SEND: usize = 2048;

/// How a source's connection URL reaches the server, for this reader.
#[derive(Clone)]
pub struct Connect {
    config: tokio_postgres::Config,
}

impl fmt::Debug for Connect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The password never prints.
        f.debug_struct("Connect")
            .field("hosts", &self.config.get_hosts())
            .field("dbname", &self.config.get_dbname())
            .finish()
    }
}

impl Connect {
    /// From a `postgres://` or `postgresql://` URL; `None` when it asks for
    /// what only connectorx does here: one of its protocols (`cxprotocol`),
    /// TLS that checks the server's certificate or presents one of its own,
    /// or another parameter. connectorx then reads the source.
    pub fn of_url(url: &str) -> Option<Self> {
        let u = url::Url::parse(url).ok()?;
        let decode = |s: &str| percent_encoding::percent_decode_str(s).decode_utf8().ok().map(|c| c.into_owned());
        let mut config = tokio_postgres::Config::new();
        let host = match u.host()? {
            url::Host::Domain(name) => decode(name)?,
            // Without the brackets the URL puts around it.
            url::Host::Ipv6(ip) => ip.to_string(),
            url::Host::Ipv4(ip) => ip.to_string(),
        };
        config.host(&host).port(u.port().unwrap_or(5432)).application_name("ferry");
        if !u.username().is_empty() {
            config.user(&decode(u.username())?);
        }
        if let Some(p) = u.password() {
            config.password(decode(p)?);
        }
        let db = u.path().trim_start_matches('/');
        if !db.is_empty() {
            config.dbname(&decode(db)?);
        }
        for (key, value) in u.query_pairs() {
            match (key.as_ref(), value.as_ref()) {
                ("sslmode", "disable") => config.ssl_mode(SslMode::Disable),
                ("sslmode", "prefer") => config.ssl_mode(SslMode::Prefer),
                ("sslmode", "require") => config.ssl_mode(SslMode::Require),
                _ => return None,
            };
        }
        Some(Connect { config })
    }

    /// The server's refusal when it turns this login away (a wrong
    /// password or user, a database that does not exist): SQLSTATE class
    /// 28 and 3D000. Any other outcome is `None`: the reader finds out.
    pub async fn refused_login(&self) -> Option<String> {
        let wait = std::time::Duration::from_secs(10);
        let Ok(Err(e)) = tokio::time::timeout(wait, self.config.connect(unchecked_tls().ok()?)).await else {
            return None;
        };
        let db = e.as_db_error()?;
        let code = db.code().code();
        (code.starts_with("28") || code == "3D000").then(|| db.message().to_owned())
    }

    /// A connection, its driver spawned on the runtime (it ends when the
    /// client is dropped). TLS, when the URL allows or requires it, is
    /// encrypted without checking the server, as connectorx's is.
    async fn connect(&self) -> Result<tokio_postgres::Client, String> {
        let fail =
            |e: &dyn std::error::Error| format!("cannot connect: {}", crate::error::with_causes(e.to_string(), e));
        let tls = unchecked_tls().map_err(|e| fail(&e))?;
        let (client, connection) = self.config.connect(tls).await.map_err(|e| fail(&e))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!("PostgreSQL source connection ended: {e}");
            }
        });
        Ok(client)
    }
}

/// TLS that encrypts without checking the server's certificate or name,
/// as connectorx's does (used only when the URL allows or requires TLS).
fn unchecked_tls() -> Result<postgres_openssl::MakeTlsConnector, openssl::error::ErrorStack> {
    let mut builder = openssl::ssl::SslConnector::builder(openssl::ssl::SslMethod::tls())?;
    builder.set_verify(openssl::ssl::SslVerifyMode::NONE);
    let mut tls = postgres_openssl::MakeTlsConnector::new(builder.build());
    tls.set_callback(|connect, _| {
        connect.set_verify_hostname(false);
        Ok(())
    });
    Ok(tls)
}

/// How one column's binary values become Arrow values.
#[derive(Debug, Clone, PartialEq)]
pub enum Decode {
    Bool,
    /// `int2`, `int4` or `int8` (2, 4 or 8 bytes) as `Int64`.
    Int64 {
        bytes: u8,
    },
    /// `float4` or `float8` (4 or 8 bytes) as `Float64`.
    Float64 {
        bytes: u8,
    },
    /// `numeric(p, s)` as `Decimal128(p, s)`, exactly.
    Decimal {
        precision: u8,
        scale: i8,
    },
    Text {
        large: bool,
    },
    Bytes {
        large: bool,
    },
    Date,
    Time {
        unit: TimeUnit,
    },
    Timestamp {
        unit: TimeUnit,
        zone: Option<Arc<str>>,
    },
}

impl Decode {
    /// How a column of the PostgreSQL type `pg` is read as `arrow`, the
    /// type connectorx maps it to (or the declared `numeric(p, s)`); `None`
    /// for any other pair.
    pub fn of(pg: &Type, arrow: &DataType) -> Option<Self> {
        use DataType as D;
        use TimeUnit::{Microsecond, Nanosecond};
        let text = [Type::TEXT, Type::VARCHAR, Type::BPCHAR, Type::NAME];
        Some(match arrow {
            D::Boolean if *pg == Type::BOOL => Decode::Bool,
            // connectorx's streaming reader widens integers and floats.
            D::Int64 if *pg == Type::INT2 => Decode::Int64 { bytes: 2 },
            D::Int64 if *pg == Type::INT4 => Decode::Int64 { bytes: 4 },
            D::Int64 if *pg == Type::INT8 => Decode::Int64 { bytes: 8 },
            D::Float64 if *pg == Type::FLOAT4 => Decode::Float64 { bytes: 4 },
            D::Float64 if *pg == Type::FLOAT8 => Decode::Float64 { bytes: 8 },
            &D::Decimal128(precision, scale) if *pg == Type::NUMERIC && scale >= 0 => {
                Decode::Decimal { precision, scale }
            }
            D::Utf8 | D::LargeUtf8 if text.contains(pg) => Decode::Text { large: matches!(arrow, D::LargeUtf8) },
            D::Binary | D::LargeBinary if *pg == Type::BYTEA => {
                Decode::Bytes { large: matches!(arrow, D::LargeBinary) }
            }
            D::Date32 if *pg == Type::DATE => Decode::Date,
            &D::Time64(unit) if *pg == Type::TIME => Decode::Time { unit },
            &D::Timestamp(unit @ (Microsecond | Nanosecond), None) if *pg == Type::TIMESTAMP => {
                Decode::Timestamp { unit, zone: None }
            }
            D::Timestamp(unit @ (Microsecond | Nanosecond), Some(zone)) if *pg == Type::TIMESTAMPTZ => {
                Decode::Timestamp { unit: *unit, zone: Some(Arc::clone(zone)) }
            }
            _ => return None,
        })
    }
}

/// How each column of `query` decodes into the Arrow type of the field at
/// its place, or (`Ok(Err(why))`) the first column and type that does
/// not, when connectorx must read the query instead. The server describes
/// the query without running it.
pub async fn plan(connect: &Connect, query: &str, schema: &Schema) -> Result<Result<Vec<Decode>, String>, String> {
    let client = connect.connect().await?;
    let statement = client.prepare(query).await.map_err(|e| crate::error::with_causes(e.to_string(), &e))?;
    let (columns, fields) = (statement.columns(), schema.fields());
    if columns.len() != fields.len() {
        return Ok(Err(format!("the query has {} columns, the table {}", columns.len(), fields.len())));
    }
    let mut decoders = Vec::with_capacity(columns.len());
    for (c, f) in columns.iter().zip(fields) {
        match Decode::of(c.type_(), f.data_type()) {
            Some(d) => decoders.push(d),
            None => {
                return Ok(Err(format!("column `{}` is `{}` read as {}", f.name(), c.type_().name(), f.data_type())));
            }
        }
    }
    Ok(Ok(decoders))
}

/// Streams the rows of `query` as batches of `schema` (whose fields
/// `decoders` decode, in order), `batch_rows` rows each, to `emit`, which
/// returns false to stop. The stream is read on the runtime and decoded on
/// a blocking thread; `emit` is called there.
pub async fn read(
    connect: &Connect,
    query: &str,
    decoders: Arc<[Decode]>,
    schema: SchemaRef,
    batch_rows: usize,
    emit: impl FnMut(RecordBatch) -> bool + Send + 'static,
) -> Result<(), String> {
    let client = connect.connect().await?;
    let chain = |e: tokio_postgres::Error| crate::error::with_causes(e.to_string(), &e);
    let stream = client.copy_out(&format!("COPY ({query}) TO STDOUT (FORMAT binary)")).await.map_err(chain)?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<Bytes>>(4);
    let decoded = tokio::task::spawn_blocking(move || decode(&mut rx, &decoders, &schema, batch_rows, emit));
    let read = crate::backend::pipe::send_batches(stream, tx, CHUNKS_PER_SEND, chain);
    let (read, decoded) = tokio::join!(read, decoded);
    // An error reading the stream explains a decoder that saw it cut short.
    read?;
    decoded.map_err(|e| format!("the decoding thread stopped: {e}"))?
}

/// Decodes the chunks of a COPY stream into batches.
fn decode(
    chunks: &mut tokio::sync::mpsc::Receiver<Vec<Bytes>>,
    decoders: &[Decode],
    schema: &SchemaRef,
    batch_rows: usize,
    mut emit: impl FnMut(RecordBatch) -> bool,
) -> Result<(), String> {
    let mut reader = CopyReader::new();
    let mut columns: Vec<Column> = decoders.iter().map(|d| Column::new(d, batch_rows)).collect();
    let (mut rows, mut in_batch) = (0u64, 0usize);
    let finish = |columns: &mut [Column], n: usize| -> Result<RecordBatch, String> {
        let arrays = columns.iter_mut().map(Column::finish).collect();
        let options = RecordBatchOptions::new().with_row_count(Some(n));
        RecordBatch::try_new_with_options(Arc::clone(schema), arrays, &options).map_err(|e| e.to_string())
    };
    while let Some(chunks) = chunks.blocking_recv() {
        for chunk in chunks {
            let mut full = Vec::new();
            reader.feed(&chunk, |data, fields| {
                rows += 1;
                if fields.len() != columns.len() {
                    return Err(format!("row {rows} came with {} fields, not {}", fields.len(), columns.len()));
                }
                for ((column, field), f) in columns.iter_mut().zip(fields).zip(schema.fields()) {
                    column
                        .append(field.map(|(a, b)| &data[a..b]))
                        .map_err(|e| format!("row {rows}, column `{}` (read as {}): {e}", f.name(), f.data_type()))?;
                }
                in_batch += 1;
                if in_batch == batch_rows {
                    full.push(finish(&mut columns, in_batch)?);
                    in_batch = 0;
                }
                Ok(())
            })?;
            for batch in full {
                if !emit(batch) {
                    // Dropping the receiver ends the read.
                    return Ok(());
                }
            }
        }
    }
    if !reader.ended {
        return Err(format!("the COPY stream ended after {rows} rows without its trailer"));
    }
    if in_batch > 0 {
        emit(finish(&mut columns, in_batch)?);
    }
    Ok(())
}

/// A column being built.
enum Column {
    Bool(BooleanBuilder),
    /// With the values' width on the wire.
    Int64(Int64Builder, u8),
    Float64(Float64Builder, u8),
    /// With its precision, scale, and 10^precision, which every value's
    /// magnitude is below.
    Decimal(Decimal128Builder, u8, i8, i128),
    Text(StringBuilder),
    LargeText(LargeStringBuilder),
    Bytes(BinaryBuilder),
    LargeBytes(LargeBinaryBuilder),
    Date(Date32Builder),
    TimeMicros(Time64MicrosecondBuilder),
    TimeNanos(Time64NanosecondBuilder),
    TimestampMicros(TimestampMicrosecondBuilder, Option<Arc<str>>),
    TimestampNanos(TimestampNanosecondBuilder, Option<Arc<str>>),
}

impl Column {
    fn new(d: &Decode, rows: usize) -> Self {
        match d {
            Decode::Bool => Column::Bool(BooleanBuilder::with_capacity(rows)),
            &Decode::Int64 { bytes } => Column::Int64(Int64Builder::with_capacity(rows), bytes),
            &Decode::Float64 { bytes } => Column::Float64(Float64Builder::with_capacity(rows), bytes),
            &Decode::Decimal { precision, scale } => Column::Decimal(
                Decimal128Builder::with_capacity(rows),
                precision,
                scale,
                10i128.checked_pow(u32::from(precision)).unwrap_or(i128::MAX),
            ),
            Decode::Text { large: false } => Column::Text(StringBuilder::with_capacity(rows, rows * 16)),
            Decode::Text { large: true } => Column::LargeText(LargeStringBuilder::with_capacity(rows, rows * 16)),
            Decode::Bytes { large: false } => Column::Bytes(BinaryBuilder::with_capacity(rows, rows * 16)),
            Decode::Bytes { large: true } => Column::LargeBytes(LargeBinaryBuilder::with_capacity(rows, rows * 16)),
            Decode::Date => Column::Date(Date32Builder::with_capacity(rows)),
            Decode::Time { unit: TimeUnit::Nanosecond } => {
                Column::TimeNanos(Time64NanosecondBuilder::with_capacity(rows))
            }
            Decode::Time { .. } => Column::TimeMicros(Time64MicrosecondBuilder::with_capacity(rows)),
            Decode::Timestamp { unit: TimeUnit::Nanosecond, zone } => {
                Column::TimestampNanos(TimestampNanosecondBuilder::with_capacity(rows), zone.clone())
            }
            Decode::Timestamp { zone, .. } => {
                Column::TimestampMicros(TimestampMicrosecondBuilder::with_capacity(rows), zone.clone())
            }
        }
    }

    /// Appends one field's binary value (`None`: NULL).
    #[inline]
    fn append(&mut self, field: Option<&[u8]>) -> Result<(), String> {
        let Some(b) = field else {
            self.append_null();
            return Ok(());
        };
        let bad = || format!("a {}-byte value does not read as this type", b.len());
        let i64_of = |b: &[u8]| be::<8>(b).map(i64::from_be_bytes).ok_or_else(bad);
        // PostgreSQL's infinities are the extremes of the type.
        let micros = |b: &[u8]| match i64_of(b)? {
            i64::MIN | i64::MAX => Err("an infinite timestamp has no Arrow value".to_owned()),
            v => v.checked_add(PG_EPOCH_MICROS).ok_or_else(bad),
        };
        match self {
            Column::Bool(c) => c.append_value(*b.first().ok_or_else(bad)? != 0),
            Column::Int64(c, 8) => c.append_value(i64_of(b)?),
            Column::Int64(c, 4) => c.append_value(be::<4>(b).map(i32::from_be_bytes).ok_or_else(bad)?.into()),
            Column::Int64(c, _) => c.append_value(be::<2>(b).map(i16::from_be_bytes).ok_or_else(bad)?.into()),
            Column::Float64(c, 8) => c.append_value(be::<8>(b).map(f64::from_be_bytes).ok_or_else(bad)?),
            Column::Float64(c, _) => c.append_value(be::<4>(b).map(f32::from_be_bytes).ok_or_else(bad)?.into()),
            Column::Decimal(c, precision, scale, bound) => {
                let v = numeric_unscaled(b, *scale).ok_or_else(|| {
                    format!("the value is NaN, infinite, or has more than {scale} fraction digits or 38 digits")
                })?;
                if v.unsigned_abs() >= bound.unsigned_abs() {
                    return Err(format!("the value has more than {precision} digits"));
                }
                c.append_value(v);
            }
            Column::Text(c) => c.append_value(std::str::from_utf8(b).map_err(|e| e.to_string())?),
            Column::LargeText(c) => c.append_value(std::str::from_utf8(b).map_err(|e| e.to_string())?),
            Column::Bytes(c) => c.append_value(b),
            Column::LargeBytes(c) => c.append_value(b),
            Column::Date(c) => match be::<4>(b).map(i32::from_be_bytes).ok_or_else(bad)? {
                i32::MIN | i32::MAX => return Err("an infinite date has no Arrow value".to_owned()),
                days => c.append_value(days.checked_add(PG_EPOCH_DAYS).ok_or_else(bad)?),
            },
            Column::TimeMicros(c) => c.append_value(i64_of(b)?),
            Column::TimeNanos(c) => c.append_value(i64_of(b)?.saturating_mul(1000)),
            Column::TimestampMicros(c, _) => c.append_value(micros(b)?),
            Column::TimestampNanos(c, _) => c.append_value(
                micros(b)?
                    .checked_mul(1000)
                    .ok_or_else(|| "the timestamp is outside the nanosecond range (1677-2262)".to_owned())?,
            ),
        }
        Ok(())
    }

    fn append_null(&mut self) {
        match self {
            Column::Bool(c) => c.append_null(),
            Column::Int64(c, _) => c.append_null(),
            Column::Float64(c, _) => c.append_null(),
            Column::Decimal(c, ..) => c.append_null(),
            Column::Text(c) => c.append_null(),
            Column::LargeText(c) => c.append_null(),
            Column::Bytes(c) => c.append_null(),
            Column::LargeBytes(c) => c.append_null(),
            Column::Date(c) => c.append_null(),
            Column::TimeMicros(c) => c.append_null(),
            Column::TimeNanos(c) => c.append_null(),
            Column::TimestampMicros(c, _) => c.append_null(),
            Column::TimestampNanos(c, _) => c.append_null(),
        }
    }

    /// The column's values so far, leaving it empty.
    fn finish(&mut self) -> ArrayRef {
        match self {
            Column::Bool(c) => Arc::new(c.finish()),
            Column::Int64(c, _) => Arc::new(c.finish()),
            Column::Float64(c, _) => Arc::new(c.finish()),
            Column::Decimal(c, p, s, _) => Arc::new(
                c.finish().with_precision_and_scale(*p, *s).expect("a precision and scale Decode::of accepted"),
            ),
            Column::Text(c) => Arc::new(c.finish()),
            Column::LargeText(c) => Arc::new(c.finish()),
            Column::Bytes(c) => Arc::new(c.finish()),
            Column::LargeBytes(c) => Arc::new(c.finish()),
            Column::Date(c) => Arc::new(c.finish()),
            Column::TimeMicros(c) => Arc::new(c.finish()),
            Column::TimeNanos(c) => Arc::new(c.finish()),
            Column::TimestampMicros(c, zone) => Arc::new(c.finish().with_timezone_opt(zone.clone())),
            Column::TimestampNanos(c, zone) => Arc::new(c.finish().with_timezone_opt(zone.clone())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_that_need_connectorx_are_left_to_it() {
        let c = Connect::of_url("postgresql://me:p%40ss@db.example:6432/sales%20db?sslmode=require").unwrap();
        assert_eq!(c.config.get_user(), Some("me"));
        assert_eq!(c.config.get_password(), Some(&b"p@ss"[..]));
        assert_eq!(c.config.get_dbname(), Some("sales db"));
        assert_eq!(c.config.get_ports(), [6432]);
        assert_eq!(c.config.get_ssl_mode(), SslMode::Require);
        assert!(!format!("{c:?}").contains("p@ss"), "the password never prints");
        assert!(Connect::of_url("postgres://me@localhost/db").is_some());
        let v6 = Connect::of_url("postgres://me@[::1]:5433/db").unwrap();
        assert_eq!(v6.config.get_hosts(), [tokio_postgres::config::Host::Tcp("::1".to_owned())]);
        for url in [
            "postgresql://me@localhost/db?cxprotocol=cursor",
            "postgresql://me@localhost/db?sslmode=require&sslrootcert=/ca.pem",
            "postgresql://me@localhost/db?sslmode=prefer&sslcert=/c.pem&sslkey=/k.pem",
            "postgresql://me@localhost/db?sslmode=verify-full",
            "postgresql:///db",
        ] {
            assert!(Connect::of_url(url).is_none(), "{url}");
        }
    }

    #[test]
    fn decodes_only_the_types_connectorx_maps_the_same_way() {
        use DataType as D;
        assert_eq!(Decode::of(&Type::INT4, &D::Int64), Some(Decode::Int64 { bytes: 4 }));
        assert_eq!(Decode::of(&Type::INT4, &D::Int32), None, "a type connectorx does not give");
        assert_eq!(Decode::of(&Type::FLOAT4, &D::Float64), Some(Decode::Float64 { bytes: 4 }));
        assert_eq!(
            Decode::of(&Type::NUMERIC, &D::Decimal128(12, 2)),
            Some(Decode::Decimal { precision: 12, scale: 2 })
        );
        assert_eq!(Decode::of(&Type::NUMERIC, &D::Decimal128(5, -2)), None);
        assert_eq!(Decode::of(&Type::VARCHAR, &D::LargeUtf8), Some(Decode::Text { large: true }));
        assert_eq!(
            Decode::of(&Type::TIMESTAMPTZ, &D::Timestamp(TimeUnit::Microsecond, Some("+00:00".into()))),
            Some(Decode::Timestamp { unit: TimeUnit::Microsecond, zone: Some("+00:00".into()) })
        );
        assert_eq!(Decode::of(&Type::TIMESTAMPTZ, &D::Timestamp(TimeUnit::Microsecond, None)), None);
        assert_eq!(Decode::of(&Type::UUID, &D::LargeUtf8), None, "uuid is connectorx's");
    }

    #[test]
    fn values_decode_at_their_arrow_types_and_bad_ones_say_why() {
        use datafusion::arrow::array::Array as _;
        let mut ts = Column::new(&Decode::Timestamp { unit: TimeUnit::Microsecond, zone: None }, 4);
        ts.append(Some(&0i64.to_be_bytes())).unwrap();
        ts.append(None).unwrap();
        for infinity in [i64::MAX, i64::MIN] {
            let err = ts.append(Some(&infinity.to_be_bytes())).unwrap_err();
            assert!(err.contains("infinite"), "{err}");
        }
        let mut date = Column::new(&Decode::Date, 1);
        assert!(date.append(Some(&i32::MIN.to_be_bytes())).unwrap_err().contains("infinite date"));
        let a = ts.finish();
        let a = a.as_any().downcast_ref::<datafusion::arrow::array::TimestampMicrosecondArray>().unwrap();
        assert_eq!((a.value(0), a.is_null(1)), (PG_EPOCH_MICROS, true));

        let mut d = Column::new(&Decode::Decimal { precision: 4, scale: 2 }, 2);
        // 12.5: groups [12, 5000], weight 0, dscale 1.
        let num = |groups: &[u16], weight: i16, sign: u16| {
            let mut b = Vec::new();
            b.extend((groups.len() as u16).to_be_bytes());
            b.extend(weight.to_be_bytes());
            b.extend(sign.to_be_bytes());
            b.extend(1u16.to_be_bytes());
            groups.iter().for_each(|g| b.extend(g.to_be_bytes()));
            b
        };
        d.append(Some(&num(&[12, 5000], 0, 0x4000))).unwrap();
        assert!(d.append(Some(&num(&[123], 0, 0))).unwrap_err().contains("more than 4 digits"));
        assert!(d.append(Some(&num(&[], 0, 0xC000))).unwrap_err().contains("NaN"));
        assert!(d.append(Some(&[0, 1])).is_err(), "cut short");
        let a = d.finish();
        let a = a.as_any().downcast_ref::<datafusion::arrow::array::Decimal128Array>().unwrap();
        assert_eq!((a.value(0), a.precision(), a.scale()), (-1250, 4, 2));

        let mut t = Column::new(&Decode::Text { large: true }, 1);
        assert!(t.append(Some("é".as_bytes())).is_ok());
        assert!(t.append(Some(&[0xff])).is_err(), "invalid UTF-8");
        let mut i = Column::new(&Decode::Int64 { bytes: 2 }, 2);
        i.append(Some(&(-2i16).to_be_bytes())).unwrap();
        assert!(i.append(Some(&[0, 0, 0, 1])).unwrap_err().contains("4-byte"));
        let a = i.finish();
        assert_eq!(a.as_any().downcast_ref::<datafusion::arrow::array::Int64Array>().unwrap().value(0), -2);
    }
}
