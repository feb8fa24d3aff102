//! The XML reader: any bytes give rows or an error naming the file and
//! line; never a panic or a stack overflow, however deep the nesting.
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
    let record_path = ["/export/row", "row", "rows/row", "/a"][usize::from(pick & 3)];
    let columns = if pick & 4 != 0 { vec![column("id", "@id"), column("city", "address/city")] } else { Vec::new() };
    let location = map([
        ("record_path", json!(record_path)),
        ("on_error", json!(if pick & 8 != 0 { "quarantine" } else { "fail" })),
        ("on_invalid", json!("replace")),
    ]);
    read_source("xml", location, &columns, &CsvSettings::default(), data).expect("the keys are valid");
});
