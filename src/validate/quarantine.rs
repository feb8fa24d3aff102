//! Splits a model's checked rows as they stream to the stage: rows that
//! break an `error` rule go to the run's quarantine (the full row plus the
//! rules it broke), every broken rule of every row goes to the run's error
//! log, and the rest stream on to the stage. Counts make the row ledger.
//!
//! Files, per run (`.ferry/runs/<run id>/`), written beside the stage and
//! renamed into place when complete:
//! - `quarantine/<model>.parquet`
//! - `errors/<model>.parquet` and `errors/<model>.csv`

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use camino::{Utf8Path, Utf8PathBuf};
use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, RecordBatch, StringBuilder};
use datafusion::arrow::compute::{cast, filter, filter_record_batch, or};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::error::DataFusionError;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::StreamExt as _;

use super::rules::RuleCheck;
use crate::manifest::config::{Dedupe, Severity, Threshold};
use crate::manifest::rules::RuleKind;
use crate::state::{Ledger, error_log};

/// The column of quarantined rows that lists the rules each row broke.
pub const BROKEN_RULES_COLUMN: &str = "_ferry_broken_rules";

/// The error raised through the stage writer when the threshold is crossed,
/// so the stage is discarded.
#[derive(Debug, thiserror::Error)]
#[error("quarantined {quarantined} of {produced} rows, over `error_if: {threshold}`")]
pub struct ThresholdExceeded {
    pub quarantined: u64,
    pub produced: u64,
    pub threshold: String,
}

/// One model's rules applied to its streaming rows.
pub struct Splitter {
    rules: Arc<Vec<RuleCheck>>,
    dedupe: Option<Dedupe>,
    model: String,
    run_id: String,
    /// Columns that identify a row in the log (`unique_key`), or all.
    key: Vec<String>,
    threshold: Option<Threshold>,
    counts: Counts,
}

#[derive(Default)]
struct Counts {
    produced: AtomicU64,
    quarantined: AtomicU64,
    duplicates: AtomicU64,
    warned: AtomicU64,
    by_rule: Mutex<Vec<u64>>,
    partitions_left: AtomicUsize,
}

enum Out {
    Quarantine(RecordBatch),
    Log(RecordBatch),
}

/// What the splitter wrote, once its streams are finished.
pub struct Written {
    handle: tokio::task::JoinHandle<std::io::Result<(Option<Utf8PathBuf>, Option<Utf8PathBuf>)>>,
    splitter: Arc<Splitter>,
}

impl Splitter {
    pub fn new(
        rules: Arc<Vec<RuleCheck>>,
        dedupe: Option<Dedupe>,
        model: &str,
        run_id: &str,
        key: Vec<String>,
        threshold: Option<Threshold>,
    ) -> Arc<Self> {
        let n = rules.len();
        Arc::new(Splitter {
            rules,
            dedupe,
            model: model.to_owned(),
            run_id: run_id.to_owned(),
            key,
            threshold,
            counts: Counts { by_rule: Mutex::new(vec![0; n]), ..Counts::default() },
        })
    }

