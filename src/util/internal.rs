//! [`Internal`]: a fault on the server's side (a disk, the engine, a bug),
//! as distinct from anything the caller did. It says what Sluice was doing
//! and keeps the error that stopped it as its `source`, so the log line of
//! a 500 carries the whole chain ([`Internal::chain`]) while the caller is
//! told only that the fault was ours.
//!
//! No cell value may reach one: faults raised while rows are evaluated are
//! mapped to generic errors before they get here (`slice::engine_error`).

use std::borrow::Cow;
use std::error::Error;
use std::fmt;

type Cause = Box<dyn Error + Send + Sync + 'static>;

/// What failed on our side, and why.
#[derive(Debug)]
pub struct Internal {
    doing: Cow<'static, str>,
    cause: Option<Cause>,
}

impl Internal {
    /// A fault with no underlying error (a broken invariant).
    pub fn new(doing: impl Into<Cow<'static, str>>) -> Self {
        Self {
            doing: doing.into(),
            cause: None,
        }
    }

    /// A fault while `doing` something, caused by `cause`.
    pub fn caused(doing: impl Into<Cow<'static, str>>, cause: impl Into<Cause>) -> Self {
        Self {
            doing: doing.into(),
            cause: Some(cause.into()),
        }
    }

    /// "doing: cause: its cause: …", for the log.
    pub fn chain(&self) -> String {
        chain(self)
    }
}

/// Any error and its sources, joined with ": ".
pub fn chain(error: &(dyn Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut next = error.source();
    while let Some(cause) = next {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        next = cause.source();
    }
    text
}

impl fmt::Display for Internal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.doing)
    }
}

impl Error for Internal {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.cause.as_deref().map(|c| c as &(dyn Error + 'static))
    }
}

/// `result.or_internal("what we were doing")`: the error becomes the
/// cause of an [`Internal`] fault.
pub trait OrInternal<T> {
    fn or_internal(self, doing: &'static str) -> Result<T, Internal>;
}

impl<T, E: Into<Cause>> OrInternal<T> for Result<T, E> {
    fn or_internal(self, doing: &'static str) -> Result<T, Internal> {
        self.map_err(|e| Internal::caused(doing, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chain_names_each_cause_in_order() {
        let io = std::io::Error::other("disk full");
        let fault = Internal::caused("writing the audit record", io);
        assert_eq!(fault.to_string(), "writing the audit record");
        assert_eq!(fault.chain(), "writing the audit record: disk full");
        assert!(fault.source().is_some());
        assert_eq!(Internal::new("an invariant").chain(), "an invariant");
    }
}
