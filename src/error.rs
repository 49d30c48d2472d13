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

/// The most a text input (a recipe, a config, JSON metadata, a tokenizer.json) may hold: far
/// beyond any real one (a 152k-token tokenizer.json is ~11 MB), far below memory.
pub const TEXT_LIMIT: u64 = 256 << 20;

/// `path` if it is a regular file (links followed), with its metadata; otherwise an input
/// error saying what it is. Checked before opening: opening a FIFO would block, and a device
/// (`/dev/zero`) never ends.
pub fn regular_file(path: &Path) -> Result<std::fs::Metadata> {
    let m = std::fs::metadata(path).map_err(|e| Error::input(format!("{}: cannot read file: {e}", path.display())))?;
    if m.is_file() {
        return Ok(m);
    }
    use std::os::unix::fs::FileTypeExt;
    let t = m.file_type();
    let what = if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO (named pipe)"
    } else if t.is_char_device() || t.is_block_device() {
        "a device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    };
    Err(Error::input(format!("{}: is {what}, expected a regular file", path.display())))
}

/// [`regular_file`], opened for reading.
pub fn open_regular(path: &Path) -> Result<std::fs::File> {
    regular_file(path)?;
    std::fs::File::open(path).map_err(|e| Error::input(format!("{}: cannot open: {e}", path.display())))
}

/// A regular file's bytes, refused beyond `limit` before anything is read (its length is
/// checked, and the read stops past it should the file grow meanwhile).
pub fn read_bounded(path: &Path, limit: u64) -> Result<Vec<u8>> {
    use std::io::Read;
    let len = regular_file(path)?.len();
    if len > limit {
        return Err(Error::input(format!(
            "{}: {len} bytes, more than the {limit} this kind of file may hold",
            path.display()
        )));
    }
    let mut bytes = Vec::with_capacity(len as usize);
    // (Checked just above: not through open_regular, which would read the metadata again.)
    std::fs::File::open(path)
        .map_err(|e| Error::input(format!("{}: cannot open: {e}", path.display())))?
        .take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::input(format!("{}: cannot read file: {e}", path.display())))?;
    if bytes.len() as u64 > limit {
        return Err(Error::input(format!("{}: grew past {limit} bytes while being read", path.display())));
    }
    Ok(bytes)
}

/// Reading a text file the user named: a missing, unreadable, non-regular or oversized file
/// is an input error naming it.
pub fn read_to_string(path: &Path) -> Result<String> {
    String::from_utf8(read_bounded(path, TEXT_LIMIT)?)
        .map_err(|e| Error::input(format!("{}: not UTF-8 text: {e}", path.display())))
}

/// I/O on files we own (run directory): failures there are runtime errors.
pub fn io_ctx<T>(r: std::io::Result<T>, what: impl FnOnce() -> String) -> Result<T> {
    r.map_err(|e| Error::runtime(format!("{}: {e}", what())))
}
