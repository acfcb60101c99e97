//! Validation errors with the path of what was wrong.
//!
//! Paths are written the way a user reads their document: `transformations[2].condition.operator`,
//! `source.config.format`, `error_handling.dead_letter`. The whole document is checked and
//! every problem collected, so one `dagg validate` shows all of them.

use std::fmt;

use serde::Serialize;

/// One problem in a pipeline document.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SpecError {
    /// Where: `transformations[2].condition.operator`; empty for the document itself.
    pub path: String,
    /// What was wrong and what was expected.
    pub message: String,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Every problem found in a document, in document order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct SpecErrors(pub Vec<SpecError>);

impl SpecErrors {
    pub fn new() -> Self {
        SpecErrors(Vec::new())
    }

    pub fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(SpecError { path: path.into(), message: message.into() });
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = &SpecError> {
        self.0.iter()
    }

    pub fn extend(&mut self, other: SpecErrors) {
        self.0.extend(other.0);
    }

    /// `Ok(value)` when nothing was reported, else every error.
    pub fn into_result<T>(self, value: T) -> Result<T, SpecErrors> {
        if self.0.is_empty() { Ok(value) } else { Err(self) }
    }
}

impl fmt::Display for SpecErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for SpecErrors {}

/// Joins a path and a key: `join("a", "b") == "a.b"`, `join("", "b") == "b"`.
pub fn join(path: &str, key: &str) -> String {
    if path.is_empty() { key.to_string() } else { format!("{path}.{key}") }
}

/// Appends an index: `index("transformations", 2) == "transformations[2]"`.
pub fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}
