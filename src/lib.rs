//! ferry: move data between systems with SQL you can trust.
//!
//! Sources become tables in an embedded DataFusion engine; dbt-style SQL
//! models transform them and data tests validate them; results are staged,
//! loaded and reconciled. The pipeline is a library call (`run`): prepare a
//! project, execute a selection of it, get a typed report back; the
//! commands only parse arguments and render what comes back.
//!
//! The modules form layers, each importing only those below it (no module
//! imports one that imports it back):
//!
//! ```text
//! main, cli, commands     parse, call the library, render events and reports
//! run                     prepare -> execute -> RunReport: planning, gating,
//!                         nodes, load and reconcile steps, the run's files
//! load reconcile validate policies over typed inputs: what to load and in
//! engine                  which order, what a reconciliation concludes, rules
//!                         and tests; the DataFusion session and sources
//! manifest                the project's nodes, rendered, their config read
//!                         into typed settings, and the DAG
//! stage backend source    Parquet stages; everything one database knows
//!                         (`backend/<db>/`); readers of files and databases
//! values project template the ground floor: shared value types, files on
//! dag diagnostic state    disk, Jinja, the graph, diagnostics, and the
//! package                 `.ferry/` layout with what runs keep there; dbt
//!                         packages installed (`ferry deps`)
//! ```

pub mod audit;
pub mod backend;
pub mod cli;
pub mod commands;
pub mod dag;
pub mod diagnostic;
pub mod engine;
pub mod error;
pub mod load;
pub mod logging;
pub mod manifest;
pub mod mask;
pub mod package;
pub mod printer;
pub mod project;
pub mod reconcile;
pub mod report;
pub mod run;
pub mod settings;
pub mod source;
pub mod stage;
pub mod state;
pub mod template;
pub mod validate;
pub mod values;
