//! One column's profile: its values classified one by one, as text.

use std::collections::BTreeMap;
use std::collections::hash_map::Entry;

use foldhash::HashMap;

use chrono::{NaiveDate, NaiveDateTime};
use datafusion::arrow::array::{Array, StringArray};
use serde::Serialize;

use super::DISTINCT_BOUND;
use super::sketch::Sketch;

/// How many top values and patterns a profile lists.
const TOP: usize = 10;
/// The most distinct patterns counted per column: a column with more (free
/// text) counts those it saw first. Kept well under [`DISTINCT_BOUND`], so
/// that the patterns' map stays in cache.
const PATTERN_BOUND: usize = 10_000;
/// How many examples of a value that cannot be what it looks like.
const EXAMPLES: usize = 5;
/// The share of values that must look alike for the column to be named so.
const LOOKS_ALIKE: f64 = 0.9;

/// What a column's values are, taken together: the narrowest type that
/// every value (NULLs and blanks aside) parses as, else what nine in ten
/// look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Only NULLs and blanks.
    Empty,
    Integer,
    Decimal,
    Boolean,
    Date,
    Timestamp,
    Uuid,
    Email,
    Phone,
    Money,
    FreeText,
    Text,
}

/// Values read as dates, by format. `DD/MM/YYYY` and `MM/DD/YYYY` are told
/// apart only where one of them is no date (`25/12/2024`); a value that is
/// a date both ways and a different one (`03/04/2024`) is ambiguous.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DateFormats {
    /// `YYYY-MM-DD`.
    pub iso: u64,
    /// `DD/MM/YYYY`, and no date as `MM/DD/YYYY`.
    pub day_first: u64,
    /// `MM/DD/YYYY`, and no date as `DD/MM/YYYY`.
    pub month_first: u64,
    /// A date both ways, different ones.
    pub ambiguous: u64,
    /// The same date both ways (`04/04/2024`).
    pub either: u64,
    /// The shape of a date and no real date (`31/02/2024`, `2023-02-29`).
    pub impossible: u64,
    /// `YYYY-MM-DD HH:MM:SS` (or with `T`, with fractions).
    pub timestamps: u64,
}

/// What a column holds.
#[derive(Debug, Clone, Serialize)]
pub struct ColumnProfile {
    pub name: String,
    /// The type the source declares (or its reader inferred).
    pub declared: String,
    pub kind: Kind,
    /// Likely personal data (an email, a phone, a name by its column's
    /// name): for masking.
    pub personal: bool,
    pub nulls: u64,
    /// Values that are empty or only whitespace.
    pub blanks: u64,
    /// Values neither NULL nor blank: what the counts below are out of.
    pub present: u64,
    /// Distinct values (NULL aside): exact when `distinct_exact`, else
    /// estimated (past [`DISTINCT_BOUND`], by a HyperLogLog sketch whose
    /// standard error is about 0.8%).
    pub distinct: u64,
    pub distinct_exact: bool,
    pub min: Option<String>,
    pub max: Option<String>,
    /// Shortest and longest value, in characters.
    pub min_length: Option<u64>,
    pub max_length: Option<u64>,
    pub integer: u64,
    /// Values that parse as a decimal number (integers included).
    pub decimal: u64,
    /// The `numeric(precision, scale)` that holds every decimal value.
    pub decimal_precision: u64,
    pub decimal_scale: u64,
    pub boolean: u64,
    pub dates: DateFormats,
    /// First values that have a date's shape but are no date.
    pub impossible_examples: Vec<String>,
    /// Values (blanks aside) that do not parse as the declared type: an
    /// integer column's `12.5` or `n/a`, a date column's `31/12/2024`.
    pub type_breaks: u64,
    /// The first of them, each with the line of the file it is on where
    /// the file is a local CSV (found by [`super::lines`]).
    pub break_examples: Vec<Located>,
    /// Digits-only values with a leading zero (`007`), lost if read as a number.
    pub leading_zeros: u64,
    /// Values with whitespace around them or doubled inside.
    pub stray_whitespace: u64,
    /// Most frequent values, with their counts.
    pub top: Vec<(String, u64)>,
    /// Most frequent shapes (`A` upper case, `a` lower case, `9` digit,
    /// other characters as they are), with their counts, among the first
    /// 10,000 shapes seen (`PATTERN_BOUND`).
    pub patterns: Vec<(String, u64)>,
    /// Spellings of one value that differ only in case or punctuation
    /// (`USA`, `usa`, `U.S.A.`).
    pub spellings: Vec<Vec<String>>,
    /// Values looking like an email, a phone number, a UUID, money.
    pub looks: BTreeMap<&'static str, u64>,
    /// Values holding a character beyond ASCII (an accent, another script).
    pub non_ascii: u64,
    /// Values holding U+FFFD, the replacement character: bytes that were
    /// no text in the file's encoding (replaced when read), or were lost so
    /// before the file was written.
    pub replaced: u64,
    pub replaced_examples: Vec<Located>,
    /// Values that read as UTF-8 bytes taken for windows-1252 (`JosÃ©` for
    /// `José`): text decoded twice, or in the wrong encoding.
    pub mojibake: u64,
    pub mojibake_examples: Vec<Located>,
}

impl ColumnProfile {
    /// Drops every value the profile holds (top values, min and max,
    /// examples, spellings, patterns), keeping the counts: for a masked
    /// column in a masked run, whose clear values must not be written.
    pub fn withhold_values(&mut self) {
        self.min = None;
        self.max = None;
        self.top.clear();
        self.patterns.clear();
        self.spellings.clear();
        self.impossible_examples.clear();
        for examples in self.examples_mut() {
            examples.clear();
        }
    }

