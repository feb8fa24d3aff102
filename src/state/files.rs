//! Files ferry writes under `.ferry/`: written to a temporary file beside
//! the target and renamed, so a reader never sees half a file.

use std::io::Write;

use anyhow::{Context as _, Result};
use camino::Utf8Path;

/// Writes `bytes` to `path` atomically (temp file + rename). With `durable`,
/// the data is fsynced before the rename.
pub fn write_atomic(path: &Utf8Path, bytes: &[u8], durable: bool) -> Result<()> {
    let dir = path.parent().context("an artifact path has a parent directory")?;
    fs_err::create_dir_all(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("failed to create a temporary file in `{dir}`"))?;
    tmp.write_all(bytes).with_context(|| format!("failed to write `{path}`"))?;
    if durable {
        tmp.as_file().sync_all().with_context(|| format!("failed to sync `{path}`"))?;
    }
    tmp.persist(path).with_context(|| format!("failed to move the new `{path}` into place"))?;
    Ok(())
}

/// Like [`write_atomic`], but leaves an identical existing file alone.
pub fn write_if_changed(path: &Utf8Path, bytes: &[u8]) -> Result<()> {
    if fs_err::read(path).is_ok_and(|old| old == bytes) {
        return Ok(());
    }
    write_atomic(path, bytes, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_and_replaces_whole_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = camino::Utf8PathBuf::try_from(dir.path().join("a/b.json")).unwrap();
        write_atomic(&path, b"one", true).unwrap();
        write_if_changed(&path, b"two").unwrap();
        assert_eq!(fs_err::read_to_string(&path).unwrap(), "two");
        assert_eq!(fs_err::read_dir(path.parent().unwrap()).unwrap().count(), 1, "no temporary files left");
    }
}
