//! The project file and schema YAML parsers: any text gives a project, a
//! schema file or a diagnostic that points inside the file; never a panic
//! or a stack overflow.
#![no_main]

use std::sync::Arc;

use ferry::diagnostic::SourceFile;
use ferry::project::config::{ConfigTree, ProjectFile};
use ferry::project::schema;
use ferry_fuzz::check_diagnostic;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let mut warnings = Vec::new();
    let file = SourceFile::new("ferry.yml", text);
    match ProjectFile::parse(Arc::clone(&file), &mut warnings) {
        Ok(project) => {
            for tree in [&project.models, &project.seeds, &project.tests] {
                let tree = ConfigTree::new(&file, tree);
                let _ = tree.resolve(&["p".to_owned(), "staging".to_owned(), "m".to_owned()]);
                warnings.extend(tree.warnings("models", &["staging".to_owned()]));
            }
        }
        Err(d) => check_diagnostic(&d),
    }
    let file = SourceFile::new("models/schema.yml", text);
    if let Err(d) = schema::parse(&file, &mut warnings) {
        check_diagnostic(&d);
    }
    for w in &warnings {
        check_diagnostic(w);
    }
});