    /// The examples whose lines [`super::locate`] finds.
    pub fn examples_mut(&mut self) -> [&mut Vec<Located>; 3] {
        [&mut self.break_examples, &mut self.replaced_examples, &mut self.mojibake_examples]
    }

    /// Whether any example waits for its line.
    pub fn has_examples(&self) -> bool {
        !(self.break_examples.is_empty() && self.replaced_examples.is_empty() && self.mojibake_examples.is_empty())
    }
}

/// A value, and the line of its file (1-based, the header being line 1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Located {
    pub value: String,
    pub line: Option<u64>,
}

/// What the declared type asks of a value as text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Integer,
    Number,
    Boolean,
    /// An ISO date (`2024-01-31`).
    Date,
    /// An ISO date, or a date and time.
    Timestamp,
    Anything,
}

impl Expect {
    fn of(declared: &str) -> Expect {
        if declared.starts_with("Int") || declared.starts_with("UInt") {
            Expect::Integer
        } else if declared.starts_with("Float") || declared.starts_with("Decimal") {
            Expect::Number
        } else if declared == "Boolean" {
            Expect::Boolean
        } else if declared.starts_with("Date") {
            Expect::Date
        } else if declared.starts_with("Timestamp") {
            Expect::Timestamp
        } else {
            Expect::Anything
        }
    }
}

/// Collects one column's profile, batch by batch.
pub(super) struct Accumulator {
    p: ColumnProfile,
    expect: Expect,
    numeric: bool,
    /// The min's and max's values as numbers, in a numeric column.
    min_number: Option<f64>,
    max_number: Option<f64>,
    /// Each distinct value while under [`DISTINCT_BOUND`], and its rows.
    values: Tally,
    /// Past the bound (so `distinct_exact` false): the estimate of every
    /// value seen, begun from those held in `values`, which then no longer
    /// grows.
    sketch: Option<Sketch>,
    /// The hashes of the batch's values that found no room in `values`,
    /// for the sketch.
    turned_away: Vec<u64>,
    /// Each distinct pattern, and its rows (never classified: its
    /// [`Tally::classified`] is unused).
    patterns: Tally,
    /// The pattern of the value at hand, as UTF-8 (reused).
    shape: Vec<u8>,
}

/// Distinct strings, each with its rows, up to a bound, keyed by their
/// 128-bit hash: a string seen again is counted without reading the one
/// kept (which, spread over the heap, cost a cache miss per row). Two
/// strings share a hash with a chance of about 2^-128 per pair.
struct Tally {
    /// The most strings held.
    bound: usize,
    seen: HashMap<u128, Seen>,
    /// The strings, in the order first seen ([`Seen::order`]).
    texts: Vec<String>,
    /// Each string's rows classified so far (see
    /// [`Accumulator::classify_pending`]), by its order: kept apart from
    /// `seen`, whose entries each row reads, so that they stay small.
    classified: Vec<u64>,
    /// Once `seen` is full (and so no longer grows): which hashes it may
    /// hold, so that a string past the bound, in a column of many distinct
    /// values, is turned away without probing the map.
    full: Option<Filter>,
}

impl Tally {
    fn new(bound: usize) -> Tally {
        Tally { bound, seen: HashMap::default(), texts: Vec::new(), classified: Vec::new(), full: None }
    }

    /// The entry of the string hashed `hash` (made by `text` when it is
    /// new, with no rows yet); `None` when it is new and there is no room.
    fn entry(&mut self, hash: u128, text: impl FnOnce() -> String) -> Option<&mut Seen> {
        if self.full.is_none() && self.seen.len() == self.bound {
            self.full = Some(Filter::of(self.seen.keys().copied()));
        }
        if let Some(filter) = &self.full {
            return if filter.may_hold(hash) { self.seen.get_mut(&hash) } else { None };
        }
        match self.seen.entry(hash) {
            Entry::Occupied(e) => Some(e.into_mut()),
            Entry::Vacant(e) => {
                let order = self.texts.len() as u64;
                self.texts.push(text());
                self.classified.push(0);
                Some(e.insert(Seen { rows: 0, order }))
            }
        }
    }

    /// Adds the rows of `other` (later rows, all classified), its strings
    /// after this one's in their order; whether every one found room.
    fn merge(&mut self, other: Tally) -> bool {
        let mut theirs: Vec<(u128, Seen)> = other.seen.into_iter().collect();
        theirs.sort_unstable_by_key(|(_, s)| s.order);
        let mut texts = other.texts;
        let mut all = true;
        for (hash, seen) in theirs {
            match self.entry(hash, || std::mem::take(&mut texts[seen.order as usize])) {
                Some(mine) => {
                    mine.rows += seen.rows;
                    let order = mine.order as usize;
                    self.classified[order] += seen.rows;
                }
                None => all = false,
            }
        }
        all
    }

    /// The hashes held (each one's low 64 bits).
    fn hashes(&self) -> impl Iterator<Item = u64> + '_ {
        self.seen.keys().map(|&h| h as u64)
    }

    /// The [`TOP`] most frequent strings, most first (then by value).
    fn most(&self) -> Vec<(String, u64)> {
        let mut all: Vec<(&String, u64)> =
            self.seen.values().map(|s| (&self.texts[s.order as usize], s.rows)).collect();
        let order = |a: &(&String, u64), b: &(&String, u64)| b.1.cmp(&a.1).then(a.0.cmp(b.0));
        // The first TOP picked out (in linear time), then sorted.
        if all.len() > TOP {
            all.select_nth_unstable_by(TOP - 1, order);
            all.truncate(TOP);
        }
        all.sort_by(order);
        all.into_iter().map(|(v, n)| (v.clone(), n)).collect()
    }
}

