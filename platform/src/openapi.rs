//! OpenAPI documents that state exactly what a service accepts: a parameter
//! or body field that holds a domain value gets the JSON Schema the value's
//! type states ([`schemars::JsonSchema`], kept next to its `parse` in the
//! `events` crate and checked against it there), so that a request valid by
//! the document is never refused as malformed and an invalid one always is.

use schemars::JsonSchema;
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::Schema;
use utoipa::openapi::{OpenApi, RefOr, Required};

/// The JSON Schema `T` states, inlined, as an OpenAPI 3.1 schema.
pub fn domain<T: JsonSchema>() -> Schema {
    let generator = schemars::generate::SchemaSettings::draft2020_12().with(|s| s.inline_subschemas = true).into_generator();
    let mut schema = serde_json::to_value(generator.into_root_schema_for::<T>()).expect("a schema serialises");
    if let Some(object) = schema.as_object_mut() {
        object.remove("$schema");
        object.remove("title");
    }
    serde_json::from_value(schema).expect("a JSON Schema of a domain type is an OpenAPI 3.1 schema")
}

/// [`domain`] for an optional body field: the value, or `null`.
pub fn nullable<T: JsonSchema>() -> Schema {
    domain::<Option<T>>()
}

/// A parameter holding a `T`.
pub fn parameter<T: JsonSchema>(name: &str, location: ParameterIn, required: bool, description: &str) -> Parameter {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(location)
        .required(if required { Required::True } else { Required::False })
        .description(Some(description))
        .schema(Some(domain::<T>()))
        .build()
}

/// Sets the `maximum` of every parameter named `name` (a limit that is a
/// setting, known only at run time).
pub fn set_maximum(openapi: &mut OpenApi, name: &str, maximum: u64) {
    for item in openapi.paths.paths.values_mut() {
        let operations = [&mut item.get, &mut item.put, &mut item.post, &mut item.delete, &mut item.patch];
        for operation in operations.into_iter().flatten() {
            for parameter in operation.parameters.iter_mut().flatten() {
                if let RefOr::T(parameter) = parameter
                    && parameter.name == name
                    && let Some(RefOr::T(Schema::Object(object))) = parameter.schema.as_mut()
                {
                    object.maximum = Some(utoipa::Number::UInt(maximum as usize));
                }
            }
        }
    }
}

/// Declares a unit struct that documents a list of parameters, each holding a
/// value of a type with a JSON Schema, for `#[utoipa::path(params(...))]`:
///
/// ```ignore
/// platform::parameters!(ArticlePath { "article": events::ArticleId, Path, required, "Article id" });
/// ```
#[macro_export]
macro_rules! parameters {
    ($(#[$doc:meta])* $name:ident { $($param:literal: $ty:ty, $location:ident, $required:ident, $description:literal);+ $(;)? }) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub struct $name;

        impl utoipa::IntoParams for $name {
            fn into_params(
                _: impl Fn() -> Option<utoipa::openapi::path::ParameterIn>,
            ) -> Vec<utoipa::openapi::path::Parameter> {
                vec![$(
                    $crate::openapi::parameter::<$ty>(
                        $param,
                        utoipa::openapi::path::ParameterIn::$location,
                        $crate::parameters!(@required $required),
                        $description,
                    )
                ),+]
            }
        }
    };
    (@required required) => { true };
    (@required optional) => { false };
}
