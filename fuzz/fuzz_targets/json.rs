//! ferry's JSON reader (an array of records, or newline-delimited JSON with
//! nested paths or quarantine): any bytes give rows, records set aside, or
//! an error naming the file and line; never a panic or a stack overflow.
#![no_main]

use ferry::project::nodes::ColumnSpec;
use ferry::source::CsvSettings;
use ferry_fuzz::{map, read_source};
use libfuzzer_sys::fuzz_target;
use serde_json::json;

fn column(name: &str, path: &str) -> ColumnSpec {
    ColumnSpec { name: name.into(), path: Some(path.into()), ..ColumnSpec::default() }
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, data)) = data.split_first() else { return };
    let columns = if pick & 1 != 0 { vec![column("id", "id"), column("city", "address.city")] } else { Vec::new() };
    let mut keys =
        vec![("on_error", json!(if pick & 2 != 0 { "quarantine" } else { "fail" })), ("on_invalid", json!("replace"))];
    if pick & 4 != 0 {
        keys.push(("records", json!("data.items")));
    }
    read_source("json", map(keys), &columns, &CsvSettings::default(), data).expect("the keys are valid");
});
