//! The CSV reader under `on_error: quarantine`: whatever the bytes, every
//! record is read or set aside, so the read always finishes. The first
//! byte picks the dialect and the text options.
#![no_main]

use ferry::source::CsvSettings;
use ferry_fuzz::{map, read_source};
use libfuzzer_sys::fuzz_target;
use serde_json::json;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, data)) = data.split_first() else { return };
    let settings = CsvSettings {
        delimiter: [b',', b';', b'\t', b'|'][usize::from(pick & 3)],
        quote: if pick & 4 == 0 { b'"' } else { b'\'' },
        escape: (pick & 8 != 0).then_some(b'\\'),
        header: pick & 16 == 0,
        null_regex: (pick & 32 != 0).then(|| "NULL|\\\\N|".to_owned()),
    };
    // Every byte sequence is text in windows-1252, and replaced where it is
    // not in UTF-8: no file-level error is left.
    let encoding = if pick & 64 == 0 { "utf-8" } else { "windows-1252" };
    let location =
        map([("on_error", json!("quarantine")), ("encoding", json!(encoding)), ("on_invalid", json!("replace"))]);
    let outcome = read_source("csv", location, &[], &settings, data).expect("the keys are valid");
    assert!(outcome.error.is_none(), "a record under quarantine never stops the read: {:?}", outcome.error);
});
