//! The fixed-width reader: any bytes read under a layout give rows, a
//! record set aside, or an error naming the file and line; under
//! `on_error: quarantine` with replaced text, the read always finishes.
#![no_main]

use ferry::source::CsvSettings;
use ferry_fuzz::{map, read_source};
use libfuzzer_sys::fuzz_target;
use serde_json::json;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, data)) = data.split_first() else { return };
    let quarantine = pick & 1 != 0;
    let trim = ["both", "left", "right", "none"][usize::from(pick >> 1 & 3)];
    let mut layout = vec![
        json!({"name": "kind", "start": 1, "width": 1}),
        json!({"name": "id", "start": 2, "width": 5, "type": "integer"}),
        json!({"name": "name", "start": 7, "width": 8, "trim": trim}),
        json!({"name": "amount", "start": 15, "width": 9, "type": "decimal(8,2)"}),
    ];
    if pick & 8 != 0 {
        layout.push(json!({"name": "born", "start": 24, "width": 10, "type": "date"}));
    }
    let mut keys = vec![
        ("layout", json!(layout)),
        ("on_error", json!(if quarantine { "quarantine" } else { "fail" })),
        ("on_invalid", json!("replace")),
    ];
    if pick & 16 != 0 {
        keys.push(("record_type", json!({"start": 1, "width": 1, "values": ["D", "E"]})));
    }
    if pick & 32 != 0 {
        keys.push(("skip_lines", json!(1)));
    }
    let outcome =
        read_source("fixed_width", map(keys), &[], &CsvSettings::default(), data).expect("the layout is valid");
    if quarantine {
        assert!(outcome.error.is_none(), "a record under quarantine never stops the read: {:?}", outcome.error);
    }
});