    /// Wraps the checked query's partitions: each yields the model's own
    /// columns for rows that pass every `error` rule. Quarantined rows and
    /// log lines are written under `run_dir` by a task of their own.
    pub fn split(
        self: &Arc<Self>,
        partitions: Vec<SendableRecordBatchStream>,
        run_dir: &Utf8Path,
    ) -> (Vec<SendableRecordBatchStream>, Written) {
        let (tx, rx) = tokio::sync::mpsc::channel::<Out>(8);
        let checked = partitions.first().map(|p| p.schema()).unwrap_or_else(|| Arc::new(Schema::empty()));
        let added = super::rules::added_columns(&self.rules, self.dedupe.as_ref());
        let width = checked.fields().len().saturating_sub(added);
        let model_schema: SchemaRef = Arc::new(checked.project(&(0..width).collect::<Vec<_>>()).expect("a prefix"));
        self.counts.partitions_left.store(partitions.len(), Ordering::SeqCst);
        let handle = {
            let (dir, model) = (run_dir.to_owned(), self.model.clone());
            let quarantine_schema = quarantine_schema(&model_schema);
            tokio::task::spawn_blocking(move || write_outputs(rx, &dir, &model, quarantine_schema))
        };
        let streams = partitions
            .into_iter()
            .map(|stream| {
                let (me, tx, schema) = (Arc::clone(self), tx.clone(), Arc::clone(&model_schema));
                let rows = stream.then(move |batch| {
                    let (me, tx) = (Arc::clone(&me), tx.clone());
                    async move {
                        let (staged, quarantined, log) = me.split_batch(&batch?, width)?;
                        for out in [quarantined.map(Out::Quarantine), log.map(Out::Log)].into_iter().flatten() {
                            // The writer only stops early on an IO error, which `finish` reports.
                            let _ = tx.send(out).await;
                        }
                        Ok(staged)
                    }
                });
                let me = Arc::clone(self);
                let end = futures::stream::once(async move { me.partition_done() }).filter_map(|e| async move { e });
                Box::pin(RecordBatchStreamAdapter::new(schema, rows.chain(end))) as SendableRecordBatchStream
            })
            .collect();
        (streams, Written { handle, splitter: Arc::clone(self) })
    }

    /// Called as each partition ends; the last one checks the threshold.
    fn partition_done(&self) -> Option<Result<RecordBatch, DataFusionError>> {
        if self.counts.partitions_left.fetch_sub(1, Ordering::SeqCst) != 1 {
            return None;
        }
        let t = self.threshold.as_ref()?;
        let (q, p) = (self.counts.quarantined.load(Ordering::SeqCst), self.counts.produced.load(Ordering::SeqCst));
        t.exceeded(q, p).then(|| {
            Err(DataFusionError::External(Box::new(ThresholdExceeded {
                quarantined: q,
                produced: p,
                threshold: t.text.clone(),
            })))
        })
    }

    fn split_batch(
        &self,
        batch: &RecordBatch,
        width: usize,
    ) -> Result<(RecordBatch, Option<RecordBatch>, Option<RecordBatch>), DataFusionError> {
        let rows = batch.num_rows();
        // After the model's own columns: conversion sites, then one flag per rule.
        let first_flag = width + super::rules::sites(&self.rules);
        let flags: Vec<BooleanArray> =
            (0..self.rules.len()).map(|k| without_nulls(batch.column(first_flag + k).as_boolean())).collect();
        let mut hard = BooleanArray::from(vec![false; rows]);
        let mut soft = BooleanArray::from(vec![false; rows]);
        for (rule, f) in self.rules.iter().zip(&flags) {
            match rule.rule.severity {
                Severity::Error => hard = or(&hard, f)?,
                Severity::Warn => soft = or(&soft, f)?,
            }
        }
        let own = batch.project(&(0..width).collect::<Vec<_>>())?;
        // With dedup, the row kept instead of a dropped one is named in the
        // last column (see `super::dedupe`).
        let (dropped, kept_texts) = match &self.dedupe {
            None => (BooleanArray::from(vec![false; rows]), Vec::new()),
            Some(_) => {
                let kept = batch.column(first_flag + self.rules.len()).as_string::<i32>();
                let dropped = datafusion::arrow::compute::is_not_null(kept)?;
                (dropped, kept.iter().flatten().map(str::to_owned).collect())
            }
        };
        let duplicates = dropped.true_count();
        let warned = datafusion::arrow::compute::and_not(&soft, &or(&hard, &dropped)?)?.true_count();
        self.counts.duplicates.fetch_add(duplicates as u64, Ordering::Relaxed);
        let quarantined = hard.true_count();
        self.counts.produced.fetch_add(rows as u64, Ordering::Relaxed);
        self.counts.quarantined.fetch_add(quarantined as u64, Ordering::Relaxed);
        self.counts.warned.fetch_add(warned as u64, Ordering::Relaxed);
        {
            let mut by_rule = self.counts.by_rule.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            for (k, f) in flags.iter().enumerate() {
                by_rule[k] += f.true_count() as u64;
            }
        }
        let staged = filter_record_batch(&own, &datafusion::arrow::compute::not(&or(&hard, &dropped)?)?)?;
        let quarantine = (quarantined > 0).then(|| self.quarantine_batch(&own, &flags, &hard)).transpose()?;
        let log = self.log_batch(batch, &own, &flags, (duplicates > 0).then_some((&dropped, kept_texts.as_slice())))?;
        Ok((staged, quarantine, log))
    }

