//! Exact quantities in integer base units.
//!
//! Stock is never a float: an article's unit names its smallest countable step
//! (a piece, a gram, a millilitre) and every quantity is a whole number of them.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A positive amount moved, reserved or counted, in the article's base unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "i64")]
pub struct Quantity(i64);

/// Why a number is not a valid [`Quantity`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    #[error("must be positive, got {0}")]
    NotPositive(i64),
    #[error("must not be negative, got {0}")]
    Negative(i64),
    #[error("must be at most {max}, got {got}", max = Quantity::MAX)]
    TooLarge { got: i64 },
}

impl Quantity {
    /// Largest single quantity: 10^12 base units. Balances are sums of these and
    /// stay far from `i64::MAX`.
    pub const MAX: i64 = 1_000_000_000_000;

    pub fn new(n: i64) -> Result<Self, QuantityError> {
        if n <= 0 {
            Err(QuantityError::NotPositive(n))
        } else if n > Self::MAX {
            Err(QuantityError::TooLarge { got: n })
        } else {
            Ok(Self(n))
        }
    }

    pub fn get(self) -> i64 {
        self.0
    }
}

impl TryFrom<i64> for Quantity {
    type Error = QuantityError;
    fn try_from(n: i64) -> Result<Self, QuantityError> {
        Self::new(n)
    }
}

impl From<Quantity> for i64 {
    fn from(q: Quantity) -> i64 {
        q.0
    }
}

impl schemars::JsonSchema for Quantity {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Quantity".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "type": "integer", "minimum": 1, "maximum": Quantity::MAX })
    }
}

/// A counted quantity: like [`Quantity`] but zero is allowed (an empty bin).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "i64")]
pub struct Counted(i64);

impl Counted {
    pub fn new(n: i64) -> Result<Self, QuantityError> {
        if n < 0 {
            Err(QuantityError::Negative(n))
        } else if n > Quantity::MAX {
            Err(QuantityError::TooLarge { got: n })
        } else {
            Ok(Self(n))
        }
    }

    pub fn get(self) -> i64 {
        self.0
    }
}

impl TryFrom<i64> for Counted {
    type Error = QuantityError;
    fn try_from(n: i64) -> Result<Self, QuantityError> {
        Self::new(n)
    }
}

impl From<Counted> for i64 {
    fn from(c: Counted) -> i64 {
        c.0
    }
}

impl schemars::JsonSchema for Counted {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Counted".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "type": "integer", "minimum": 0, "maximum": Quantity::MAX })
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_are_positive_and_bounded() {
        assert_eq!(Quantity::new(1).unwrap().get(), 1);
        assert_eq!(Quantity::new(Quantity::MAX).unwrap().get(), Quantity::MAX);
        assert_eq!(Quantity::new(0), Err(QuantityError::NotPositive(0)));
        assert_eq!(Quantity::new(-5), Err(QuantityError::NotPositive(-5)));
        assert_eq!(
            Quantity::new(Quantity::MAX + 1),
            Err(QuantityError::TooLarge { got: Quantity::MAX + 1 })
        );
    }

    #[test]
    fn a_fractional_json_number_is_not_a_quantity() {
        assert!(serde_json::from_str::<Quantity>("1.5").is_err());
        assert!(serde_json::from_str::<Quantity>("0").is_err());
        assert_eq!(serde_json::from_str::<Quantity>("7").unwrap().get(), 7);
    }
}
