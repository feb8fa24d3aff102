//! Text in a declared encoding, delivered as UTF-8: transcoded by
//! `encoding_rs`, or for UTF-8 itself checked byte by byte so that an invalid
//! byte is named by line and offset (or replaced, with `on_invalid: replace`).

use std::cell::Cell;
use std::io::{self, BufRead, BufReader, Read};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use encoding_rs::Encoding;
use encoding_rs_io::DecodeReaderBytesBuilder;
use serde_json::Value as Json;

use super::SpecError;

/// How a source's bytes become text.
#[derive(Debug, Clone)]
pub struct TextOptions {
    pub encoding: &'static Encoding,
    /// Replace invalid bytes with U+FFFD instead of failing.
    pub replace_invalid: bool,
}

impl Default for TextOptions {
    fn default() -> Self {
        TextOptions { encoding: encoding_rs::UTF_8, replace_invalid: false }
    }
}

impl TextOptions {
    /// `encoding:` (any WHATWG label: `windows-1252`, `latin1`, `utf-16le`,
    /// `shift_jis`, ...) and `on_invalid: error | replace`.
    pub fn of(location: &serde_json::Map<String, Json>) -> Result<Self, SpecError> {
        let mut options = TextOptions::default();
        if let Some(label) = location.get("encoding") {
            let label = label.as_str().unwrap_or_default();
            options.encoding = label_encoding(label).ok_or_else(|| SpecError::Encoding(label.to_owned()))?;
        }
        match location.get("on_invalid").and_then(Json::as_str) {
            None | Some("error") => {}
            Some("replace") => options.replace_invalid = true,
            Some(other) => {
                return Err(SpecError::Invalid {
                    key: "on_invalid",
                    value: other.to_owned(),
                    expected: "`error` or `replace`",
                });
            }
        }
        Ok(options)
    }

    /// Whether the text is plain UTF-8 that DataFusion's own readers can take.
    pub fn is_default(&self) -> bool {
        self.encoding == encoding_rs::UTF_8 && !self.replace_invalid
    }

    /// Opens a file as UTF-8 text. Invalid bytes surface as an
    /// [`InvalidText`] inside the `io::Error` (see [`invalid_text`]); with
    /// `replace_invalid`, they are replaced and counted in `replaced`.
    pub fn open(&self, reader: impl Read + Send + 'static, replaced: Arc<AtomicU64>) -> Box<dyn BufRead + Send> {
        const CAPACITY: usize = 256 * 1024;
        if self.encoding == encoding_rs::UTF_8 {
            return Box::new(BufReader::with_capacity(
                CAPACITY,
                Utf8Reader::new(reader, self.replace_invalid, replaced),
            ));
        }
        // UTF-16 and the legacy single- and multi-byte encodings: a BOM
        // wins over the declared encoding, as in every text editor.
        let decoded = DecodeReaderBytesBuilder::new().encoding(Some(self.encoding)).build(reader);
        Box::new(BufReader::with_capacity(CAPACITY, decoded))
    }
}

/// `latin-1` and `latin1` are common spellings that WHATWG lists as
/// `iso-8859-1`, which it maps to windows-1252 (a superset for text).
fn label_encoding(label: &str) -> Option<&'static Encoding> {
    let label = label.trim().to_ascii_lowercase();
    let label = match label.as_str() {
        "latin-1" | "latin_1" => "latin1",
        "utf16" => "utf-16le",
        "utf-16" => "utf-16le",
        other => other,
    };
    Encoding::for_label(label.as_bytes())
}

/// An invalid byte in text read as UTF-8.
#[derive(Debug, Clone, thiserror::Error)]
#[error("invalid UTF-8 (byte 0x{byte:02X}) at line {line}, byte offset {offset}")]
pub struct InvalidText {
    pub line: u64,
    /// From the start of the file.
    pub offset: u64,
    pub byte: u8,
}

/// The [`InvalidText`] an IO error carries, if any.
pub fn invalid_text(e: &io::Error) -> Option<&InvalidText> {
    e.get_ref().and_then(|inner| inner.downcast_ref::<InvalidText>())
}

