//! The roles each route needs, read from the service's OpenAPI document: an
//! operation declares `security(("bearer" = ["writer"]))` next to its other
//! annotations, the document shows it to clients, and this turns it into
//! the rule the gate applies. A documented operation that declares no
//! role stops the service at start, so a new route cannot be forgotten.
//! Routes outside the document (`/cache/stats`) need `admin`, except the
//! configured public paths (health, metrics, the OpenAPI document); a path
//! that is no route at all needs any credential (to learn it is a 404).

use foldhash::{HashMap, HashMapExt, HashSet};

use axum::http::Method;
use utoipa::openapi::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

use super::{Role, Roles};

/// The name of the security scheme in the OpenAPI documents.
pub const SCHEME: &str = "bearer";

/// What a request to a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Required {
    /// Nothing: a public path.
    Nothing,
    /// A credential with one of these roles.
    OneOf(Roles),
}

/// The rule of every route.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    /// By route template, then method (looked up without allocating).
    operations: HashMap<String, Vec<(Method, Roles)>>,
    public: HashSet<String>,
}

impl Rules {
    /// Reads the rules from `doc`; fails naming every operation without a role.
    pub fn from_openapi(doc: &OpenApi, public_paths: &str) -> anyhow::Result<Self> {
        let doc = serde_json::to_value(doc)?;
        let mut operations: HashMap<String, Vec<(Method, Roles)>> = HashMap::new();
        let mut undeclared = Vec::new();
        for (path, item) in doc["paths"].as_object().into_iter().flatten() {
            for (method, operation) in item.as_object().into_iter().flatten() {
                let Ok(method) = method.to_uppercase().parse::<Method>() else { continue };
                let roles: Roles = operation["security"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|requirement| requirement[SCHEME].as_array())
                    .flatten()
                    .filter_map(|name| name.as_str())
                    .map(Role::parse)
                    .collect::<Result<Vec<_>, _>>()?
                    .into_iter()
                    .collect();
                if roles.is_empty() {
                    undeclared.push(format!("{method} {path}"));
                }
                operations.entry(path.clone()).or_default().push((method, roles));
            }
        }
        anyhow::ensure!(undeclared.is_empty(), "operations without a role in their OpenAPI security: {}", undeclared.join(", "));
        let public = public_paths.split(',').map(str::trim).filter(|p| !p.is_empty()).map(str::to_owned).collect();
        Ok(Self { operations, public })
    }

    /// What a request needs: `route` is its route template (`None` when no
    /// route matched), `path` the path it asked for.
    pub fn required(&self, method: &Method, route: Option<&str>, path: &str) -> Required {
        if self.public.contains(path) {
            return Required::Nothing;
        }
        // No route: any credential may learn that there is none (404).
        let Some(route) = route else { return Required::OneOf(Role::ALL.into_iter().collect()) };
        // A HEAD is answered by the GET route.
        let method = if method == Method::HEAD { &Method::GET } else { method };
        let any = || Role::ALL.into_iter().collect();
        match self.operations.get(route) {
            Some(operations) => match operations.iter().find(|(m, _)| m == method) {
                Some((_, roles)) => Required::OneOf(*roles),
                // A method the route does not have: any credential may learn that (405).
                None => Required::OneOf(any()),
            },
            None => Required::OneOf([Role::Admin].into_iter().collect()),
        }
    }
}

/// Declares the bearer scheme in `doc` (API keys and identity-provider
/// tokens are both sent as `Authorization: Bearer`) and the answers every
/// secured operation can give for it: 401, 403 and 429.
pub fn declare(doc: &mut OpenApi) {
    use utoipa::openapi::{ContentBuilder, RefOr, ResponseBuilder};
    let problem = |description: &str| {
        RefOr::T(ResponseBuilder::new().description(description).content("application/problem+json", ContentBuilder::new().build()).build())
    };
    for item in doc.paths.paths.values_mut() {
        let operations = [&mut item.get, &mut item.put, &mut item.post, &mut item.delete, &mut item.patch];
        for operation in operations.into_iter().flatten().filter(|o| o.security.is_some()) {
            let responses = &mut operation.responses.responses;
            responses.entry("401".into()).or_insert_with(|| problem("No credential, or one that is unknown, revoked or expired (with `WWW-Authenticate`)"));
            responses.entry("403".into()).or_insert_with(|| problem("The credential lacks the role (`required_roles`) or the warehouse"));
            responses.entry("429".into()).or_insert_with(|| problem("The principal's rate limit is reached (with `Retry-After`)"));
        }
    }
    let scheme = HttpBuilder::new()
        .scheme(HttpAuthScheme::Bearer)
        .description(Some(
            "An API key (`erp_<id>_<secret>`, from `command-service keys create`) or a JWT of the configured identity \
             provider. Each operation lists the roles that may call it; a credential needs one of them.",
        ))
        .build();
    doc.components.get_or_insert_with(Default::default).add_security_scheme(SCHEME, SecurityScheme::Http(scheme));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(security: serde_json::Value) -> OpenApi {
        serde_json::from_value(serde_json::json!({
            "openapi": "3.1.0",
            "info": { "title": "t", "version": "1" },
            "paths": { "/stock/{article}": { "get": { "responses": {}, "security": security } } }
        }))
        .unwrap()
    }

    #[test]
    fn every_operation_needs_a_declared_role_and_others_need_admin() {
        let rules = Rules::from_openapi(&doc(serde_json::json!([{ "bearer": ["reader"] }, { "bearer": ["analyst"] }])), "/metrics").unwrap();
        let reader_or_analyst: Roles = [Role::Reader, Role::Analyst].into_iter().collect();
        assert_eq!(rules.required(&Method::GET, Some("/stock/{article}"), "/stock/A"), Required::OneOf(reader_or_analyst));
        assert_eq!(rules.required(&Method::HEAD, Some("/stock/{article}"), "/stock/A"), Required::OneOf(reader_or_analyst));
        assert_eq!(rules.required(&Method::GET, None, "/metrics"), Required::Nothing);
        assert_eq!(rules.required(&Method::GET, None, "/nowhere"), Required::OneOf(Role::ALL.into_iter().collect()));
        let admin = Required::OneOf([Role::Admin].into_iter().collect());
        assert_eq!(rules.required(&Method::GET, Some("/cache/stats"), "/cache/stats"), admin);
        let any = Required::OneOf(Role::ALL.into_iter().collect());
        assert_eq!(rules.required(&Method::DELETE, Some("/stock/{article}"), "/stock/A"), any);
        let error = Rules::from_openapi(&doc(serde_json::json!([])), "").unwrap_err().to_string();
        assert!(error.contains("GET /stock/{article}"), "{error}");
        assert!(Rules::from_openapi(&doc(serde_json::json!([{ "bearer": ["root"] }])), "").is_err());
    }
}