/// A Bloom filter over a full map's 128-bit hashes: 2^20 bits (128 KiB,
/// which stays in cache where the map does not), three bits a hash, taken
/// from the hash itself. Over [`DISTINCT_BOUND`] hashes, about 2% of the
/// hashes not held pass it (and are then looked up).
struct Filter(Box<[u64]>);

impl Filter {
    const BITS: u32 = 20;

    fn bits(hash: u128) -> [usize; 3] {
        let mask = (1u128 << Self::BITS) - 1;
        [0, 1, 2].map(|k| ((hash >> (32 * k)) & mask) as usize)
    }

    fn of(hashes: impl Iterator<Item = u128>) -> Filter {
        let mut words = vec![0u64; (1 << Self::BITS) / 64].into_boxed_slice();
        for hash in hashes {
            for bit in Self::bits(hash) {
                words[bit / 64] |= 1 << (bit % 64);
            }
        }
        Filter(words)
    }

    fn may_hold(&self, hash: u128) -> bool {
        Self::bits(hash).iter().all(|&bit| self.0[bit / 64] & (1 << (bit % 64)) != 0)
    }
}

/// A distinct string's rows.
#[derive(Debug, Clone, Copy)]
struct Seen {
    rows: u64,
    /// When it was first seen: values are classified in this order; its
    /// index in [`Tally::texts`].
    order: u64,
}

/// Spellings of a boolean.
const BOOLEANS: [&str; 8] = ["true", "false", "t", "f", "yes", "no", "y", "n"];

/// Whether a value has a date's shape, and is one.
enum Dated {
    No,
    Yes,
    Impossible,
}

impl Accumulator {
    pub(super) fn new(name: &str, declared: String) -> Self {
        let expect = Expect::of(&declared);
        let numeric = matches!(expect, Expect::Integer | Expect::Number);
        Accumulator {
            expect,
            p: ColumnProfile {
                name: name.to_owned(),
                declared,
                kind: Kind::Empty,
                personal: false,
                nulls: 0,
                blanks: 0,
                present: 0,
                distinct: 0,
                distinct_exact: true,
                min: None,
                max: None,
                min_length: None,
                max_length: None,
                integer: 0,
                decimal: 0,
                decimal_precision: 0,
                decimal_scale: 0,
                boolean: 0,
                dates: DateFormats::default(),
                impossible_examples: Vec::new(),
                type_breaks: 0,
                break_examples: Vec::new(),
                leading_zeros: 0,
                stray_whitespace: 0,
                top: Vec::new(),
                patterns: Vec::new(),
                spellings: Vec::new(),
                looks: BTreeMap::new(),
                non_ascii: 0,
                replaced: 0,
                replaced_examples: Vec::new(),
                mojibake: 0,
                mojibake_examples: Vec::new(),
            },
            numeric,
            min_number: None,
            max_number: None,
            values: Tally::new(DISTINCT_BOUND),
            sketch: None,
            turned_away: Vec::new(),
            patterns: Tally::new(PATTERN_BOUND),
            shape: Vec::new(),
        }
    }

    pub(super) fn add(&mut self, text: &StringArray) {
        // A run of rows holding one value (a sorted or clustered column's),
        // told by its hash, is counted once, weighted by its rows: the
        // hash, its first row, its rows.
        let mut run: Option<(u128, usize, u64)> = None;
        for i in 0..text.len() {
            if text.is_null(i) {
                self.p.nulls += 1;
                continue;
            }
            let hash = xxhash_rust::xxh3::xxh3_128(text.value(i).as_bytes());
            match &mut run {
                Some((same, _, rows)) if *same == hash => *rows += 1,
                _ => {
                    if let Some((hash, first, rows)) = run.replace((hash, i, 1)) {
                        self.value(text.value(first), hash, rows);
                    }
                }
            }
        }
        if let Some((hash, first, rows)) = run {
            self.value(text.value(first), hash, rows);
        }
        if !self.turned_away.is_empty() {
            let values = &self.values;
            let sketch = self.sketch.get_or_insert_with(|| Sketch::of(values.hashes()));
            sketch.add(self.turned_away.drain(..));
        }
    }

    /// Counts `rows` rows holding `v`, hashed `hash`. What a value is (its
    /// type, format, shape, looks) is worked out once per distinct value,
    /// weighted by its rows, when the profile merges or finishes
    /// ([`Accumulator::classify_pending`]); a value past the bound on
    /// distinct values, at once.
    fn value(&mut self, v: &str, hash: u128, rows: u64) {
        if let Some(seen) = self.values.entry(hash, || v.to_owned()) {
            seen.rows += rows;
        } else {
            self.p.distinct_exact = false;
            self.turned_away.push(hash as u64);
            self.classify(v, rows);
        }
    }

    /// Classifies the rows of the distinct values not classified yet, in
    /// the order the values were first seen (so examples stay the first).
    pub(super) fn classify_pending(&mut self) {
        let mut rows = vec![0; self.values.texts.len()];
        for seen in self.values.seen.values() {
            rows[seen.order as usize] = seen.rows;
        }
        let texts = std::mem::take(&mut self.values.texts);
        let mut classified = std::mem::take(&mut self.values.classified);
        for ((text, rows), classified) in texts.iter().zip(rows).zip(&mut classified) {
            if rows > *classified {
                self.classify(text, rows - *classified);
                *classified = rows;
            }
        }
        self.values.classified = classified;
        self.values.texts = texts;
    }

