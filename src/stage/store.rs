//! Stages in an object store (`stage_dir: s3://bucket/prefix`), so that
//! the ferry host and every machine of a cluster read the same stages.
//!
//! An object store has no rename, so a stage there is versioned: its files
//! go under `<root>/<model>/<version>/`, and the manifest, written last at
//! `<root>/<model>/_ferry_stage.json` in one PUT (which every store makes
//! visible whole or not at all), names the version. A reader trusts only
//! the version the manifest names, with each file's size checked against
//! it ([`read_manifest`]). Once a new manifest is in place, every other
//! version under the model's prefix is removed: the one it replaced, and
//! any left by a write that never reached its manifest (a failure, Ctrl-C,
//! a killed process).
//!
//! A version may also be written pending ([`write_version`]: an
//! incremental model's next data, read by this run's models and loaded,
//! but made the stage only once its load committed). Its manifest is inside
//! it, naming no version, and [`commit`] puts that manifest, naming the
//! version, in place of the stage's.

use std::sync::Arc;

use camino::Utf8PathBuf;
use datafusion::execution::SendableRecordBatchStream;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use url::Url;

use super::{Dir, MANIFEST_FILE, StageError, StageManifest, StageOptions, StagedTable};

/// A prefix of an object store: a stage root, or one model's stage in it.
#[derive(Clone)]
pub struct Stored {
    store: Arc<dyn ObjectStore>,
    /// The prefix's URL, ending in `/`.
    url: Url,
    prefix: Path,
}

impl std::fmt::Debug for Stored {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Stored").field(&self.url.as_str()).finish()
    }
}

impl std::fmt::Display for Stored {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.url.as_str())
    }
}

impl Stored {
    /// The prefix at `url` (`s3://bucket/some/prefix`) in `store`, the
    /// store that holds that URL's objects.
    pub fn new(url: &Url, store: Arc<dyn ObjectStore>) -> Result<Stored, object_store::path::Error> {
        let mut url = url.clone();
        if !url.path().ends_with('/') {
            url.set_path(&format!("{}/", url.path()));
        }
        let prefix = Path::from_url_path(url.path())?;
        Ok(Stored { store, url, prefix })
    }

    /// The prefix `name/` under this one.
    pub fn child(&self, name: &str) -> Stored {
        let url = self.url.join(&format!("{}/", urlencoding(name))).unwrap_or_else(|_| self.url.clone());
        Stored { store: Arc::clone(&self.store), url, prefix: self.prefix.clone().join(name) }
    }

    pub fn url(&self) -> &Url {
        &self.url
    }

    pub(super) fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// The object `name` under this prefix.
    pub(super) fn object(&self, name: &str) -> Path {
        name.split('/').fold(self.prefix.clone(), |p, part| p.join(part))
    }

    /// The last segment of the prefix: a version's name.
    fn version_name(&self) -> String {
        self.prefix.filename().unwrap_or_default().to_owned()
    }

    /// `name` under this prefix, as a path for messages.
    pub(super) fn shown(&self, name: &str) -> Utf8PathBuf {
        Utf8PathBuf::from(format!("{}{name}", self.url))
    }
}

/// The object, under a stage's prefix, of its file `name`: under the
/// version its manifest names, or (a version pending) beside the manifest.
pub(super) fn file_name(version: Option<&str>, name: &str) -> String {
    match version {
        Some(version) => format!("{version}/{name}"),
        None => name.to_owned(),
    }
}

/// A model name as one segment of a URL path.
fn urlencoding(name: &str) -> String {
    url::form_urlencoded::byte_serialize(name.as_bytes()).collect::<String>().replace('+', "%20")
}

/// Streams `partitions` into a new version of `model`'s stage under
/// `root`, then writes the manifest that makes it the stage.
pub(super) async fn write_stage(
    root: &Stored,
    model: &str,
    partitions: Vec<SendableRecordBatchStream>,
    options: StageOptions,
) -> Result<StagedTable, StageError> {
    let dir = root.child(model);
    let (written, mut manifest) = write_version_files(&dir, model, partitions, options).await?;
    let version = written.version_name();
    manifest.version = Some(version.clone());
    put_manifest_or_remove(&dir, &manifest, &written).await?;
    remove_versions_but(&dir, &version).await;
    Ok(StagedTable { dir: Dir::Stored(Box::new(dir)), manifest })
}

