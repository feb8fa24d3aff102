//! The keyed SQL functions the policies call: `ferry_mask_hash(x)`,
//! `ferry_mask_email(x)`, `ferry_mask_phone(x)`, `ferry_mask_partial(x,
//! first, last)` and `ferry_mask_date_shift(x, days)`, each bound to the
//! run's key. NULL stays NULL.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Int64Array, PrimitiveArray, StringBuilder, StringViewBuilder,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{ArrowPrimitiveType, DataType, Date32Type, Date64Type, Int64Type, TimeUnit};
use datafusion::common::{ScalarValue, exec_err, plan_err};
use datafusion::error::Result;
use datafusion::logical_expr::{ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::Key;

/// Every function, bound to `key`.
pub fn udfs(key: &Key) -> Vec<ScalarUDF> {
    [Kind::Hash, Kind::Email, Kind::Phone, Kind::Partial, Kind::DateShift]
        .into_iter()
        .map(|kind| {
            ScalarUDF::new_from_impl(MaskFn {
                kind,
                key: key.clone(),
                keyed: Keyed::new(key, kind.tag()),
                signature: Signature::user_defined(Volatility::Immutable),
            })
        })
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Hash,
    Email,
    Phone,
    Partial,
    DateShift,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Hash => "ferry_mask_hash",
            Kind::Email => "ferry_mask_email",
            Kind::Phone => "ferry_mask_phone",
            Kind::Partial => "ferry_mask_partial",
            Kind::DateShift => "ferry_mask_date_shift",
        }
    }

    /// Keeps the policies' hashes apart: a value hashed for `email` tells
    /// nothing of its `hash`.
    fn tag(self) -> &'static [u8] {
        self.name().as_bytes()
    }
}

#[derive(Debug)]
struct MaskFn {
    kind: Kind,
    key: Key,
    /// The HMAC keyed and fed the function's tag, cloned for each value.
    keyed: Keyed,
    signature: Signature,
}

impl PartialEq for MaskFn {
    fn eq(&self, other: &Self) -> bool {
        (self.kind, &self.key) == (other.kind, &other.key)
    }
}

impl Eq for MaskFn {}

impl std::hash::Hash for MaskFn {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (self.kind, &self.key).hash(state);
    }
}

fn is_text(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null)
}

impl ScalarUDFImpl for MaskFn {
    fn name(&self) -> &str {
        self.kind.name()
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, args: &[DataType]) -> Result<Vec<DataType>> {
        let (arity, first_ok) = match self.kind {
            Kind::Hash => (1, is_text(&args[0]) || args[0].is_integer()),
            Kind::Email | Kind::Phone => (1, is_text(&args[0])),
            Kind::Partial => (3, is_text(&args[0])),
            Kind::DateShift => {
                (2, matches!(args[0], DataType::Date32 | DataType::Date64 | DataType::Timestamp(..) | DataType::Null))
            }
        };
        if args.len() != arity || !first_ok {
            return plan_err!("{} cannot take ({args:?})", self.name());
        }
        let mut out = args.to_vec();
        if is_text(&args[0]) && args[0] != DataType::Utf8View {
            out[0] = DataType::Utf8;
        }
        for t in out.iter_mut().skip(1) {
            *t = DataType::Int64;
        }
        Ok(out)
    }

    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        Ok(match self.kind {
            Kind::Hash if args[0].is_integer() => args[0].clone(),
            Kind::DateShift => args[0].clone(),
            _ if args[0] == DataType::Utf8View => DataType::Utf8View,
            _ => DataType::Utf8,
        })
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let n = args.number_rows;
        let value = args.args[0].to_array(n)?;
        let option = |i: usize| -> Result<i64> {
            match args.args.get(i) {
                Some(ColumnarValue::Scalar(ScalarValue::Int64(Some(v)))) => Ok(*v),
                _ => exec_err!("{}: argument {} must be a whole number", self.name(), i + 1),
            }
        };
        let out: ArrayRef = match self.kind {
            Kind::Hash if value.data_type().is_integer() => {
                let bits = value.data_type().primitive_width().unwrap_or(8) as u32 * 8;
                let signed = value.data_type().is_signed_integer();
                // The largest value of the type (of i64 for u64) that the hash is cut to.
                let top = if signed || bits == 64 { (1u64 << (bits - 1)) - 1 } else { (1u64 << bits) - 1 };
                let ints = cast(&value, &DataType::Int64)?;
                let hashed: Int64Array = ints.as_primitive::<Int64Type>().unary_opt(|v| {
                    let d = self.keyed.digest(0, v.to_string().as_bytes());
                    Some((u64::from_le_bytes(d[..8].try_into().expect("8 bytes")) & top) as i64)
                });
                cast(&hashed, value.data_type())?
            }
            Kind::Hash => self.text(&value, |_, stream, out| hex(&stream.first()[..16], out))?,
            Kind::Email => self.text(&value, fake_email)?,
            Kind::Phone => self.text(&value, |s, stream, out| out.extend(s.chars().map(|c| stream.like(c))))?,
            Kind::Partial => {
                let (first, last) = (option(1)?.max(0) as usize, option(2)?.max(0) as usize);
                self.text(&value, |s, _, out| partial(s, first, last, out))?
            }
            Kind::DateShift => self.shift(&value, option(1)?.max(1))?,
        };
        Ok(ColumnarValue::Array(out))
    }
}

