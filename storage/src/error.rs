//! Typed storage errors.

/// Everything that can go wrong below the state machine.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// fjall reported an I/O or corruption problem.
    #[error("fjall: {0}")]
    Fjall(#[from] fjall::Error),
    /// A record read back from disk did not decode.
    #[error("corrupt record: {0}")]
    Corrupt(String),
    /// A plain I/O error (snapshot files, sync thread).
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

impl From<StorageError> for std::io::Error {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::Io(e) => e,
            other => std::io::Error::other(other.to_string()),
        }
    }
}