    /// Adds `n` rows holding `v` to the counts.
    fn classify(&mut self, v: &str, n: u64) {
        let p = &mut self.p;
        let ascii = v.is_ascii();
        if !ascii {
            p.non_ascii += n;
            if v.contains(char::REPLACEMENT_CHARACTER) {
                p.replaced += n;
                add_example(&mut p.replaced_examples, v);
            } else if is_mojibake(v) {
                p.mojibake += n;
                add_example(&mut p.mojibake_examples, v);
            }
        }
        let len = if ascii { v.len() } else { v.chars().count() } as u64;
        p.min_length = Some(p.min_length.map_or(len, |m| m.min(len)));
        p.max_length = Some(p.max_length.map_or(len, |m| m.max(len)));
        let t = v.trim();
        if t.is_empty() {
            p.blanks += n;
            return;
        }
        p.present += n;
        // A numeric column's value is parsed once; its min and max keep theirs.
        let number = if self.numeric { t.parse::<f64>().ok() } else { None };
        let below = |m: &str, m_number: Option<f64>| match (number, m_number) {
            (Some(x), Some(y)) => x < y,
            _ => t < m,
        };
        if p.min.as_deref().is_none_or(|m| below(m, self.min_number)) {
            p.min = Some(t.to_owned());
            self.min_number = number;
        }
        let above = |m: &str, m_number: Option<f64>| match (number, m_number) {
            (Some(x), Some(y)) => y < x,
            _ => m < t,
        };
        if p.max.as_deref().is_none_or(|m| above(m, self.max_number)) {
            p.max = Some(t.to_owned());
            self.max_number = number;
        }
        self.shape.clear();
        let c = census(t, &mut self.shape);
        if t.len() != v.len() || c.double_space {
            p.stray_whitespace += n;
        }
        let digits = if c.digits > 0 && c.digits + c.dots + c.signs == t.len() { decimal_digits(t) } else { None };
        if let Some((int_digits, scale)) = digits {
            p.decimal += n;
            p.integer += n * u64::from(c.dots == 0);
            // Precision: the most integer digits and the most fraction digits seen.
            let int_max = p.decimal_precision.saturating_sub(p.decimal_scale).max(int_digits);
            p.decimal_scale = p.decimal_scale.max(scale);
            p.decimal_precision = int_max + p.decimal_scale;
            if t.len() > 1 && t.starts_with('0') && c.digits == t.len() {
                p.leading_zeros += n;
            }
        }
        let boolean = t.len() <= 5 && BOOLEANS.iter().any(|b| t.eq_ignore_ascii_case(b));
        p.boolean += n * u64::from(boolean);
        let (iso, timestamps) = (p.dates.iso, p.dates.timestamps);
        // Every date has six digits or more (`1/2/2024`), and two dashes
        // (`2024-01-31`, `2024-01-31 10:00`) or two slashes.
        let dated =
            if c.digits >= 6 && (c.signs == 2 || c.slashes == 2) { date(t, &mut p.dates, n) } else { Dated::No };
        let fits = match self.expect {
            Expect::Integer => digits.is_some() && c.dots == 0,
            Expect::Number => digits.is_some(),
            Expect::Boolean => boolean,
            Expect::Date => p.dates.iso > iso,
            Expect::Timestamp => p.dates.iso > iso || p.dates.timestamps > timestamps,
            Expect::Anything => true,
        };
        if !fits {
            p.type_breaks += n;
            add_example(&mut p.break_examples, v);
        }
        match dated {
            Dated::No => {
                for (look, matched) in [
                    ("email", c.ats == 1 && is_email(t)),
                    ("phone", (7..=15).contains(&c.digits) && is_phone(t)),
                    ("uuid", t.len() == 36 && is_uuid(t)),
                    ("money", is_money(t)),
                ] {
                    if matched {
                        *p.looks.entry(look).or_insert(0) += n;
                    }
                }
            }
            Dated::Impossible
                if p.impossible_examples.len() < EXAMPLES && !p.impossible_examples.iter().any(|e| e == t) =>
            {
                p.impossible_examples.push(t.to_owned());
            }
            Dated::Yes | Dated::Impossible => {}
        }
        let shape = &self.shape;
        let text = || String::from_utf8(shape.clone()).expect("a pattern is text");
        if let Some(seen) = self.patterns.entry(xxhash_rust::xxh3::xxh3_128(shape), text) {
            seen.rows += n;
        }
    }

