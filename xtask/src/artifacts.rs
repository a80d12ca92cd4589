//! Writing outputs so that a reader never sees a half-written or mixed set.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Writes `bytes` to `path` through a temporary file in the same folder and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let mut temp = tempfile::NamedTempFile::new_in(dir)?;
    temp.write_all(bytes)?;
    // Temporary files are created private; artifacts are ordinary readable files.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        temp.as_file().set_permissions(fs::Permissions::from_mode(0o644))?;
    }
    temp.as_file().sync_all()?;
    temp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// Stages every file in a sibling folder of `dir`, then renames them into `dir` one by one.
///
/// Nothing in `dir` changes until every file is fully written, so a failure while producing
/// the set (a full disk, a crash) leaves the previous artifacts as they were.
pub fn replace_all<N: AsRef<Path>>(dir: &Path, files: &[(N, Vec<u8>)]) -> std::io::Result<()> {
    fs::create_dir_all(dir)?;
    let staging = tempfile::Builder::new().prefix(".staging-").tempdir_in(dir)?;
    let staged: Vec<(PathBuf, PathBuf)> = files
        .iter()
        .map(|(name, bytes)| {
            let from = staging.path().join(name);
            write_atomic(&from, bytes)?;
            Ok((from, dir.join(name)))
        })
        .collect::<std::io::Result<_>>()?;
    for (from, to) in staged {
        if let Some(parent) = to.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::rename(from, to)?;
    }
    Ok(())
}