/// Passes UTF-8 through, stopping at the first invalid byte with an error
/// naming it, or replacing invalid bytes with U+FFFD.
struct Utf8Reader<R> {
    inner: R,
    replace: bool,
    replaced: Arc<AtomicU64>,
    /// Bytes read from `inner` and not yet handed out.
    pending: Vec<u8>,
    /// Valid text ready to hand out, from `out_pos`.
    out: Vec<u8>,
    out_pos: usize,
    /// Offset of `pending[0]` in the file, and the line it is on.
    offset: u64,
    line: u64,
    eof: bool,
    error: Option<InvalidText>,
}

impl<R: Read> Utf8Reader<R> {
    fn new(inner: R, replace: bool, replaced: Arc<AtomicU64>) -> Self {
        Utf8Reader {
            inner,
            replace,
            replaced,
            pending: Vec::new(),
            out: Vec::new(),
            out_pos: 0,
            offset: 0,
            line: 1,
            eof: false,
            error: None,
        }
    }

    /// Moves the valid prefix of `pending` to `out`; handles what follows it.
    fn refill(&mut self) -> io::Result<()> {
        self.out.clear();
        self.out_pos = 0;
        while self.out.is_empty() {
            if self.error.is_some() {
                return Ok(());
            }
            if !self.eof && self.pending.len() < 64 * 1024 {
                let start = self.pending.len();
                self.pending.resize(start + 64 * 1024, 0);
                let n = self.inner.read(&mut self.pending[start..])?;
                self.pending.truncate(start + n);
                self.eof = n == 0;
            }
            if self.pending.is_empty() {
                return Ok(());
            }
            let (valid, bad) = match std::str::from_utf8(&self.pending) {
                Ok(_) => (self.pending.len(), None),
                Err(e) => (e.valid_up_to(), e.error_len()),
            };
            self.out.extend_from_slice(&self.pending[..valid]);
            let take = match bad {
                Some(len) => {
                    self.invalid_at(valid);
                    valid + len
                }
                // A sequence cut off at the end of the file.
                None if valid < self.pending.len() && self.eof => {
                    self.invalid_at(valid);
                    self.pending.len()
                }
                // Complete, or a sequence cut off by the read: wait for the rest.
                None => valid,
            };
            self.line += self.pending[..take].iter().filter(|&&b| b == b'\n').count() as u64;
            self.pending.drain(..take);
            self.offset += take as u64;
        }
        Ok(())
    }

    /// An invalid sequence at `at` in `pending`: replaced, or
    /// remembered as the error to return once the text before it is read.
    fn invalid_at(&mut self, at: usize) {
        if self.replace {
            self.out.extend_from_slice("\u{FFFD}".as_bytes());
            self.replaced.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let line = self.line + self.pending[..at].iter().filter(|&&b| b == b'\n').count() as u64;
        self.error = Some(InvalidText { line, offset: self.offset + at as u64, byte: self.pending[at] });
    }
}

impl<R: Read> Read for Utf8Reader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.out_pos >= self.out.len() {
            self.refill()?;
            if self.out.is_empty() {
                return match &self.error {
                    Some(e) => Err(io::Error::new(io::ErrorKind::InvalidData, e.clone())),
                    None => Ok(0),
                };
            }
        }
        let n = buf.len().min(self.out.len() - self.out_pos);
        buf[..n].copy_from_slice(&self.out[self.out_pos..self.out_pos + n]);
        self.out_pos += n;
        Ok(n)
    }
}

/// Counts the lines of what a reader has consumed, so that a parser
/// reading through it can say which line it is on. Serves both `Read`
/// (serde_json reads a byte at a time) and `BufRead` (quick-xml); the count
/// is shared, for a parser that owns the reader.
pub struct CountLines<R> {
    inner: R,
    line: Rc<Cell<u64>>,
}

impl<R: BufRead> CountLines<R> {
    /// Counting from line 1.
    pub fn new(inner: R) -> Self {
        CountLines { inner, line: Rc::new(Cell::new(1)) }
    }