/// Streams `partitions` into a new version of `model`'s stage under
/// `root` that no manifest of the stage names yet: a version pending, with
/// its own manifest inside it, which readers may read as it is and
/// [`commit`] makes the stage. Until then the stage is as it was; the next
/// version of the stage put in place removes a pending one never committed.
pub(super) async fn write_version(
    root: &Stored,
    model: &str,
    partitions: Vec<SendableRecordBatchStream>,
    options: StageOptions,
) -> Result<StagedTable, StageError> {
    let (written, manifest) = write_version_files(&root.child(model), model, partitions, options).await?;
    put_manifest_or_remove(&written, &manifest, &written).await?;
    Ok(StagedTable { dir: Dir::Stored(Box::new(written)), manifest })
}

/// Makes a version pending under `<root>/<model>/` (from [`write_version`])
/// the stage: its manifest, naming it, replaces the stage's in one PUT,
/// then every other version is removed.
pub(super) async fn commit(root: &Stored, staged: &StagedTable, model: &str) -> Result<StagedTable, StageError> {
    let dir = root.child(model);
    let pending = match &staged.dir {
        Dir::Stored(pending) if dir.prefix.clone().join(pending.version_name()) == pending.prefix => pending,
        other => {
            let why = format!("`{other}` is not a version of the stage at {dir}");
            return Err(io("commit", &dir.shown(""), std::io::Error::other(why)));
        }
    };
    let mut manifest = read_manifest(pending).await?;
    let version = pending.version_name();
    manifest.version = Some(version.clone());
    put_manifest(&dir, &manifest).await?;
    if let Err(e) = dir.store.delete(&pending.object(MANIFEST_FILE)).await {
        tracing::warn!("cannot remove the manifest of the pending version {pending}: {e}");
    }
    remove_versions_but(&dir, &version).await;
    Ok(StagedTable { dir: Dir::Stored(Box::new(dir)), manifest })
}

/// Removes a version pending (from [`write_version`]) that will not be
/// committed.
pub async fn discard(staged: &StagedTable) {
    if let (Dir::Stored(pending), None) = (&staged.dir, &staged.manifest.version) {
        remove_all(&pending.store, &pending.prefix).await;
    }
}

/// Writes the files of a new version under `dir` (a stage's prefix), and
/// returns its prefix and their manifest, which names no version. Dropped
/// (Ctrl-C) before it returns, the version is removed in the background;
/// failed, it is removed here.
async fn write_version_files(
    dir: &Stored,
    model: &str,
    partitions: Vec<SendableRecordBatchStream>,
    options: StageOptions,
) -> Result<(Stored, StageManifest), StageError> {
    let written = dir.child(&format!("v-{}", uuid::Uuid::new_v4().simple()));
    let unfinished = Unfinished { dir: Some(written.clone()) };
    let manifest = super::write_files(&Dir::Stored(Box::new(written.clone())), model, partitions, options).await;
    unfinished.kept();
    match manifest {
        Ok(manifest) => Ok((written, manifest)),
        Err(e) => {
            remove_all(&written.store, &written.prefix).await;
            Err(e)
        }
    }
}

/// [`put_manifest`], removing the version `written` if it fails.
async fn put_manifest_or_remove(dir: &Stored, manifest: &StageManifest, written: &Stored) -> Result<(), StageError> {
    let put = put_manifest(dir, manifest).await;
    if put.is_err() {
        remove_all(&written.store, &written.prefix).await;
    }
    put
}

/// Writes `manifest` as the manifest of the stage (or pending version) in
/// `dir`, in one PUT.
async fn put_manifest(dir: &Stored, manifest: &StageManifest) -> Result<(), StageError> {
    let shown = dir.shown(MANIFEST_FILE);
    let json = serde_json::to_vec_pretty(manifest).map_err(|e| io("serialize", &shown, e))?;
    dir.store.put(&dir.object(MANIFEST_FILE), PutPayload::from(json)).await.map_err(|e| io("write", &shown, e))?;
    Ok(())
}