    fn quarantine_batch(
        &self,
        own: &RecordBatch,
        flags: &[BooleanArray],
        hard: &BooleanArray,
    ) -> Result<RecordBatch, DataFusionError> {
        let mut broken = StringBuilder::new();
        for i in (0..own.num_rows()).filter(|&i| hard.value(i)) {
            let names: Vec<&str> =
                self.rules.iter().zip(flags).filter(|(_, f)| f.value(i)).map(|(r, _)| r.rule.name.as_str()).collect();
            broken.append_value(names.join(", "));
        }
        let rows = filter_record_batch(own, hard)?;
        let mut columns = rows.columns().to_vec();
        columns.push(Arc::new(broken.finish()));
        Ok(RecordBatch::try_new(quarantine_schema(&own.schema()), columns)?)
    }

    /// One log line per broken rule per row, and one per dropped duplicate
    /// (with the row that was kept instead).
    fn log_batch(
        &self,
        batch: &RecordBatch,
        own: &RecordBatch,
        flags: &[BooleanArray],
        dropped: Option<(&BooleanArray, &[String])>,
    ) -> Result<Option<RecordBatch>, DataFusionError> {
        if flags.iter().all(|f| f.true_count() == 0) && dropped.is_none() {
            return Ok(None);
        }
        // Only the rows that get a line: keys and values are text, and
        // formatting every row of the batch would cost more than the rules.
        let mut any = dropped.map_or_else(|| BooleanArray::from(vec![false; own.num_rows()]), |(d, _)| d.clone());
        for f in flags {
            any = or(&any, f)?;
        }
        let own = &filter_record_batch(own, &any)?;
        let batch = &filter_record_batch(batch, &any)?;
        let flags: Vec<BooleanArray> =
            flags.iter().map(|f| Ok(filter(f, &any)?.as_boolean().clone())).collect::<Result<_, DataFusionError>>()?;
        let dropped_here = dropped.map(|(d, _)| filter(d, &any)).transpose()?;
        let dropped = dropped.zip(dropped_here.as_ref()).map(|((_, kept), d)| (d.as_boolean(), kept));
        // Named by `unique_key` (or the dedup key), else by every column.
        let keys = row_texts(own, &self.key)?;
        let mut b = LogBuilder::default();
        for (rule, f) in self.rules.iter().zip(&flags).filter(|(_, f)| f.true_count() > 0) {
            // A conversion logs the input that did not convert (its column
            // holds NULL); other rules the column's value.
            let values: Option<ArrayRef> = match (&rule.rule.kind, &rule.rule.column) {
                (RuleKind::Conversion { site_column, .. }, _) => {
                    Some(cast(batch.column(batch.schema().index_of(site_column)?), &DataType::Utf8)?)
                }
                (_, Some(c)) if own.schema().index_of(c).is_ok() => {
                    Some(cast(own.column(own.schema().index_of(c)?), &DataType::Utf8)?)
                }
                _ => None,
            };
            let values = values.as_ref().map(|v| v.as_string::<i32>());
            for i in (0..own.num_rows()).filter(|&i| f.value(i)) {
                b.run_id.append_value(&self.run_id);
                b.model.append_value(&self.model);
                b.record_key.append_value(&keys[i]);
                b.rule.append_value(&rule.rule.name);
                b.column.append_option(rule.rule.column.as_deref());
                b.value.append_option(values.filter(|v| !v.is_null(i)).map(|v| v.value(i)));
                b.severity.append_value(match rule.rule.severity {
                    Severity::Error => "error",
                    Severity::Warn => "warn",
                });
                b.message.append_value(&rule.message);
                b.suggestion.append_option(rule.rule.suggestion.as_deref());
            }
        }
        if let (Some((dropped, kept)), Some(d)) = (dropped, &self.dedupe) {
            let rows = (0..own.num_rows()).filter(|&i| dropped.value(i));
            for ((i, kept), text) in rows.zip(kept).zip(row_texts(&filter_record_batch(own, dropped)?, &[])?) {
                b.run_id.append_value(&self.run_id);
                b.model.append_value(&self.model);
                b.record_key.append_value(&keys[i]);
                b.rule.append_value("dedupe");
                b.column.append_value(d.key.join(", "));
                b.value.append_value(text);
                b.severity.append_value("duplicate");
                b.message.append_value(format!("dropped as a duplicate of the row kept: {kept}"));
                b.suggestion.append_null();
            }
        }
        Ok(Some(b.finish()?))
    }
}