    /// The current line, shared.
    pub fn counter(&self) -> Rc<Cell<u64>> {
        Rc::clone(&self.line)
    }

    pub fn line(&self) -> u64 {
        self.line.get()
    }
}

impl<R: BufRead> Read for CountLines<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let available = self.inner.fill_buf()?;
        let n = buf.len().min(available.len());
        buf[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl<R: BufRead> BufRead for CountLines<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.inner.fill_buf()
    }

    fn consume(&mut self, amt: usize) {
        if let Ok(buf) = self.inner.fill_buf() {
            let newlines = buf[..amt.min(buf.len())].iter().filter(|&&b| b == b'\n').count() as u64;
            self.line.set(self.line.get() + newlines);
        }
        self.inner.consume(amt);
    }
}

/// Reads lines of text, numbering them from 1, without their line ending.
pub struct Lines<R> {
    inner: R,
    pub line: u64,
    buf: String,
}

impl<R: BufRead> Lines<R> {
    pub fn new(inner: R) -> Self {
        Lines { inner, line: 0, buf: String::new() }
    }

    /// The next line and its number, or `None` at the end.
    pub fn next_line(&mut self) -> io::Result<Option<(u64, &str)>> {
        self.buf.clear();
        if self.inner.read_line(&mut self.buf)? == 0 {
            return Ok(None);
        }
        self.line += 1;
        let trimmed = self.buf.trim_end_matches(['\n', '\r']).len();
        self.buf.truncate(trimmed);
        Ok(Some((self.line, &self.buf)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(bytes: &[u8], replace: bool) -> (io::Result<String>, u64) {
        let replaced = Arc::new(AtomicU64::new(0));
        let options = TextOptions { encoding: encoding_rs::UTF_8, replace_invalid: replace };
        let mut r = options.open(io::Cursor::new(bytes.to_vec()), Arc::clone(&replaced));
        let mut s = String::new();
        let result = r.read_to_string(&mut s).map(|_| s);
        (result, replaced.load(Ordering::Relaxed))
    }

    #[test]
    fn invalid_utf8_is_named_by_line_and_offset() {
        let (result, _) = read_all(b"id,name\n1,ok\n2,caf\xe9\n", false);
        let e = result.unwrap_err();
        let invalid = invalid_text(&e).unwrap();
        assert_eq!((invalid.line, invalid.offset, invalid.byte), (3, 18, 0xE9));
    }

    #[test]
    fn invalid_utf8_can_be_replaced_and_counted() {
        let (result, replaced) = read_all(b"a\xff\nb\xe9c\n", true);
        assert_eq!(result.unwrap(), "a\u{FFFD}\nb\u{FFFD}c\n");
        assert_eq!(replaced, 2);
    }

    #[test]
    fn valid_text_passes_whole_even_across_reads() {
        let text = "é".repeat(100_000);
        let (result, _) = read_all(text.as_bytes(), false);
        assert_eq!(result.unwrap(), text);
        let (result, _) = read_all(b"ab\xc3", false);
        assert_eq!(invalid_text(&result.unwrap_err()).unwrap().offset, 2);
    }

    #[test]
    fn legacy_encodings_are_transcoded() {
        let options = TextOptions::of(&serde_json::from_str(r#"{"encoding": "windows-1252"}"#).unwrap()).unwrap();
        let mut s = String::new();
        let mut r = options.open(io::Cursor::new(b"caf\xe9 \x80".to_vec()), Arc::default());
        r.read_to_string(&mut s).unwrap();
        assert_eq!(s, "café €");
        let options = TextOptions::of(&serde_json::from_str(r#"{"encoding": "utf-16"}"#).unwrap()).unwrap();
        let mut s = String::new();
        let bytes: Vec<u8> = "\u{feff}Zoë".encode_utf16().flat_map(u16::to_le_bytes).collect();
        options.open(io::Cursor::new(bytes), Arc::default()).read_to_string(&mut s).unwrap();
        assert_eq!(s, "Zoë");
        assert!(TextOptions::of(&serde_json::from_str(r#"{"encoding": "klingon"}"#).unwrap()).is_err());
    }
}
