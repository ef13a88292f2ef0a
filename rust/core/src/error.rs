//! The one error type of the core crate.
//!
//! Every fallible core function returns `Result<T, CoreError>`. The binding crate maps each
//! variant to one named Python exception, so the variant decides what a user can catch:
//! bad arguments become `InvalidInputError` (a `ValueError`), bad data `DataError`.

use std::path::PathBuf;

/// Where in a data source a problem was found: enough to go and look at the bad sample.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Location {
    /// The file or shard, e.g. `train-000003.tar` or `captions.csv`.
    pub source: String,
    /// The member inside a shard or the row of a table, when there is one.
    pub member: Option<String>,
    /// The sample's index within its source, when known.
    pub index: Option<u64>,
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.source)?;
        if let Some(member) = &self.member {
            write!(f, ", member {member}")?;
        }
        if let Some(index) = self.index {
            write!(f, ", sample {index}")?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// An argument has a wrong value or shape. `argument` names the parameter.
    #[error("invalid `{argument}`: {reason}")]
    InvalidArgument { argument: String, reason: String },

    /// A sample or a source could not be used: corrupt image, missing caption, truncated tar...
    #[error("bad data in {location}: {reason}")]
    Data { location: Location, reason: String },

    /// The operating system refused a file operation.
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A thread of ours panicked: a bug in lightclip, reported instead of lost.
    #[error("internal error: the {thread} thread panicked: {message} (a bug in lightclip; please report it)")]
    Panic { thread: String, message: String },
}

impl CoreError {
    /// Shorthand for the common case of a rejected argument.
    pub fn invalid(argument: impl Into<String>, reason: impl Into<String>) -> Self {
        CoreError::InvalidArgument {
            argument: argument.into(),
            reason: reason.into(),
        }
    }

    /// The error for a thread that ended in a panic, with the panic's message when it has one.
    pub fn panic(thread: impl Into<String>, payload: &(dyn std::any::Any + Send)) -> Self {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "no message".into());
        CoreError::Panic {
            thread: thread.into(),
            message,
        }
    }

    /// Shorthand for a bad sample or source.
    pub fn data(location: Location, reason: impl Into<String>) -> Self {
        CoreError::Data {
            location,
            reason: reason.into(),
        }
    }
}

pub type Result<T, E = CoreError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_argument_and_the_place() {
        let e = CoreError::invalid("alpha", "must lie in [0, 1), got 1.5");
        assert_eq!(
            e.to_string(),
            "invalid `alpha`: must lie in [0, 1), got 1.5"
        );

        let loc = Location {
            source: "train-000001.tar".into(),
            member: Some("123.jpg".into()),
            index: Some(7),
        };
        let e = CoreError::data(loc, "truncated JPEG");
        assert_eq!(
            e.to_string(),
            "bad data in train-000001.tar, member 123.jpg, sample 7: truncated JPEG"
        );
    }
}
