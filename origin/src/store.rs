//! The authoritative objects: an in-memory store written through the admin API, over a
//! read-only content directory.
//!
//! Every object has a version and a strong ETag derived from version and content hash.
//! Versions are microseconds since the epoch: a file's is its modification time, a written
//! object's a counter that starts at the origin's start time. So a write over a file, and a
//! write after an origin restart, always get a higher version than what edges and clients
//! saw before (the session guarantees compare them). Memory wins over the directory for
//! the same path; deleting a memory object reveals the file again (if any).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use bytes::Bytes;

use crate::error::OriginError;

/// Where an object's bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// In memory (written through the admin API): shared, never copied per fetch.
    Memory(Bytes),
    /// A file in the content directory, read chunk by chunk as the fetch sends it, so a
    /// slow reader holds one chunk, not the file.
    File {
        /// The resolved path (checked to be under the content directory).
        path: PathBuf,
        /// Its length when it was looked up.
        len: u64,
    },
}

impl Body {
    /// Length in bytes.
    pub fn len(&self) -> u64 {
        match self {
            Self::Memory(b) => b.len() as u64,
            Self::File { len, .. } => *len,
        }
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One authoritative object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    /// The body.
    pub body: Body,
    /// Monotonic version.
    pub version: u64,
    /// Strong ETag (quoted).
    pub etag: String,
    /// Media type.
    pub content_type: String,
    /// Surrogate keys (tags) a purge can name it by; sent as `Surrogate-Key`.
    pub tags: Vec<String>,
    /// Cache-Control of its own (generated video); otherwise the config's rules decide.
    pub cache_control: Option<String>,
}

impl Object {
    fn new(body: Bytes, version: u64, content_type: String) -> Self {
        Self {
            etag: shoal_cache_core::object::etag_for(version, &body),
            body: Body::Memory(body),
            version,
            content_type,
            tags: Vec::new(),
            cache_control: None,
        }
    }

