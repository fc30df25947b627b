//! Configuration: where it lives, how files and flags merge, and what a
//! valid setting is. The one home of every default and every value check.
//!
//! Configuration flows in three steps, as in zincati:
//!
//! 1. Each file parses into a [`Fragment`], whose fields are all optional and
//!    whose unknown keys are errors, so a typo fails loudly instead of being
//!    silently ignored on a control-plane node ([`file`]).
//! 2. Fragments [`merge`](Fragment::merge): the main file first, then the
//!    drop-ins in `config.d/` in lexical order, then the command line's flags
//!    (the CLI builds them into one more fragment); a later one wins per key
//!    and lists are replaced, not appended. This lets packaging ship defaults
//!    in one file and an operator override a single key in another.
//! 3. The merged fragment becomes [`Settings`]: every key defaulted and every
//!    value validated, in one step whatever its source ([`settings`]).
//!    Nothing downstream sees an `Option` or an unchecked value.
//!
//! Durations, in files and flags alike, go through [`duration`]: seconds or
//! a unit (`30s`, `5m`), bounded to a day.
//!
//! Every error names the file it came from; parse errors also carry the line
//! and column, and validation errors the file that set the offending key.
//! The loader takes its paths as arguments so tests (and `check-config`) can
//! point it anywhere.

pub mod duration;
mod file;
mod settings;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

pub use file::{load_file, read, AdmissionFragment, Fragment, ServeFragment};
pub use settings::*;

/// The main config file.
pub const DEFAULT_CONFIG_FILE: &str = "/etc/staticpin/config.yaml";
/// Drop-ins, read after the main file.
pub const DEFAULT_DROPIN_DIR: &str = "/etc/staticpin/config.d";

/// Where the configuration is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigPaths {
    /// The main file; a missing one means built-in defaults.
    pub main: PathBuf,
    /// Drop-ins: every `*.yaml` here (dotfiles excepted), in lexical order.
    pub dropin_dir: PathBuf,
}

impl Default for ConfigPaths {
    fn default() -> Self {
        ConfigPaths {
            main: PathBuf::from(DEFAULT_CONFIG_FILE),
            dropin_dir: PathBuf::from(DEFAULT_DROPIN_DIR),
        }
    }
}

/// Why configuration could not be loaded. Display always starts with the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A file that could not be read (for [`load`], other than not existing).
    #[error("{}: cannot read: {source}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The drop-in directory exists but cannot be listed.
    #[error("{}: cannot list drop-in directory: {source}", .dir.display())]
    ReadDir {
        /// The drop-in directory.
        dir: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// Syntax errors, wrong types and unknown keys.
    #[error("{}: {}{message}", .path.display(), Location(.line_column))]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line and column, when the YAML parser knows them.
        line_column: Option<(usize, usize)>,
        /// The parser's message, without its location.
        message: String,
    },
    /// A well-typed value outside its allowed range.
    #[error("{}{key}: {reason}", Origin(.origin))]
    Invalid {
        /// The file that set the value; `None` for flags and fragments built in code.
        origin: Option<PathBuf>,
        /// The camelCase key, e.g. `keepBackups` or `admission.configFile`.
        key: String,
        /// What the value must be, and what it was.
        reason: String,
    },
}

impl ConfigError {
    /// The file at fault, if the error is tied to one.
    pub fn path(&self) -> Option<&Path> {
        match self {
            ConfigError::Read { path, .. } | ConfigError::Parse { path, .. } => Some(path),
            ConfigError::ReadDir { dir, .. } => Some(dir),
            ConfigError::Invalid { origin, .. } => origin.as_deref(),
        }
    }
}

struct Location<'a>(&'a Option<(usize, usize)>);

impl fmt::Display for Location<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some((line, column)) => write!(f, "line {line} column {column}: "),
            None => Ok(()),
        }
    }
}

struct Origin<'a>(&'a Option<PathBuf>);

impl fmt::Display for Origin<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(path) => write!(f, "{}: ", path.display()),
            None => Ok(()),
        }
    }
}

/// Loads the main file and its drop-ins and returns the settings and the
/// files read, in the order they were applied. A missing main file or drop-in
/// directory means defaults: a node needs no config file to run.
pub fn load(paths: &ConfigPaths) -> Result<(Settings, Vec<PathBuf>), ConfigError> {
    let (fragment, files) = read(paths)?;
    Ok((Settings::from_fragment(fragment)?, files))
}

/// `staticpin check-config FILE`: the file alone, over the defaults. Unlike
/// [`load`], a missing file is an error, because the operator named it.
pub fn check(path: &Path) -> Result<Settings, ConfigError> {
    Settings::from_fragment(load_file(path)?)
}

#[cfg(test)]
mod tests;
