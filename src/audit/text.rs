//! How a file's bytes became text: the encoding it was read in, the
//! values whose bytes were no text in it, and what encoding the bytes look
//! like, guessed by `chardetng` (Firefox's detector for unlabelled text).

use std::io::Read;

use encoding_rs::Encoding;
use serde::Serialize;

use super::TableProfile;

/// The most bytes fed to the detector: only chunks holding bytes beyond
/// ASCII are fed (ASCII tells the encodings apart no better), so this is
/// reached only in files full of them.
const GUESS_BYTES: usize = 64 << 20;

/// A text file's encoding, checked.
#[derive(Debug, Clone, Serialize)]
pub struct TextCheck {
    /// The encoding it was read in: the declared one (`encoding:`), else
    /// UTF-8.
    pub encoding: String,
    /// Whether bytes that are no text in it were replaced with U+FFFD to
    /// read the file at all (a run fails on them, unless the source says
    /// `on_invalid: replace`).
    pub read_with_replacement: bool,
    /// Values holding U+FFFD, in every column.
    pub replaced_values: u64,
    /// Values that look double-encoded, in every column.
    pub mojibake_values: u64,
    /// The encoding the bytes look like, where the text is in doubt (a
    /// value holds U+FFFD or looks double-encoded, or the declared
    /// encoding is not UTF-8): `None` when it was not guessed.
    pub guessed: Option<String>,
}

impl TextCheck {
    /// The check of `p`'s file, read in `encoding` (with replacement when
    /// `replacing`); `bytes` opens the file's raw bytes for a guess.
    pub fn of(
        p: &TableProfile,
        encoding: &'static Encoding,
        replacing: bool,
        bytes: impl FnOnce() -> Option<Box<dyn Read>>,
    ) -> TextCheck {
        let replaced_values = p.columns.iter().map(|c| c.replaced).sum();
        let mojibake_values = p.columns.iter().map(|c| c.mojibake).sum();
        let in_doubt = replaced_values > 0 || mojibake_values > 0 || encoding != encoding_rs::UTF_8;
        let guessed = in_doubt.then(bytes).flatten().and_then(|r| guess(r).ok()).map(|e| e.name().to_owned());
        TextCheck {
            encoding: encoding.name().to_owned(),
            read_with_replacement: replacing,
            replaced_values,
            mojibake_values,
            guessed,
        }
    }

    /// What to do about it, in a sentence; `None` when nothing is amiss.
    pub fn advice(&self) -> Option<String> {
        let guess = self.guessed.as_deref().filter(|g| *g != self.encoding);
        match (guess, self.replaced_values, self.mojibake_values) {
            (Some(g), _, _) => Some(format!("the bytes look like {g}: declare `encoding: {g}` on the source")),
            (None, 0, 0) => None,
            (None, 0, _) => Some(
                "some text was decoded twice before it reached the file (UTF-8 read as windows-1252): \
                 fix it where it was exported"
                    .to_owned(),
            ),
            (None, _, _) => Some(
                "some bytes are no text in any likely encoding: they were lost before the file was written, \
                 or the file is damaged"
                    .to_owned(),
            ),
        }
    }
}

/// The encoding `reader`'s bytes look like.
pub fn guess(mut reader: impl Read) -> std::io::Result<&'static Encoding> {
    let mut detector = chardetng::EncodingDetector::new(chardetng::Iso2022JpDetection::Deny);
    let mut chunk = vec![0; 1 << 20];
    let mut fed = 0;
    // A chunk may end inside a character; the detector takes a stream, so
    // only chunks next to each other are fed without a gap between them.
    let mut gap = false;
    while fed < GUESS_BYTES {
        let n = read_full(&mut reader, &mut chunk)?;
        if n == 0 {
            break;
        }
        if chunk[..n].is_ascii() {
            gap = true;
            continue;
        }
        if gap {
            // A line break stands in for the ASCII left out.
            detector.feed(b"\n", false);
            gap = false;
        }
        detector.feed(&chunk[..n], false);
        fed += n;
    }
    detector.feed(&[], true);
    Ok(detector.guess(None, chardetng::Utf8Detection::Allow))
}

/// Reads until `buf` is full or the input ends; the bytes read.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match reader.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_bytes_are_told_from_utf8() {
        let text = "Zoë Brontë, Café Noël, Straße, Ångström, Müller, Señor Peña, Grüße aus Köln\n".repeat(20);
        let (latin, _, _) = encoding_rs::WINDOWS_1252.encode(&text);
        assert_eq!(guess(&latin[..]).unwrap(), encoding_rs::WINDOWS_1252);
        assert_eq!(guess(text.as_bytes()).unwrap(), encoding_rs::UTF_8);
        // Far past the first chunk, after ASCII the guess skips.
        let mut late = vec![b'a'; 3 << 20];
        late.extend_from_slice(&latin);
        assert_eq!(guess(&late[..]).unwrap(), encoding_rs::WINDOWS_1252);
    }
}