    /// A generated video object.
    pub fn generated(g: shoal_cache_core::video::Generated) -> Self {
        Self {
            etag: shoal_cache_core::object::etag_for(g.version, &g.body),
            body: Body::Memory(g.body),
            version: g.version,
            content_type: g.content_type.into(),
            tags: Vec::new(),
            cache_control: Some(g.cache_control),
        }
    }
}

/// Checks a request path (see [`shoal_cache_core::normalise_path`]) and returns it
/// normalised.
pub fn safe_path(raw: &str) -> Result<String, OriginError> {
    shoal_cache_core::normalise_path(raw).map_err(|e| match e {
        shoal_cache_core::KeyError::BadPath { path, reason } => {
            OriginError::BadPath { path, reason }
        }
        other => OriginError::BadPath {
            path: raw.to_string(),
            reason: if matches!(other, shoal_cache_core::KeyError::RelativePath(_)) {
                "must start with '/'"
            } else {
                "invalid"
            },
        },
    })
}

/// A wall-clock time as a version.
fn micros_since_epoch(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

fn content_type_for(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase()) {
        Some(e) if e == "m3u8" => "application/vnd.apple.mpegurl",
        Some(e) if e == "mpd" => "application/dash+xml",
        Some(e) if e == "ts" => "video/mp2t",
        Some(e) if e == "m4s" || e == "mp4" => "video/mp4",
        Some(e) if e == "json" => "application/json",
        Some(e) if e == "html" => "text/html; charset=utf-8",
        Some(e) if e == "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// The origin's object store.
#[derive(Debug)]
pub struct ObjectStore {
    memory: RwLock<HashMap<String, Arc<Object>>>,
    content_dir: Option<PathBuf>,
    next_version: AtomicU64,
}

impl ObjectStore {
    /// A store over `content_dir` (if any), with no in-memory objects.
    pub fn new(content_dir: Option<PathBuf>) -> Result<Self, OriginError> {
        let content_dir = content_dir
            .map(|d| {
                d.canonicalize().map_err(|source| OriginError::Io {
                    path: d.display().to_string(),
                    source,
                })
            })
            .transpose()?;
        Ok(Self {
            memory: RwLock::new(HashMap::new()),
            content_dir,
            next_version: AtomicU64::new(micros_since_epoch(std::time::SystemTime::now())),
        })
    }

    /// Writes an object; returns it with its new version and ETag.
    pub fn put(
        &self,
        path: &str,
        body: Bytes,
        content_type: Option<String>,
    ) -> Result<Arc<Object>, OriginError> {
        self.put_tagged(path, body, content_type, Vec::new())
    }

    /// Writes an object carrying surrogate keys.
    pub fn put_tagged(
        &self,
        path: &str,
        body: Bytes,
        content_type: Option<String>,
        tags: Vec<String>,
    ) -> Result<Arc<Object>, OriginError> {
        self.put_versioned(path, body, content_type, tags, None)
    }

    /// Writes an object at `version` when given (a `write-back` edge's flush: the version
    /// it acknowledged), refused if the store already holds that version or a newer one
    /// (last writer wins); otherwise at the next version.
    pub fn put_versioned(
        &self,
        path: &str,
        body: Bytes,
        content_type: Option<String>,
        tags: Vec<String>,
        version: Option<u64>,
    ) -> Result<Arc<Object>, OriginError> {
        let path = safe_path(path)?;
        let ct = content_type.unwrap_or_else(|| content_type_for(&path).to_string());
        let mut memory = self.memory.write().unwrap_or_else(|e| e.into_inner());
        let version = match version {
            Some(v) => {
                if let Some(cur) = memory.get(&path).filter(|o| o.version >= v) {
                    return Err(OriginError::Superseded {
                        path,
                        version: v,
                        current: cur.version,
                    });
                }
                // Later versions given here stay newer than this one.
                self.next_version.fetch_max(v + 1, Ordering::SeqCst);
                v
            }
            None => self.next_version.fetch_add(1, Ordering::SeqCst),
        };
        let mut obj = Object::new(body, version, ct);
        obj.tags = tags;
        let obj = Arc::new(obj);
        memory.insert(path, obj.clone());
        Ok(obj)
    }

    /// Deletes an in-memory object; whether it existed.
    pub fn delete(&self, path: &str) -> Result<bool, OriginError> {
        let path = safe_path(path)?;
        Ok(self
            .memory
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&path)
            .is_some())
    }

    /// Number of in-memory objects.
    pub fn len(&self) -> usize {
        self.memory.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether there are no in-memory objects.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The object at `path`, from memory or the content directory.
    pub async fn get(&self, path: &str) -> Result<Arc<Object>, OriginError> {
        let path = safe_path(path)?;
        if let Some(o) = self
            .memory
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&path)
        {
            return Ok(o.clone());
        }
        let Some(root) = &self.content_dir else {
            return Err(OriginError::NotFound(path));
        };
        self.read_file(root, &path).await
    }

    async fn read_file(&self, root: &Path, path: &str) -> Result<Arc<Object>, OriginError> {
        let candidate = root.join(path.trim_start_matches('/'));
        // Resolve symlinks and make sure the result is still under the root.
        let Ok(real) = tokio::fs::canonicalize(&candidate).await else {
            return Err(OriginError::NotFound(path.to_string()));
        };
        if !real.starts_with(root) {
            return Err(OriginError::BadPath {
                path: path.to_string(),
                reason: "resolves outside the content directory",
            });
        }
        let meta = tokio::fs::metadata(&real)
            .await
            .map_err(|source| OriginError::Io {
                path: path.to_string(),
                source,
            })?;
        if !meta.is_file() {
            return Err(OriginError::NotFound(path.to_string()));
        }
        // A file's version is its modification time, stable across restarts; its ETag is
        // modification time and length (as nginx makes it), so no fetch reads it whole.
        let modified = meta.modified().ok();
        let mtime = modified
            .and_then(|m| m.duration_since(std::time::UNIX_EPOCH).ok())
            .unwrap_or_default();
        Ok(Arc::new(Object {
            etag: format!("\"f{:x}-{:x}\"", mtime.as_nanos(), meta.len()),
            body: Body::File {
                path: real,
                len: meta.len(),
            },
            version: modified.map_or(0, micros_since_epoch),
            content_type: content_type_for(path).to_string(),
            tags: Vec::new(),
            cache_control: None,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn versions_and_etags_change_on_write() {
        let s = ObjectStore::new(None).unwrap();
        let a = s.put("/x", Bytes::from_static(b"1"), None).unwrap();
        let b = s.put("/x", Bytes::from_static(b"1"), None).unwrap();
        assert!(b.version > a.version);
        assert_ne!(a.etag, b.etag);
        assert_eq!(
            s.get("/x").await.unwrap().body,
            Body::Memory(Bytes::from_static(b"1"))
        );
        assert!(s.delete("/x").unwrap());
        assert!(matches!(s.get("/x").await, Err(OriginError::NotFound(_))));
    }
}
