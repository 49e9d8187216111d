//! Identifiers chosen by the clients: article ids, charge numbers, warehouse ids.
//!
//! They are short codes a warehouse worker can read ("ART-1000", "L2026-11",
//! "WH-NORTH"), validated once at the edge so the rest of the code can trust them.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest identifier accepted, in bytes.
pub const MAX_ID_LEN: usize = 64;

/// Why a string is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most {MAX_ID_LEN} characters long, got {0}")]
    TooLong(usize),
    #[error("may contain only letters, digits, '-', '_' and '.', found {0:?}")]
    BadCharacter(char),
}

fn validate(s: &str) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty);
    }
    if s.len() > MAX_ID_LEN {
        return Err(IdError::TooLong(s.len()));
    }
    match s.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))) {
        Some(c) => Err(IdError::BadCharacter(c)),
        None => Ok(()),
    }
}

macro_rules! code_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Validates `s` as an identifier.
            pub fn parse(s: impl Into<String>) -> Result<Self, IdError> {
                let s = s.into();
                validate(&s)?;
                Ok(Self(s))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                Self::parse(s)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

code_id!(
    /// An article (Artikel), e.g. `ART-1000`.
    ArticleId
);
code_id!(
    /// A charge (lot, batch) number, unique within its article, e.g. `L2026-11-07`.
    ChargeNo
);
code_id!(
    /// A warehouse or storage location (Lager), e.g. `WH-NORTH`.
    WarehouseId
);

/// The consistency boundary an event belongs to. Every event of one article
/// (its charges, stock movements and reservations) is in the stream
/// `article:{id}`, so one optimistic-concurrency check covers every rule about it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StreamId(String);

impl StreamId {
    pub fn article(id: &ArticleId) -> Self {
        Self(format!("article:{id}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Rebuilds a stream id read back from storage.
    pub fn from_stored(s: String) -> Self {
        Self(s)
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_code_with_letters_digits_and_separators_is_accepted() {
        assert_eq!(ArticleId::parse("ART-1000_a.b").unwrap().as_str(), "ART-1000_a.b");
    }

    #[test]
    fn empty_long_and_odd_codes_are_rejected_with_the_reason() {
        assert_eq!(ArticleId::parse(""), Err(IdError::Empty));
        assert_eq!(ArticleId::parse("x".repeat(65)), Err(IdError::TooLong(65)));
        assert_eq!(WarehouseId::parse("WH 1"), Err(IdError::BadCharacter(' ')));
        assert_eq!(ChargeNo::parse("L:1"), Err(IdError::BadCharacter(':')));
    }

    #[test]
    fn deserialising_validates_too() {
        assert!(serde_json::from_str::<ArticleId>("\"ok-1\"").is_ok());
        assert!(serde_json::from_str::<ArticleId>("\"not ok\"").is_err());
    }
}
