//! One error type for the library. The split between `Input` and `Runtime` is what the CLI
//! turns into exit codes (2 and 1): a user must be able to tell "fix your recipe/data" apart
//! from "something broke while running".

use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad recipe, bad data, missing or corrupt file: the user can fix it. Exit code 2.
    #[error("{0}")]
    Input(String),
    /// Failure while running (I/O, numerical blow-up, ...). Exit code 1.
    #[error("{0}")]
    Runtime(String),
    /// The user asked us to stop (Ctrl-C); the state was saved first.
    #[error("{0}")]
    Interrupted(String),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn input(msg: impl Into<String>) -> Self {
        Error::Input(msg.into())
    }
    pub fn runtime(msg: impl Into<String>) -> Self {
        Error::Runtime(msg.into())
    }
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Input(_) => 2,
            Error::Runtime(_) => 1,
            Error::Interrupted(_) => 130,
        }
    }
}

/// Reading a file the user named: a missing or unreadable file is an input error naming it.
pub fn read_to_string(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| Error::input(format!("{}: cannot read file: {e}", path.display())))
}

/// I/O on files we own (run directory): failures there are runtime errors.
pub fn io_ctx<T>(r: std::io::Result<T>, what: impl FnOnce() -> String) -> Result<T> {
    r.map_err(|e| Error::runtime(format!("{}: {e}", what())))
}