/// Reads a stored stage's manifest and checks that the version it names
/// (or, for a version pending, the version itself) has all its files,
/// with the recorded sizes.
pub(super) async fn read_manifest(dir: &Stored) -> Result<StageManifest, StageError> {
    let model = dir.prefix.filename().unwrap_or_default().to_owned();
    let corrupt =
        |reason: String| StageError::Corrupt { model: model.clone(), path: Utf8PathBuf::from(dir.to_string()), reason };
    let text = match dir.store.get(&dir.object(MANIFEST_FILE)).await {
        Ok(got) => got.bytes().await.map_err(|e| io("read", &dir.shown(MANIFEST_FILE), e))?,
        Err(object_store::Error::NotFound { .. }) => return Err(corrupt(format!("`{MANIFEST_FILE}` is missing"))),
        Err(e) => return Err(io("read", &dir.shown(MANIFEST_FILE), e)),
    };
    let manifest: StageManifest =
        serde_json::from_slice(&text).map_err(|e| corrupt(format!("`{MANIFEST_FILE}` is invalid: {e}")))?;
    // Owned, so that the future is Send for any lifetime (it runs inside
    // a node's future).
    let wanted: Vec<(String, Path, u64)> = manifest
        .files
        .iter()
        .map(|f| {
            let name = file_name(manifest.version.as_deref(), &f.name);
            let object = dir.object(&name);
            (name, object, f.bytes)
        })
        .collect();
    let heads = futures::stream::iter(wanted.into_iter().map(|(name, object, bytes)| {
        let store = Arc::clone(&dir.store);
        async move { (store.head(&object).await, name, bytes) }
    }))
    .buffered(8)
    .collect::<Vec<_>>()
    .await;
    for (head, name, bytes) in heads {
        match head {
            Ok(meta) if meta.size == bytes => {}
            Ok(meta) => return Err(corrupt(format!("`{name}` has {} bytes, the manifest says {bytes}", meta.size))),
            Err(object_store::Error::NotFound { .. }) => return Err(corrupt(format!("`{name}` is missing"))),
            Err(e) => return Err(io("inspect", &dir.shown(&name), e)),
        }
    }
    Ok(manifest)
}

/// Removes every version of the stage in `dir` but `keep` (failures are
/// logged: what is left is removed by the next write of the stage).
async fn remove_versions_but(dir: &Stored, keep: &str) {
    sweep(dir, |version| version != keep).await;
}

/// Removes each prefix directly under `dir` whose name `leftover` holds
/// (what earlier writes or killed runs left), logging what could not be
/// removed.
pub async fn sweep(dir: &Stored, leftover: impl Fn(&str) -> bool) {
    let listed = match dir.store.list_with_delimiter(Some(&dir.prefix)).await {
        Ok(listed) => listed,
        Err(e) => {
            tracing::warn!("cannot list {dir} for what earlier writes left: {e}");
            return;
        }
    };
    for prefix in listed.common_prefixes {
        if prefix.filename().is_some_and(&leftover) {
            remove_all(&dir.store, &prefix).await;
        }
    }
}

/// Removes everything under `dir` (a run's scratch), logging what could
/// not be removed.
pub async fn remove(dir: &Stored) {
    remove_all(&dir.store, &dir.prefix).await;
}

/// Removes every object under `prefix`, logging what could not be.
async fn remove_all(store: &Arc<dyn ObjectStore>, prefix: &Path) {
    let objects = store.list(Some(prefix)).map_ok(|meta| meta.location).boxed();
    let mut removed = store.delete_stream(objects);
    while let Some(done) = removed.next().await {
        if let Err(e) = done {
            tracing::warn!("cannot remove `{prefix}` from the stage store: {e}");
        }
    }
}

/// The version being written: removed in the background if dropped before
/// [`Unfinished::kept`] (the write's future dropped, as by Ctrl-C).
struct Unfinished {
    dir: Option<Stored>,
}

impl Unfinished {
    fn kept(mut self) {
        self.dir = None;
    }
}

impl Drop for Unfinished {
    fn drop(&mut self) {
        let Some(dir) = self.dir.take() else { return };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        runtime.spawn(async move { remove_all(&dir.store, &dir.prefix).await });
    }
}

pub(super) fn io(
    action: &'static str,
    path: &Utf8PathBuf,
    e: impl std::error::Error + Send + Sync + 'static,
) -> StageError {
    StageError::Io { action, path: path.clone(), source: std::io::Error::other(e) }
}