impl Written {
    /// Waits for the quarantine and log files and returns the ledger.
    /// `staged` is the stage's row count (0 when it was discarded).
    pub async fn finish(self, staged: u64, shown_root: &Utf8Path) -> std::io::Result<Ledger> {
        let (quarantine, log) = self.handle.await.map_err(std::io::Error::other)??;
        let s = &self.splitter;
        let by_rule = s.counts.by_rule.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        let show = |p: Option<Utf8PathBuf>| p.map(|p| shown_root.join(p));
        Ok(Ledger {
            produced: s.counts.produced.load(Ordering::SeqCst),
            staged,
            quarantined: s.counts.quarantined.load(Ordering::SeqCst),
            duplicates_dropped: s.counts.duplicates.load(Ordering::SeqCst),
            warned: s.counts.warned.load(Ordering::SeqCst),
            // Conversions share the name `conversion`: their counts add up.
            by_rule: s.rules.iter().map(|r| r.rule.name.clone()).zip(by_rule).fold(
                std::collections::BTreeMap::new(),
                |mut m, (name, n)| {
                    *m.entry(name).or_insert(0) += n;
                    m
                },
            ),
            quarantine_file: show(quarantine),
            error_log: show(log),
            changes: None,
        })
    }
}

/// `col=value, ...` for row `i` of `batch`, over every column.
pub(super) fn row_text(batch: &RecordBatch, i: usize) -> Result<String, DataFusionError> {
    Ok(row_texts(&batch.slice(i, 1), &[])?.pop().unwrap_or_default())
}

/// `col=value, ...` for every row of `batch`, over the columns `names`
/// (empty: every column that has a text form).
fn row_texts(batch: &RecordBatch, names: &[String]) -> Result<Vec<String>, DataFusionError> {
    let schema = batch.schema();
    let mut columns = Vec::new();
    if names.is_empty() {
        for (f, c) in schema.fields().iter().zip(batch.columns()) {
            if let Ok(text) = cast(c, &DataType::Utf8) {
                columns.push((f.name().clone(), text));
            }
        }
    } else {
        for n in names {
            columns.push((n.clone(), cast(batch.column(schema.index_of(n)?), &DataType::Utf8)?));
        }
    }
    Ok((0..batch.num_rows())
        .map(|i| {
            let parts: Vec<String> = columns
                .iter()
                .map(|(n, t)| {
                    let t = t.as_string::<i32>();
                    if t.is_null(i) { format!("{n}=NULL") } else { format!("{n}={}", t.value(i)) }
                })
                .collect();
            parts.join(", ")
        })
        .collect())
}

fn without_nulls(a: &BooleanArray) -> BooleanArray {
    if a.null_count() == 0 {
        return a.clone();
    }
    a.iter().map(|v| Some(v.unwrap_or(false))).collect()
}