impl MaskFn {
    /// Each text value through `f`, with the key's stream for it.
    /// A column of few distinct values (a status, a country) is masked
    /// once per value and batch: up to this many are remembered.
    const REMEMBERED: usize = 1024;
    /// After this many values of a batch, a column more than half of whose
    /// values were new (a name, a comment) is remembered no longer: it
    /// would only cost a lookup and a copy per value.
    const SAMPLE: usize = 64;

    /// Each text value through `f`; a string view column stays one (no
    /// copy either way).
    fn text(&self, value: &ArrayRef, f: impl Fn(&str, &mut Stream<'_>, &mut String)) -> Result<ArrayRef> {
        if value.data_type() == &DataType::Utf8View {
            let strings = value.as_string_view();
            let mut out = StringViewBuilder::with_capacity(strings.len());
            self.each(strings.iter(), &f, |v| match v {
                Some(v) => out.append_value(v),
                None => out.append_null(),
            });
            return Ok(Arc::new(out.finish()));
        }
        let value = cast(value, &DataType::Utf8)?;
        let strings = value.as_string::<i32>();
        let mut out = StringBuilder::with_capacity(strings.len(), strings.value_data().len());
        self.each(strings.iter(), &f, |v| match v {
            Some(v) => out.append_value(v),
            None => out.append_null(),
        });
        Ok(Arc::new(out.finish()))
    }

    /// Masks `values` in order into `emit`, a batch's repeated values once
    /// (unless they hardly repeat).
    fn each<'v>(
        &self,
        values: impl Iterator<Item = Option<&'v str>>,
        f: &impl Fn(&str, &mut Stream<'_>, &mut String),
        mut emit: impl FnMut(Option<&str>),
    ) {
        let mut masked = String::new();
        let mut remembered: foldhash::HashMap<&str, String> = foldhash::HashMap::default();
        let mut remembering = true;
        for (k, v) in values.enumerate() {
            let Some(s) = v else {
                emit(None);
                continue;
            };
            if remembering && let Some(m) = remembered.get(s) {
                emit(Some(m));
                continue;
            }
            masked.clear();
            f(s, &mut Stream::new(&self.keyed, s.as_bytes()), &mut masked);
            emit(Some(&masked));
            if !remembering {
                continue;
            }
            if k >= Self::SAMPLE && remembered.len() * 2 > k {
                remembering = false;
                remembered = foldhash::HashMap::default();
            } else if remembered.len() < Self::REMEMBERED {
                remembered.insert(s, masked.clone());
            }
        }
    }

    /// Dates and times moved by whole days, up to `days` either way.
    fn shift(&self, value: &ArrayRef, days: i64) -> Result<ArrayRef> {
        let offset = |raw: i64| {
            let d = self.keyed.digest(0, &raw.to_le_bytes());
            let k = u64::from_le_bytes(d[..8].try_into().expect("8 bytes")) % (2 * days as u64);
            // -days..=-1 and 1..=days: never 0, so no value stays.
            let k = k as i64 - days;
            if k >= 0 { k + 1 } else { k }
        };
        fn moved<T: ArrowPrimitiveType>(a: &ArrayRef, per_day: i64, offset: impl Fn(i64) -> i64) -> ArrayRef
        where
            T::Native: Into<i64> + TryFrom<i64>,
        {
            let a: &PrimitiveArray<T> = a.as_primitive::<T>();
            let out: PrimitiveArray<T> = a.unary_opt(|v| {
                let raw: i64 = v.into();
                T::Native::try_from(raw + offset(raw) * per_day).ok()
            });
            Arc::new(out.with_data_type(a.data_type().clone()))
        }
        Ok(match value.data_type() {
            DataType::Date32 => moved::<Date32Type>(value, 1, offset),
            DataType::Date64 => moved::<Date64Type>(value, 86_400_000, offset),
            DataType::Timestamp(unit, _) => {
                let per_day = 86_400
                    * match unit {
                        TimeUnit::Second => 1,
                        TimeUnit::Millisecond => 1_000,
                        TimeUnit::Microsecond => 1_000_000,
                        TimeUnit::Nanosecond => 1_000_000_000,
                    };
                let raw = cast(value, &DataType::Int64)?;
                let shifted = moved::<Int64Type>(&raw, per_day, offset);
                cast(&shifted, value.data_type())?
            }
            DataType::Null => Arc::clone(value),
            other => return exec_err!("{}: cannot shift {other}", self.name()),
        })
    }
}

/// HMAC-SHA256 under the key, already fed a function's tag: what is left
/// per value is the value itself.
#[derive(Clone)]
struct Keyed(Hmac<Sha256>);

impl std::fmt::Debug for Keyed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keyed(..)")
    }
}

