//! Where lines come from: files (plain or gzip), stdin, or bytes in memory (the demo's
//! generator), followed files, Kubernetes pods through the API, and a node's CRI log files.

pub mod follow;
pub mod kube;
pub mod lines;
pub mod node;

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::PathBuf;

use flate2::read::MultiGzDecoder;

/// One input of a run.
#[derive(Debug, Clone)]
pub enum Input {
    /// A file; gzip is recognised by its magic bytes, whatever the name.
    Path(PathBuf),
    Stdin,
    /// Bytes already in memory, under a name for reports.
    Memory {
        name: String,
        bytes: std::sync::Arc<[u8]>,
    },
}

impl Input {
    /// `-` means stdin.
    pub fn from_arg(arg: &str) -> Input {
        if arg == "-" { Input::Stdin } else { Input::Path(PathBuf::from(arg)) }
    }

    /// The name rejects and errors use for this input.
    pub fn name(&self) -> String {
        match self {
            Input::Path(path) => path.display().to_string(),
            Input::Stdin => "stdin".to_owned(),
            Input::Memory { name, .. } => name.clone(),
        }
    }

    /// Opens the input for reading, decompressing gzip.
    pub fn open(&self) -> io::Result<Box<dyn Read + Send>> {
        let reader: Box<dyn Read + Send> = match self {
            Input::Path(path) => Box::new(File::open(path)?),
            Input::Stdin => Box::new(io::stdin()),
            Input::Memory { bytes, .. } => Box::new(io::Cursor::new(bytes.clone())),
        };
        let mut buffered = BufReader::with_capacity(256 * 1024, reader);
        let is_gzip = buffered.fill_buf()?.starts_with(&[0x1f, 0x8b]);
        Ok(if is_gzip { Box::new(MultiGzDecoder::new(buffered)) } else { Box::new(buffered) })
    }
}
