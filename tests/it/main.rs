//! The one integration-test binary: each module drives the `ferry` binary
//! (or the library) against a project in a temporary directory.

mod audit;
mod changes;
#[cfg(feature = "cluster")]
mod cluster;
mod common;
mod compile;
mod data_tests;
mod dbt_utils;
mod diagnostics;
mod drift;
mod extract;
mod fuzz_regressions;
mod history;
mod incremental;
mod init;
mod load;
mod lock;
mod ls;
mod masking;
mod microbatch;
mod object_stores;
mod packages;
mod private_mariadb;
mod profiles;
mod reconcile;
mod report;
mod rules;
mod run;
mod snapshots;
mod sources;
mod tls;
