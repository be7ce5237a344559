//! Typed storage errors.

use std::path::{Path, PathBuf};

/// Everything that can go wrong below the state machine.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// fjall reported an I/O or corruption problem.
    #[error("fjall: {0}")]
    Fjall(#[from] fjall::Error),
    /// A record read back from disk is damaged: its checksum does not match.
    #[error("corrupt record: {0}")]
    Corrupt(String),
    /// A record whose bytes check out but that this release cannot decode (a format or
    /// version problem, or a bug): never treated as damage, so no database is set aside for it.
    #[error("undecodable record: {0}")]
    Undecodable(String),
    /// A plain I/O error (snapshot files, sync thread).
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// Any of the above, on the file or directory at `path`: an operator reading
    /// "Read-only file system" needs to know which one.
    #[error("{}: {source}", path.display())]
    At {
        /// The file or directory the operation was on.
        path: PathBuf,
        /// What went wrong there.
        source: Box<StorageError>,
    },
}

impl StorageError {
    /// True if what was read back is damaged (a checksum that does not match, bytes that do
    /// not decode), as opposed to a disk that refuses writes or a missing file.
    pub fn is_damage(&self) -> bool {
        match self {
            StorageError::Corrupt(_) => true,
            StorageError::Undecodable(_) | StorageError::Io(_) => false,
            StorageError::Fjall(e) => crate::store::is_damage(e),
            StorageError::At { source, .. } => source.is_damage(),
        }
    }

    /// This error, as having happened on `path` (unchanged if it already names one).
    pub fn at(self, path: &Path) -> StorageError {
        match self {
            at @ StorageError::At { .. } => at,
            other => StorageError::At {
                path: path.to_path_buf(),
                source: Box::new(other),
            },
        }
    }
}

/// `?` with the path of what failed: `result.at_path(dir)?`.
pub trait AtPath<T> {
    /// Maps the error to `StorageError::At { path, .. }`.
    fn at_path(self, path: &Path) -> Result<T, StorageError>;
}

impl<T, E: Into<StorageError>> AtPath<T> for Result<T, E> {
    fn at_path(self, path: &Path) -> Result<T, StorageError> {
        self.map_err(|e| e.into().at(path))
    }
}

impl From<StorageError> for std::io::Error {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::Io(e) => e,
            other => std::io::Error::other(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_on_a_path_names_the_path_once() {
        let io = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        let e = Err::<(), _>(io).at_path(Path::new("/data/n1/fjall")).unwrap_err();
        let e = e.at(Path::new("/elsewhere"));
        let text = e.to_string();
        assert!(text.starts_with("/data/n1/fjall: io: "), "{text}");
        assert!(!text.contains("/elsewhere"), "{text}");
    }

    #[test]
    fn opening_a_store_where_no_directory_can_be_made_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a-file");
        std::fs::write(&file, b"x").unwrap();
        let under = file.join("data");
        let err = crate::Store::open(&under)
            .err()
            .expect("cannot create a dir under a file")
            .to_string();
        assert!(err.contains(&under.display().to_string()), "{err}");
    }
}
