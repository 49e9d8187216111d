//! Small value types of the domain: units, quality status, measurements.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// An article's unit of measure. Quantities of the article are whole numbers
/// of its base unit, `10^-decimals` of the unit: `{"code":"kg","decimals":3}`
/// counts grams, `{"code":"pcs","decimals":0}` counts pieces.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Unit {
    /// e.g. `pcs`, `kg`, `l`.
    pub code: UnitCode,
    /// Decimal places of a quantity in this unit (0 to 6).
    #[schemars(range(max = 6))]
    pub decimals: u8,
}

/// Why a unit is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    #[error("code must be 1 to 16 letters, got {0:?}")]
    BadCode(String),
    #[error("decimals must be between 0 and 6, got {0}")]
    TooManyDecimals(u8),
}

impl Unit {
    pub fn new(code: &str, decimals: u8) -> Result<Self, UnitError> {
        if decimals > 6 {
            return Err(UnitError::TooManyDecimals(decimals));
        }
        Ok(Self { code: UnitCode::parse(code)?, decimals })
    }
}

/// The short code of a unit: 1 to 16 ASCII letters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct UnitCode(String);

impl UnitCode {
    pub fn parse(s: &str) -> Result<Self, UnitError> {
        if (1..=16).contains(&s.len()) && s.chars().all(|c| c.is_ascii_alphabetic()) {
            Ok(Self(s.to_owned()))
        } else {
            Err(UnitError::BadCode(s.to_owned()))
        }
    }
}

impl TryFrom<String> for UnitCode {
    type Error = UnitError;
    fn try_from(s: String) -> Result<Self, UnitError> {
        Self::parse(&s)
    }
}

impl From<UnitCode> for String {
    fn from(c: UnitCode) -> String {
        c.0
    }
}

impl JsonSchema for UnitCode {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "UnitCode".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "type": "string", "pattern": "^[A-Za-z]{1,16}$" })
    }
}

/// Outcome of the quality checks of a charge: `pending` (not yet
/// analysed), `approved` or `rejected`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum QualityStatus {
    // No doc comments on the variants: the JSON Schema stays a plain enum.
    Pending,
    Approved,
    Rejected,
}

/// One named result of a quality analysis, e.g. moisture 12.5 %.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Measurement {
    pub name: crate::Text,
    pub value: DecimalValue,
    /// Unit of the value, e.g. `%` or `mg/kg`; free text.
    pub unit: Option<crate::Text>,
}

/// An exact decimal number as text, e.g. `"12.50"` or `"-3"`: measurement
/// values keep the digits the laboratory reported, never a float.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DecimalValue(String);

/// Why a string is not a decimal number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("must be a decimal number such as 12.5 or -3, got {0:?}")]
pub struct DecimalError(String);

impl DecimalValue {
    pub fn parse(s: &str) -> Result<Self, DecimalError> {
        let digits = s.strip_prefix('-').unwrap_or(s);
        let (int, frac) = digits.split_once('.').unwrap_or((digits, "0"));
        let all_digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
        if all_digits(int) && all_digits(frac) && int.len() <= 18 && frac.len() <= 9 {
            Ok(Self(s.to_owned()))
        } else {
            Err(DecimalError(s.to_owned()))
        }
    }
}

impl TryFrom<String> for DecimalValue {
    type Error = DecimalError;
    fn try_from(s: String) -> Result<Self, DecimalError> {
        Self::parse(&s)
    }
}

impl From<DecimalValue> for String {
    fn from(d: DecimalValue) -> String {
        d.0
    }
}

impl fmt::Display for DecimalValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl JsonSchema for DecimalValue {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "DecimalValue".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "type": "string", "pattern": "^-?[0-9]{1,18}(\\.[0-9]{1,9})?$" })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_values_are_exact_text() {
        assert!(DecimalValue::parse("12.50").is_ok());
        assert!(DecimalValue::parse("-3").is_ok());
        for bad in ["", "1.", ".5", "1e3", "abc", "--1", "1.2.3"] {
            assert!(DecimalValue::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn units_have_a_letter_code_and_at_most_six_decimals() {
        assert!(Unit::new("kg", 3).is_ok());
        assert_eq!(Unit::new("kg", 7), Err(UnitError::TooManyDecimals(7)));
        assert!(matches!(Unit::new("k g", 0), Err(UnitError::BadCode(_))));
    }
}