    /// Adds what `other` (the same column, later rows) collected.
    pub(super) fn merge(&mut self, mut other: Accumulator) {
        self.classify_pending();
        other.classify_pending();
        let (p, o) = (&mut self.p, other.p);
        for (mine, theirs) in [
            (&mut p.nulls, o.nulls),
            (&mut p.blanks, o.blanks),
            (&mut p.present, o.present),
            (&mut p.integer, o.integer),
            (&mut p.decimal, o.decimal),
            (&mut p.boolean, o.boolean),
            (&mut p.leading_zeros, o.leading_zeros),
            (&mut p.stray_whitespace, o.stray_whitespace),
            (&mut p.dates.iso, o.dates.iso),
            (&mut p.dates.day_first, o.dates.day_first),
            (&mut p.dates.month_first, o.dates.month_first),
            (&mut p.dates.ambiguous, o.dates.ambiguous),
            (&mut p.dates.either, o.dates.either),
            (&mut p.dates.impossible, o.dates.impossible),
            (&mut p.dates.timestamps, o.dates.timestamps),
            (&mut p.type_breaks, o.type_breaks),
            (&mut p.non_ascii, o.non_ascii),
            (&mut p.replaced, o.replaced),
            (&mut p.mojibake, o.mojibake),
        ] {
            *mine += theirs;
        }
        let int_max = (p.decimal_precision - p.decimal_scale).max(o.decimal_precision - o.decimal_scale);
        p.decimal_scale = p.decimal_scale.max(o.decimal_scale);
        p.decimal_precision = int_max + p.decimal_scale;
        if let Some(m) = o.min.filter(|m| p.min.as_deref().is_none_or(|mine| before(m, mine, self.numeric))) {
            p.min = Some(m);
            self.min_number = other.min_number;
        }
        if let Some(m) = o.max.filter(|m| p.max.as_deref().is_none_or(|mine| before(mine, m, self.numeric))) {
            p.max = Some(m);
            self.max_number = other.max_number;
        }
        p.min_length = p.min_length.into_iter().chain(o.min_length).min();
        p.max_length = p.max_length.into_iter().chain(o.max_length).max();
        for (mine, theirs) in [
            (&mut p.break_examples, o.break_examples),
            (&mut p.replaced_examples, o.replaced_examples),
            (&mut p.mojibake_examples, o.mojibake_examples),
        ] {
            for example in theirs {
                add_example(mine, &example.value);
            }
        }
        for example in o.impossible_examples {
            if p.impossible_examples.len() < EXAMPLES && !p.impossible_examples.contains(&example) {
                p.impossible_examples.push(example);
            }
        }
        for (look, n) in o.looks {
            *p.looks.entry(look).or_insert(0) += n;
        }
        p.distinct_exact &= o.distinct_exact;
        // The sketch, once begun, covers every value seen on both sides.
        let (mine, theirs) = (&self.values, &other.values);
        if self.sketch.is_some() || other.sketch.is_some() || mine.seen.len() + theirs.seen.len() > mine.bound {
            let mut sketch = self.sketch.take().unwrap_or_else(|| Sketch::of(mine.hashes()));
            match other.sketch {
                Some(theirs) => sketch.merge(theirs),
                None => sketch.add(theirs.hashes()),
            }
            self.sketch = Some(sketch);
        }
        // Both are classified: a value that finds no room is only not kept.
        p.distinct_exact &= self.values.merge(other.values);
        self.patterns.merge(other.patterns);
    }

    pub(super) fn finish(mut self) -> ColumnProfile {
        self.classify_pending();
        let p = &mut self.p;
        let held = self.values.seen.len() as u64;
        p.distinct = match &mut self.sketch {
            // Never fewer than are known.
            Some(sketch) if !p.distinct_exact => sketch.estimate().max(held + 1),
            _ => held,
        };
        p.top = self.values.most();
        p.patterns = self.patterns.most();
        p.kind = kind(p);
        // Free text has no spellings worth naming.
        if p.kind != Kind::FreeText {
            let mut by_key: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for v in self.values.texts.iter().filter(|v| v.chars().any(char::is_alphabetic)) {
                let key: String = v.chars().filter(|c| c.is_alphanumeric()).flat_map(char::to_lowercase).collect();
                by_key.entry(key).or_default().push(v.clone());
            }
            p.spellings = by_key
                .into_values()
                .filter(|s| s.len() > 1)
                .map(|mut s| {
                    s.sort();
                    s
                })
                .collect();
        }
        let name = p.name.to_ascii_lowercase();
        p.personal = matches!(p.kind, Kind::Email | Kind::Phone) || personal_name(&name);
        self.p
    }
}

/// Keeps `v` among the first [`EXAMPLES`] distinct examples.
fn add_example(examples: &mut Vec<Located>, v: &str) {
    if examples.len() < EXAMPLES && !examples.iter().any(|e| e.value == v) {
        examples.push(Located { value: v.to_owned(), line: None });
    }
}

/// Whether `v` holds UTF-8 text read as windows-1252: characters whose
/// windows-1252 bytes are a UTF-8 sequence of more than one byte (`Ã©` is
/// the bytes `C3 A9`, which are `é`). Legitimate text almost never does.
fn is_mojibake(v: &str) -> bool {
    let (bytes, _, _) = encoding_rs::WINDOWS_1252.encode(v);
    (0..bytes.len()).any(|i| {
        let len = match bytes[i] {
            0xC2..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF4 => 4,
            _ => return false,
        };
        bytes.get(i..i + len).is_some_and(|seq| std::str::from_utf8(seq).is_ok())
    })
}

/// Whether `a` sorts before `b`: as numbers in a numeric column.
fn before(a: &str, b: &str, numeric: bool) -> bool {
    if !numeric {
        return a < b;
    }
    match (a.parse::<f64>(), b.parse::<f64>()) {
        (Ok(x), Ok(y)) => x < y,
        _ => a < b,
    }
}