impl Keyed {
    fn new(key: &Key, tag: &[u8]) -> Self {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&key.0).expect("HMAC takes a key of any length");
        mac.update(tag);
        mac.update(&[0]);
        Keyed(mac)
    }

    /// HMAC-SHA256 of the tag, `block` and `value`.
    fn digest(&self, block: u32, value: &[u8]) -> [u8; 32] {
        let mut mac = self.0.clone();
        mac.update(&block.to_le_bytes());
        mac.update(value);
        mac.finalize().into_bytes().into()
    }
}

/// Keyed bytes derived from one value, as many as asked for, computed
/// when first asked for.
struct Stream<'a> {
    keyed: &'a Keyed,
    value: &'a [u8],
    /// The next block to compute.
    block: u32,
    bytes: [u8; 32],
    used: usize,
}

impl<'a> Stream<'a> {
    fn new(keyed: &'a Keyed, value: &'a [u8]) -> Self {
        Stream { keyed, value, block: 0, bytes: [0; 32], used: 32 }
    }

    /// The first block.
    fn first(&self) -> [u8; 32] {
        self.keyed.digest(0, self.value)
    }

    fn byte(&mut self) -> u8 {
        if self.used == self.bytes.len() {
            self.bytes = self.keyed.digest(self.block, self.value);
            self.block += 1;
            self.used = 0;
        }
        self.used += 1;
        self.bytes[self.used - 1]
    }

    /// A character like `c`: a digit for a digit, a letter of its case for
    /// a letter, anything else as it is.
    fn like(&mut self, c: char) -> char {
        match c {
            '0'..='9' => char::from(b'0' + self.byte() % 10),
            'a'..='z' => char::from(b'a' + self.byte() % 26),
            'A'..='Z' => char::from(b'A' + self.byte() % 26),
            c if c.is_alphanumeric() => char::from(b'a' + self.byte() % 26),
            c => c,
        }
    }
}

/// Lower-case hex of `bytes`.
/// Lower-case hex of `bytes` (a digest: at most 32), into `out`.
fn hex(bytes: &[u8], out: &mut String) {
    let mut digits = [0u8; 64];
    let digits = &mut digits[..bytes.len() * 2];
    hex::encode_to_slice(bytes, digits).expect("two digits a byte");
    out.push_str(std::str::from_utf8(digits).expect("hex digits are ASCII"));
}

