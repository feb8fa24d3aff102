//! What a run leaves behind for the next one and for people: today
//! `.ferry/run_results.json`; run history and watermarks come with
//! incremental models.

pub mod run_results;
