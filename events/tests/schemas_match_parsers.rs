//! The JSON Schema each validated value states (and the OpenAPI documents
//! copy) accepts exactly the strings its `parse` accepts, so that a client
//! valid by the schema is never refused and one invalid by it always is.

use events::{ArticleId, ArticleName, Category, ChargeNo, DecimalValue, ReservationId, Text, UnitCode, WarehouseId};
use proptest::prelude::*;
use schemars::JsonSchema;
use serde_json::Value;

/// Whether `s` is valid by the string schema of `T` (type, lengths in characters, pattern).
fn schema_accepts<T: JsonSchema>(s: &str) -> bool {
    let schema = serde_json::to_value(schemars::schema_for!(T)).unwrap();
    assert_eq!(schema["type"], "string");
    let chars = s.chars().count() as u64;
    let within = |key: &str, ok: fn(u64, u64) -> bool| schema.get(key).and_then(Value::as_u64).is_none_or(|n| ok(chars, n));
    let pattern = schema.get("pattern").and_then(Value::as_str).map(|p| regex::Regex::new(p).unwrap());
    within("minLength", |c, n| c >= n) && within("maxLength", |c, n| c <= n) && pattern.is_none_or(|p| p.is_match(s))
}

/// Strings made of the characters the rules care about: letters, digits,
/// separators, ASCII and Unicode spaces, control characters, others.
fn strings(max: usize) -> impl Strategy<Value = String> {
    let chars = prop_oneof![
        4 => prop::char::range('a', 'z'),
        2 => prop::char::range('0', '9'),
        2 => prop::sample::select(vec!['-', '_', '.', ' ', ':', '/', 'Ä']),
        1 => prop::sample::select(vec!['\t', '\n', '\u{0}', '\u{7}', '\u{1f}', '\u{7f}', '\u{85}', '\u{9f}']),
        1 => prop::sample::select(vec!['\u{a0}', '\u{1680}', '\u{2000}', '\u{200a}', '\u{2028}', '\u{202f}', '\u{205f}', '\u{3000}', '\u{feff}', '\u{180e}']),
    ];
    prop::collection::vec(chars, 0..max).prop_map(|cs| cs.into_iter().collect())
}

fn decimals() -> impl Strategy<Value = String> {
    prop_oneof![
        "-?[0-9]{0,20}(\\.[0-9]{0,11})?",
        strings(12),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn identifiers(s in strings(70)) {
        prop_assert_eq!(ArticleId::parse(s.clone()).is_ok(), schema_accepts::<ArticleId>(&s), "{:?}", s);
        prop_assert_eq!(ChargeNo::parse(s.clone()).is_ok(), schema_accepts::<ChargeNo>(&s), "{:?}", s);
        prop_assert_eq!(WarehouseId::parse(s.clone()).is_ok(), schema_accepts::<WarehouseId>(&s), "{:?}", s);
        prop_assert_eq!(ReservationId::parse(s.clone()).is_ok(), schema_accepts::<ReservationId>(&s), "{:?}", s);
    }

    #[test]
    fn free_text(s in prop_oneof![strings(8), strings(205)]) {
        prop_assert_eq!(Text::parse(s.clone()).is_ok(), schema_accepts::<Text>(&s), "{:?}", s);
        prop_assert_eq!(ArticleName::parse(s.clone()).is_ok(), schema_accepts::<ArticleName>(&s), "{:?}", s);
        prop_assert_eq!(Category::parse(s.clone()).is_ok(), schema_accepts::<Category>(&s), "{:?}", s);
    }

    #[test]
    fn unit_codes(s in strings(20)) {
        prop_assert_eq!(UnitCode::parse(&s).is_ok(), schema_accepts::<UnitCode>(&s), "{:?}", s);
    }

    #[test]
    fn decimal_values(s in decimals()) {
        prop_assert_eq!(DecimalValue::parse(&s).is_ok(), schema_accepts::<DecimalValue>(&s), "{:?}", s);
    }
}
