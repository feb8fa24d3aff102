//! Inputs the fuzz targets in `fuzz/` found crashing or misreporting
//! (`scripts/fuzz.sh`), each kept as the user would meet it.

use crate::common::TestProject;

/// `jinja` target: minijinja points one byte into a multi-byte character
/// that cannot start a name (`loopԓast`); the caret must cover the whole
/// character, not split it.
#[test]
fn a_jinja_error_inside_a_multibyte_character_gets_a_whole_character_caret() {
    let project = TestProject::new().model("m.sql", "select 1 {% if not loop\u{4d3}ast %}{% endif %}\n");
    for format in ["json", "human", "github"] {
        let out = project.ferry(["compile", "--format", format]).output().expect("run ferry");
        assert_eq!(out.status.code(), Some(1), "{format}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"), "{format}");
        if format == "json" {
            let d: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one diagnostic");
            assert_eq!(d["file"], "models/m.sql");
            assert_eq!(d["line"].as_u64(), Some(1));
            // `ԓ` is character 24 of the line (bytes 23..25).
            let (column, end) = (d["column"].as_u64().unwrap(), d["end_column"].as_u64().unwrap());
            assert!(column <= 24 && end >= 25, "the caret covers `ԓ`: {d}");
        }
    }
}
