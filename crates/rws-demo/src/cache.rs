//! Content-addressed stage cache: a stage's output is named by a hash of everything that
//! determines it (its settings and the keys of the stages it reads), so a rerun redoes only what
//! changed and a changed setting can never pick up a stale result.
use std::path::{Path, PathBuf};

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::{Error, Result};

/// Bumped whenever a stage's algorithm changes in a way its settings don't show.
const CACHE_VERSION: &str = "rws-demo-cache-1";

pub struct Cache {
    dir: PathBuf,
    fresh: bool,
}

impl Cache {
    pub fn new(dir: &Path, fresh: bool) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| Error::Io { path: dir.to_path_buf(), source: e })?;
        Ok(Cache { dir: dir.to_path_buf(), fresh })
    }

    /// A short hex key for any serialisable description of a stage.
    pub fn key(parts: &impl Serialize) -> String {
        let json = serde_json::to_string(&(CACHE_VERSION, parts)).expect("stage keys serialise");
        let digest = Sha256::digest(json.as_bytes());
        digest.iter().take(10).map(|b| format!("{b:02x}")).collect()
    }

    /// Returns the cached file for `stage`/`key`, computing it first when missing (or when the
    /// cache was opened with `fresh`). `compute` writes to the temporary path it is given; the file
    /// only gets its final name once `compute` succeeded, so an interrupted run leaves no
    /// half-written entry behind. Returns the path and whether it was computed now.
    pub fn get_or(
        &self,
        stage: &str,
        key: &str,
        ext: &str,
        compute: impl FnOnce(&Path) -> Result<()>,
    ) -> Result<(PathBuf, bool)> {
        let path = self.dir.join(format!("{stage}-{key}.{ext}"));
        if path.exists() && !self.fresh {
            return Ok((path, false));
        }
        let tmp = self.dir.join(format!(".{stage}-{key}.{ext}.tmp"));
        if let Err(e) = compute(&tmp) {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        std::fs::rename(&tmp, &path).map_err(|e| Error::Io { path: path.clone(), source: e })?;
        Ok((path, true))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn computes_once_then_reuses_and_fresh_recomputes() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path(), false).unwrap();
        let key = Cache::key(&("stage", 1));
        let mut calls = 0;
        for _ in 0..2 {
            cache
                .get_or("s", &key, "txt", |p| {
                    calls += 1;
                    std::fs::write(p, b"x").map_err(|e| Error::Io { path: p.to_path_buf(), source: e })
                })
                .unwrap();
        }
        assert_eq!(calls, 1);
        let fresh = Cache::new(dir.path(), true).unwrap();
        let (_, computed) = fresh.get_or("s", &key, "txt", |p| std::fs::write(p, b"y").map_err(|e| Error::Io { path: p.to_path_buf(), source: e })).unwrap();
        assert!(computed);
        assert_ne!(Cache::key(&("stage", 1)), Cache::key(&("stage", 2)));
    }

    #[test]
    fn failed_compute_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path(), false).unwrap();
        let r = cache.get_or("s", "k", "txt", |p| {
            std::fs::write(p, b"partial").unwrap();
            Err(Error::Msg("boom".into()))
        });
        assert!(r.is_err());
        assert!(!dir.path().join("s-k.txt").exists());
        assert!(!dir.path().join(".s-k.txt.tmp").exists());
    }
}