/// `[+-]digits[.digits]` (or `.digits`): its integer digits (leading
/// zeros aside) and its scale.
fn decimal_digits(t: &str) -> Option<(u64, u64)> {
    let unsigned = t.strip_prefix(['+', '-']).unwrap_or(t);
    let (int, frac) = unsigned.split_once('.').unwrap_or((unsigned, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if (int.is_empty() && frac.is_empty()) || !digits(int) || !digits(frac) {
        return None;
    }
    Some((int.trim_start_matches('0').len() as u64, frac.len() as u64))
}

/// Counts `t` among the date formats.
fn date(t: &str, dates: &mut DateFormats, n: u64) -> Dated {
    let b = t.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    if b.len() == 10 && b[4] == b'-' && b[7] == b'-' && digits(0..4) && digits(5..7) && digits(8..10) {
        let part = |r: std::ops::Range<usize>| b[r].iter().fold(0u32, |n, d| n * 10 + u32::from(d - b'0'));
        if NaiveDate::from_ymd_opt(part(0..4) as i32, part(5..7), part(8..10)).is_some() {
            dates.iso += n;
            return Dated::Yes;
        }
        dates.impossible += n;
        return Dated::Impossible;
    }
    if b.len() > 10 && (b[10] == b' ' || b[10] == b'T') {
        for format in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M"] {
            if NaiveDateTime::parse_from_str(t, format).is_ok() {
                dates.timestamps += n;
                return Dated::Yes;
            }
        }
        return Dated::No;
    }
    let mut parts = t.split('/');
    let (Some(a), Some(m), Some(y), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Dated::No;
    };
    let number = |s: &str, width: std::ops::RangeInclusive<usize>| {
        (width.contains(&s.len()) && s.bytes().all(|c| c.is_ascii_digit())).then(|| s.parse::<u32>().ok()).flatten()
    };
    let (Some(a), Some(m), Some(y)) = (number(a, 1..=2), number(m, 1..=2), number(y, 4..=4)) else {
        return Dated::No;
    };
    let y = y as i32;
    match (NaiveDate::from_ymd_opt(y, m, a).is_some(), NaiveDate::from_ymd_opt(y, a, m).is_some()) {
        (true, true) if a == m => dates.either += n,
        (true, true) => dates.ambiguous += n,
        (true, false) => dates.day_first += n,
        (false, true) => dates.month_first += n,
        (false, false) => {
            dates.impossible += n;
            return Dated::Impossible;
        }
    }
    Dated::Yes
}

fn is_email(t: &str) -> bool {
    let Some((local, domain)) = t.split_once('@') else { return false };
    !local.is_empty()
        && !domain.contains('@')
        && domain.split('.').count() >= 2
        && domain.split('.').all(|p| !p.is_empty())
        && !t.contains(char::is_whitespace)
}

fn is_phone(t: &str) -> bool {
    let digits = t.bytes().filter(u8::is_ascii_digit).count();
    (7..=15).contains(&digits)
        && t.bytes().all(|b| b.is_ascii_digit() || b" +-().".contains(&b))
        && t.bytes().any(|b| !b.is_ascii_digit())
}

fn is_uuid(t: &str) -> bool {
    t.len() == 36
        && t.bytes()
            .enumerate()
            .all(|(i, b)| if [8, 13, 18, 23].contains(&i) { b == b'-' } else { b.is_ascii_hexdigit() })
}

fn is_money(t: &str) -> bool {
    let Some(rest) = t.strip_prefix(['$', '€', '£', '¥']).or_else(|| t.strip_suffix(['€'])) else { return false };
    decimal_digits(&rest.trim().replace(',', "")).is_some()
}

/// Counts of a value's bytes by kind, from one pass, for the checks that
/// follow to pass over values that cannot pass them.
struct Census {
    digits: usize,
    dots: usize,
    /// `+` and `-`.
    signs: usize,
    slashes: usize,
    ats: usize,
    /// Two spaces in a row.
    double_space: bool,
}

/// `t`'s census, and its [`pattern`] into `shape` (as UTF-8), from a pass
/// over its bytes and, where it is ASCII (as most values are), a lookup of
/// each of its first [`PATTERN_LENGTH`] bytes' shape.
fn census(t: &str, shape: &mut Vec<u8>) -> Census {
    let mut c = Census { digits: 0, dots: 0, signs: 0, slashes: 0, ats: 0, double_space: false };
    let mut previous = 0;
    for &b in t.as_bytes() {
        c.digits += usize::from(b.is_ascii_digit());
        // Letters and digits, most of most values, pass by without a branch.
        if !b.is_ascii_alphanumeric() {
            match b {
                b'.' => c.dots += 1,
                b'+' | b'-' => c.signs += 1,
                b'/' => c.slashes += 1,
                b'@' => c.ats += 1,
                _ => {}
            }
            c.double_space |= b == b' ' && previous == b' ';
        }
        previous = b;
    }
    if t.is_ascii() {
        let mut out = [0u8; PATTERN_LENGTH];
        let head = &t.as_bytes()[..t.len().min(PATTERN_LENGTH)];
        for (o, &b) in out.iter_mut().zip(head) {
            *o = ASCII_SHAPES[usize::from(b)];
        }
        shape.extend_from_slice(&out[..head.len()]);
        if t.len() > PATTERN_LENGTH {
            shape.extend_from_slice("…".as_bytes());
        }
    } else {
        pattern(t, shape);
    }
    c
}

/// [`shape_of`] each ASCII character, as a byte.
const ASCII_SHAPES: [u8; 128] = {
    let mut shapes = [0u8; 128];
    let mut b = 0;
    while b < 128 {
        shapes[b as usize] = match b {
            b'0'..=b'9' => b'9',
            b'A'..=b'Z' => b'A',
            b'a'..=b'z' => b'a',
            _ => b,
        };
        b += 1;
    }
    shapes
};

/// The characters of a value that its pattern shows; a longer one's ends in `…`.
const PATTERN_LENGTH: usize = 40;

/// The shape of a value, into `out` as UTF-8: `A` an upper-case letter,
/// `a` a lower-case one, `9` a digit, anything else as it is; long values
/// are cut at 40 characters.
fn pattern(t: &str, out: &mut Vec<u8>) {
    let mut push = |c: char| out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
    let mut chars = t.chars();
    for c in chars.by_ref().take(PATTERN_LENGTH) {
        push(shape_of(c));
    }
    if chars.next().is_some() {
        push('…');
    }
}

/// A character as a pattern shows it.
fn shape_of(c: char) -> char {
    match c {
        c if c.is_ascii_digit() => '9',
        c if c.is_uppercase() => 'A',
        c if c.is_lowercase() => 'a',
        c => c,
    }
}

fn kind(p: &ColumnProfile) -> Kind {
    let total = p.present;
    if total == 0 {
        return Kind::Empty;
    }
    let d = &p.dates;
    let all = |count: u64| count == total;
    if all(p.integer) {
        return Kind::Integer;
    }
    if all(p.decimal) {
        return Kind::Decimal;
    }
    if all(p.boolean) {
        return Kind::Boolean;
    }
    if all(d.iso + d.day_first + d.month_first + d.ambiguous + d.either) {
        return Kind::Date;
    }
    if all(d.timestamps) {
        return Kind::Timestamp;
    }
    let most = |count: u64| count as f64 >= LOOKS_ALIKE * total as f64;
    // Mostly dates, and some that cannot be: dates, the others counted apart.
    if most(d.iso + d.day_first + d.month_first + d.ambiguous + d.either + d.impossible) {
        return Kind::Date;
    }
    let alike = |look: &str| p.looks.get(look).is_some_and(|&c| most(c));
    for (look, kind) in [("uuid", Kind::Uuid), ("email", Kind::Email), ("phone", Kind::Phone), ("money", Kind::Money)] {
        if alike(look) {
            return kind;
        }
    }
    if p.max_length.is_some_and(|l| l > 40) {
        return Kind::FreeText;
    }
    Kind::Text
}

/// Column names (lower case) that usually hold a person's details.
pub fn personal_name(name: &str) -> bool {
    const PARTS: [&str; 16] = [
        "first_name",
        "last_name",
        "firstname",
        "lastname",
        "surname",
        "full_name",
        "fullname",
        "given_name",
        "birth",
        "dob",
        "ssn",
        "passport",
        "national_id",
        "address",
        "email",
        "phone",
    ];
    name == "name" || PARTS.iter().any(|p| name.contains(p))
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::StringArray;

    use super::{
        ASCII_SHAPES, Accumulator, DISTINCT_BOUND, DateFormats, Dated, Filter, PATTERN_BOUND, TOP, Tally, census, date,
        decimal_digits, is_email, is_mojibake, is_phone, pattern, shape_of,
    };

    /// The census lets by every value that the checks it guards would pass,
    /// and its pattern is [`pattern`]'s.
    #[test]
    fn the_census_passes_every_value_its_checks_would() {
        let long = "Carefully final deposits, sleep quickly: 42 x";
        for t in [
            "12",
            "-0.125",
            "+7",
            ".5",
            "5.",
            "1.2.3",
            "-",
            "+",
            "007",
            "1-2",
            "+44 20 7946 0958",
            "(555) 010-9999",
            "555-0100",
            "5550100",
            "1.555.010.9999",
            "a@b.co",
            "a@@b.co",
            "x@y",
            "2024-02-29",
            "2023-02-29",
            "2024-01-31 10:00:00",
            "2024-01-31T10:00:00.5",
            "1/2/2024",
            "12/31/2024",
            "2024-01-31T10:00",
            "2024-01-31 10:00:00.125",
            "31/02/2024",
            "AB-12",
            "a  b",
            "José 7",
            "日本 12",
            long,
        ] {
            let mut shape = Vec::new();
            let c = census(t, &mut shape);
            let mut expected = Vec::new();
            pattern(t, &mut expected);
            assert_eq!(shape, expected, "{t}");
            if decimal_digits(t).is_some() {
                assert!(c.digits > 0 && c.digits + c.dots + c.signs == t.len(), "{t}");
            }
            if is_phone(t) {
                assert!((7..=15).contains(&c.digits), "{t}");
            }
            if is_email(t) {
                assert_eq!(c.ats, 1, "{t}");
            }
            if !matches!(date(t, &mut DateFormats::default(), 1), Dated::No) {
                assert!(c.digits >= 6 && (c.signs == 2 || c.slashes == 2), "{t}");
            }
            assert_eq!(c.double_space, t.contains("  "), "{t}");
        }
    }

    /// The table of ASCII shapes is [`shape_of`]'s.
    #[test]
    fn ascii_shapes_are_those_of_shape_of() {
        for b in 0..128u8 {
            assert_eq!(char::from(ASCII_SHAPES[usize::from(b)]), shape_of(char::from(b)), "{b}");
        }
    }

    /// The most frequent strings are picked out as a full sort would:
    /// most rows first, ties by value.
    #[test]
    fn the_most_frequent_are_those_a_full_sort_puts_first() {
        let mut tally = Tally::new(DISTINCT_BOUND);
        let mut expected: Vec<(String, u64)> = Vec::new();
        for i in 0..40u64 {
            let (text, rows) = (format!("v{:02}", (i * 17) % 40), 1 + i % 7);
            tally.entry(xxhash_rust::xxh3::xxh3_128(text.as_bytes()), || text.clone()).unwrap().rows += rows;
            expected.push((text, rows));
        }
        expected.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        expected.truncate(TOP);
        assert_eq!(tally.most(), expected);
    }

    /// A column's patterns past the bound are not counted; those it holds
    /// are, every row.
    #[test]
    fn patterns_past_the_bound_are_not_counted() {
        // Each number's bits as upper and lower case letters: a pattern each.
        let shapes: Vec<String> = (0..PATTERN_BOUND + 10)
            .map(|i| (0..16).map(|b| if i >> b & 1 == 1 { 'A' } else { 'a' }).collect())
            .collect();
        let mut values: Vec<&str> = shapes.iter().map(String::as_str).collect();
        values.extend([shapes[0].as_str(); 20]);
        values.extend([shapes[PATTERN_BOUND].as_str(); 30]);
        let mut acc = Accumulator::new("c", "Utf8".to_owned());
        acc.add(&StringArray::from(values));
        let p = acc.finish();
        assert_eq!(p.patterns[0], (shapes[0].clone(), 21));
        assert!(!p.patterns.iter().any(|(s, _)| *s == shapes[PATTERN_BOUND]), "{:?}", p.patterns);
        assert_eq!(p.distinct, PATTERN_BOUND as u64 + 10, "values are counted apart from patterns");
    }

    /// Past the bound, the distinct count is estimated from every value,
    /// not only from those kept, whether one profile saw them all or
    /// several saw them apart; under it, the count stays exact.
    #[test]
    fn distinct_values_past_the_bound_are_estimated() {
        let values: Vec<String> = (0..250_000).map(|i| format!("v{i}")).collect();
        // Batches of the values from the first of each pair to the second.
        let profile = |batches: &[(usize, usize)]| {
            let mut acc = Accumulator::new("c", "Utf8".to_owned());
            for &(from, to) in batches {
                acc.add(&StringArray::from_iter_values(&values[from..to]));
            }
            acc
        };
        let estimated = |acc: Accumulator, truth: u64| {
            let p = acc.finish();
            assert!(!p.distinct_exact);
            let error = (p.distinct as f64 - truth as f64).abs() / truth as f64;
            assert!(error < 0.03, "{} estimated for {truth}", p.distinct);
        };
        estimated(profile(&[(0, 150_000), (100_000, 250_000)]), 250_000);
        // Neither past the bound alone; together past it.
        let mut a = profile(&[(0, 90_000)]);
        a.merge(profile(&[(60_000, 150_000)]));
        estimated(a, 150_000);
        // One past the bound, one not; and the other way round.
        let mut a = profile(&[(0, 120_000)]);
        a.merge(profile(&[(200_000, 210_000)]));
        estimated(a, 130_000);
        let mut a = profile(&[(200_000, 210_000)]);
        a.merge(profile(&[(0, 120_000)]));
        estimated(a, 130_000);
        // Together within the bound: exact.
        let mut a = profile(&[(0, 60_000)]);
        a.merge(profile(&[(30_000, 90_000)]));
        let p = a.finish();
        assert!(p.distinct_exact);
        assert_eq!(p.distinct, 90_000);
    }

    /// A run of rows holding one value counts each of its rows, NULLs
    /// between runs aside, whether the value is held or past the bound.
    #[test]
    fn runs_of_one_value_count_every_row() {
        let mut acc = Accumulator::new("c", "Utf8".to_owned());
        acc.add(&StringArray::from(vec![Some("a"), Some("a"), None, Some("a"), Some("b"), Some("b"), Some("a")]));
        let p = acc.finish();
        assert_eq!((p.nulls, p.present), (1, 6));
        assert_eq!(p.top, vec![("a".to_owned(), 4), ("b".to_owned(), 2)]);
        let mut acc = Accumulator::new("c", "Utf8".to_owned());
        let held: Vec<String> = (0..DISTINCT_BOUND).map(|i| i.to_string()).collect();
        acc.add(&StringArray::from_iter_values(&held));
        acc.add(&StringArray::from(vec!["x-1", "x-1", "x-1", "7", "7"]));
        let p = acc.finish();
        assert!(!p.distinct_exact);
        assert_eq!((p.present, p.integer), (DISTINCT_BOUND as u64 + 5, DISTINCT_BOUND as u64 + 2));
        assert!(p.patterns.contains(&("a-9".to_owned(), 3)), "{:?}", p.patterns);
        assert_eq!(p.top[0], ("7".to_owned(), 3));
    }

    /// The filter holds every hash it was built from, and lets few others by.
    #[test]
    fn a_full_maps_filter_holds_its_hashes_and_few_others() {
        let hash = |i: usize| xxhash_rust::xxh3::xxh3_128(format!("value {i}").as_bytes());
        let filter = Filter::of((0..DISTINCT_BOUND).map(hash));
        assert!((0..DISTINCT_BOUND).all(|i| filter.may_hold(hash(i))));
        let passed = (DISTINCT_BOUND..2 * DISTINCT_BOUND).filter(|&i| filter.may_hold(hash(i))).count();
        assert!(passed < DISTINCT_BOUND / 25, "{passed} of {DISTINCT_BOUND} hashes not held passed");
    }

    #[test]
    fn double_encoded_text_is_told_from_accents() {
        for v in ["JosÃ© García", "Ã¼ber", "â‚¬ 5", "Â£10", "naÃ¯ve"] {
            assert!(is_mojibake(v), "{v}");
        }
        for v in ["José García", "Zoë Brontë", "Señor", "Ångström", "€ 5", "£10", "日本", "Ã", "ÃX"] {
            assert!(!is_mojibake(v), "{v}");
        }
    }
}
