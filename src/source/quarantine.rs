//! `on_error: quarantine` on a source table: a malformed record or a value
//! that does not convert is set aside with its raw text instead of failing
//! the run. Per run (`.ferry/runs/<run id>/`), renamed into place when
//! complete:
//! - `quarantine/source.<source>.<table>.csv`: file, line, the problem and
//!   the record's raw text;
//! - `errors/source.<source>.<table>.parquet` and `.csv`: the error log's
//!   lines, which `ferry errors` reads beside the models' own.

use std::sync::{Arc, Mutex};

use camino::Utf8PathBuf;
use datafusion::arrow::array::{ArrayRef, RecordBatch, StringBuilder};
use datafusion::arrow::datatypes::{DataType, Field, Schema};

use super::At;
use crate::state::{RunDir, error_log};

/// One record set aside.
#[derive(Debug, Clone)]
pub struct Entry {
    pub at: At,
    /// `malformed_record` or `invalid_value`.
    pub rule: &'static str,
    pub column: Option<String>,
    pub value: Option<String>,
    pub message: String,
    pub raw: String,
}

/// The records a source table set aside in this run.
#[derive(Debug)]
pub struct Quarantine {
    /// `source.legacy.customers`: the name in file names and the log.
    pub name: String,
    run_id: String,
    /// `.ferry/runs/<id>`.
    dir: RunDir,
    /// Whether this command keeps run artifacts (`run` and `build` do;
    /// `show` previews, and sets records aside without a trace).
    persist: bool,
    /// A masked run: a record's raw text and value, which may hold
    /// personal data in clear, are not kept.
    withhold: bool,
    entries: Mutex<Vec<Entry>>,
}

impl Quarantine {
    pub fn new(name: String, run_id: String, dir: RunDir, (persist, withhold): (bool, bool)) -> Arc<Self> {
        Arc::new(Quarantine { name, run_id, dir, persist, withhold, entries: Mutex::new(Vec::new()) })
    }

    pub fn add(&self, mut entry: Entry) {
        if self.withhold {
            entry.raw = format!("(withheld in a masked run: {} bytes)", entry.raw.len());
            entry.value = None;
            entry.message = match &entry.column {
                Some(c) => format!("{}: a value of `{c}` (withheld in a masked run)", entry.rule),
                None => format!("{} (withheld in a masked run)", entry.rule),
            };
        }
        self.entries.lock().expect("quarantine lock").push(entry);
    }

    /// Writes every record set aside so far (each file read rewrites the
    /// whole set, so the files hold every file's records once all are read),
    /// and says where. Nothing is written when nothing was set aside.
    pub fn write(&self) -> std::io::Result<()> {
        let mut entries = self.entries.lock().expect("quarantine lock").clone();
        if entries.is_empty() || !self.persist {
            return Ok(());
        }
        // In file order: a reader may find a bad value only when its batch
        // converts, after records set aside further down.
        entries.sort_by(|a, b| {
            (&a.at.path, a.at.sheet.as_ref(), a.at.line).cmp(&(&b.at.path, b.at.sheet.as_ref(), b.at.line))
        });
        let unique = uuid::Uuid::new_v4().simple().to_string();
        let write = |rel: Utf8PathBuf, batch: &RecordBatch, parquet: bool| -> std::io::Result<()> {
            let path = self.dir.path.join(&rel);
            fs_err::create_dir_all(path.parent().expect("a parent"))?;
            let tmp = self.dir.path.join(format!("{rel}.{unique}.tmp"));
            let file = fs_err::File::create(&tmp)?.into_parts().0;
            let other = |e: &dyn std::fmt::Display| std::io::Error::other(format!("{tmp}: {e}"));
            if parquet {
                let mut w = datafusion::parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None)
                    .map_err(|e| other(&e))?;
                w.write(batch).map_err(|e| other(&e))?;
                w.close().map_err(|e| other(&e))?;
            } else {
                let mut w = datafusion::arrow::csv::Writer::new(file);
                w.write(batch).map_err(|e| other(&e))?;
            }
            fs_err::rename(&tmp, &path)
        };
        let (records, log) = self.batches(&entries).map_err(|e| std::io::Error::other(e.to_string()))?;
        write(error_log::quarantine_file(&self.name, "csv"), &records, false)?;
        write(error_log::log_file(&self.name, "parquet"), &log, true)?;
        write(error_log::log_file(&self.name, "csv"), &log, false)?;
        tracing::warn!(
            "`{}`: {} record(s) quarantined to `{}`",
            self.name,
            entries.len(),
            self.dir.shown.join(error_log::quarantine_file(&self.name, "csv"))
        );
        Ok(())
    }

    fn batches(&self, entries: &[Entry]) -> datafusion::error::Result<(RecordBatch, RecordBatch)> {
        let mut file = StringBuilder::new();
        let mut line = StringBuilder::new();
        let mut problem = StringBuilder::new();
        let mut raw = StringBuilder::new();
        let mut log: Vec<StringBuilder> =
            (0..error_log::schema().fields().len()).map(|_| StringBuilder::new()).collect();
        for e in entries {
            let place = e.at.to_string();
            file.append_value(e.at.path.as_str());
            line.append_option(e.at.line.map(|l| l.to_string()));
            problem.append_value(&e.message);
            raw.append_value(&e.raw);
            // run_id, model, record_key, rule, column, value, severity, message, suggestion
            let row: [Option<&str>; 9] = [
                Some(&self.run_id),
                Some(&self.name),
                Some(&place),
                Some(e.rule),
                e.column.as_deref(),
                e.value.as_deref(),
                Some("error"),
                Some(&e.message),
                Some(
                    "fix the record in the source file, or declare the column `data_type: varchar` and convert it in the model",
                ),
            ];
            for (b, v) in log.iter_mut().zip(row) {
                b.append_option(v);
            }
        }
        let text = |n: &str, nullable| Field::new(n, DataType::Utf8, nullable);
        let schema = Arc::new(Schema::new(vec![
            text("file", false),
            text("line", true),
            text("problem", false),
            text("raw", false),
        ]));
        let columns: Vec<ArrayRef> =
            vec![Arc::new(file.finish()), Arc::new(line.finish()), Arc::new(problem.finish()), Arc::new(raw.finish())];
        let records = RecordBatch::try_new(schema, columns)?;
        let log: Vec<ArrayRef> = log.into_iter().map(|mut b| Arc::new(b.finish()) as ArrayRef).collect();
        Ok((records, RecordBatch::try_new(error_log::schema(), log)?))
    }
}