/// An address of the same shape: the name and every part of the domain
/// but its last (`com`) replaced.
fn fake_email(s: &str, stream: &mut Stream<'_>, out: &mut String) {
    let Some((local, domain)) = s.rsplit_once('@') else {
        out.extend(s.chars().map(|c| stream.like(c)));
        return;
    };
    out.extend(local.chars().map(|c| stream.like(c)));
    out.push('@');
    let (host, top) = domain.rsplit_once('.').unwrap_or((domain, ""));
    out.extend(host.chars().map(|c| stream.like(c)));
    if !top.is_empty() {
        out.push('.');
        out.push_str(top);
    }
}

/// The first `first` and last `last` characters, the rest `*`; all `*`
/// when that would show the whole value.
fn partial(s: &str, first: usize, last: usize, out: &mut String) {
    let n = s.chars().count();
    if n <= first + last {
        out.extend(std::iter::repeat_n('*', n));
        return;
    }
    for (k, c) in s.chars().enumerate() {
        out.push(if k < first || k >= n - last { c } else { '*' });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masked_values_keep_their_shape_and_follow_the_key() {
        let keyed = Keyed::new(&Key::of(b"0123456789abcdef"), Kind::Email.tag());
        let stream = |v: &'static str| Stream::new(&keyed, v.as_bytes());
        let fake = |v: &'static str, stream: &mut Stream<'_>| {
            let mut out = String::new();
            fake_email(v, stream, &mut out);
            out
        };
        let a = fake("ada.lovelace@example.co.uk", &mut stream("ada.lovelace@example.co.uk"));
        let b = fake("ada.lovelace@example.co.uk", &mut stream("ada.lovelace@example.co.uk"));
        assert_eq!(a, b, "the same input, the same fake");
        assert_eq!(a.len(), "ada.lovelace@example.co.uk".len());
        assert!(a.ends_with(".uk") && a.contains('@') && !a.contains("lovelace"), "{a}");
        let other = Keyed::new(&Key::of(b"fedcba9876543210"), Kind::Email.tag());
        let c = fake("ada.lovelace@example.co.uk", &mut Stream::new(&other, b"ada.lovelace@example.co.uk"));
        assert_ne!(a, c, "another key, another fake");
        let shown = |v: &str, first, last| {
            let mut out = String::new();
            partial(v, first, last, &mut out);
            out
        };
        assert_eq!(shown("4111111111111111", 0, 4), "************1111");
        assert_eq!(shown("Bo", 1, 2), "**");
        assert_eq!(shown("Zoë Brontë", 1, 1), "Z********ë");
        let mut hexed = String::new();
        hex(&[0x00, 0x9f, 0xff], &mut hexed);
        assert_eq!(hexed, "009fff");
    }

    /// Values remembered within a batch, or not (a column that hardly
    /// repeats is remembered no longer), mask as each value alone does.
    #[test]
    fn remembering_never_changes_a_masked_value() {
        use datafusion::arrow::array::{StringArray, StringViewArray};
        let key = Key::of(b"0123456789abcdef");
        let f = MaskFn {
            kind: Kind::Hash,
            key: key.clone(),
            keyed: Keyed::new(&key, Kind::Hash.tag()),
            signature: Signature::user_defined(Volatility::Immutable),
        };
        let alone = |v: &str| {
            let mut out = String::new();
            hex(&Stream::new(&f.keyed, v.as_bytes()).first()[..16], &mut out);
            out
        };
        let hash = |_: &str, stream: &mut Stream<'_>, out: &mut String| hex(&stream.first()[..16], out);
        // Mostly distinct, then repeating; repeating from the start.
        let distinct_first: Vec<String> =
            (0..300).map(|i| format!("comment {i}")).chain((0..300).map(|i| format!("status {}", i % 3))).collect();
        let repeating: Vec<String> = (0..600).map(|i| format!("status {}", i % 5)).collect();
        for values in [distinct_first, repeating] {
            let view: ArrayRef = Arc::new(StringViewArray::from_iter_values(values.iter()));
            let plain: ArrayRef = Arc::new(StringArray::from_iter_values(values.iter()));
            let (view, plain) = (f.text(&view, hash).unwrap(), f.text(&plain, hash).unwrap());
            for (i, v) in values.iter().enumerate() {
                assert_eq!(view.as_string_view().value(i), alone(v), "row {i}");
                assert_eq!(plain.as_string::<i32>().value(i), alone(v), "row {i}");
            }
        }
    }
}