fn quarantine_schema(model: &SchemaRef) -> SchemaRef {
    let mut fields: Vec<Arc<Field>> = model.fields().iter().cloned().collect();
    fields.push(Arc::new(Field::new(BROKEN_RULES_COLUMN, DataType::Utf8, false)));
    Arc::new(Schema::new(fields))
}

#[derive(Default)]
struct LogBuilder {
    run_id: StringBuilder,
    model: StringBuilder,
    record_key: StringBuilder,
    rule: StringBuilder,
    column: StringBuilder,
    value: StringBuilder,
    severity: StringBuilder,
    message: StringBuilder,
    suggestion: StringBuilder,
}

impl LogBuilder {
    fn finish(mut self) -> Result<RecordBatch, DataFusionError> {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.run_id.finish()),
            Arc::new(self.model.finish()),
            Arc::new(self.record_key.finish()),
            Arc::new(self.rule.finish()),
            Arc::new(self.column.finish()),
            Arc::new(self.value.finish()),
            Arc::new(self.severity.finish()),
            Arc::new(self.message.finish()),
            Arc::new(self.suggestion.finish()),
        ];
        Ok(RecordBatch::try_new(error_log::schema(), columns)?)
    }
}

/// Writes what the splitter sends; files appear (renamed from `.tmp`) only
/// when complete. Returns the quarantine and log paths relative to `dir`.
fn write_outputs(
    mut rx: tokio::sync::mpsc::Receiver<Out>,
    dir: &Utf8Path,
    model: &str,
    quarantine_schema: SchemaRef,
) -> std::io::Result<(Option<Utf8PathBuf>, Option<Utf8PathBuf>)> {
    use datafusion::parquet::arrow::ArrowWriter;
    let rel_q = error_log::quarantine_file(model, "parquet");
    let rel_log = error_log::log_file(model, "parquet");
    let rel_csv = error_log::log_file(model, "csv");
    let tmp = |rel: &Utf8Path| dir.join(format!("{rel}.tmp"));
    let open = |rel: &Utf8Path| -> std::io::Result<std::fs::File> {
        let path = tmp(rel);
        fs_err::create_dir_all(path.parent().expect("has a parent"))?;
        Ok(fs_err::File::create(&path)?.into_parts().0)
    };
    let mut quarantine: Option<ArrowWriter<std::fs::File>> = None;
    let mut log: Option<(ArrowWriter<std::fs::File>, datafusion::arrow::csv::Writer<std::fs::File>)> = None;
    let err = |e: datafusion::parquet::errors::ParquetError| std::io::Error::other(e);
    let csv_err = |e: datafusion::arrow::error::ArrowError| std::io::Error::other(e);
    while let Some(out) = rx.blocking_recv() {
        match out {
            Out::Quarantine(batch) => {
                if quarantine.is_none() {
                    quarantine =
                        Some(ArrowWriter::try_new(open(&rel_q)?, Arc::clone(&quarantine_schema), None).map_err(err)?);
                }
                quarantine.as_mut().expect("opened").write(&batch).map_err(err)?;
            }
            Out::Log(batch) => {
                if log.is_none() {
                    let parquet = ArrowWriter::try_new(open(&rel_log)?, error_log::schema(), None).map_err(err)?;
                    log = Some((parquet, datafusion::arrow::csv::Writer::new(open(&rel_csv)?)));
                }
                let (parquet, csv) = log.as_mut().expect("opened");
                parquet.write(&batch).map_err(err)?;
                csv.write(&batch).map_err(csv_err)?;
            }
        }
    }
    let mut done = (None, None);
    if let Some(w) = quarantine {
        w.close().map_err(err)?;
        fs_err::rename(tmp(&rel_q), dir.join(&rel_q))?;
        done.0 = Some(rel_q);
    }
    if let Some((parquet, csv)) = log {
        parquet.close().map_err(err)?;
        drop(csv);
        fs_err::rename(tmp(&rel_log), dir.join(&rel_log))?;
        fs_err::rename(tmp(&rel_csv), dir.join(&rel_csv))?;
        done.1 = Some(rel_log);
    }
    Ok(done)
}
