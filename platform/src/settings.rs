//! Typed settings: each service defines one tree of structs whose `Default` works
//! on a developer machine; any leaf can be overridden from the environment as
//! `APP_<SECTION>__<FIELD>`, e.g. `APP_DATABASE__URL` or `APP_HTTP__PORT`.

use config::{Config, ConfigError, Environment};
use serde::{Serialize, de::DeserializeOwned};

/// Prefix of every environment variable the services read.
pub const ENV_PREFIX: &str = "APP";

/// Loads `T` from its defaults overlaid with `APP_*` environment variables.
/// Any setting can instead be read from a file named by the same variable
/// with `_FILE` appended (`APP_DATABASE__URL_FILE=/run/secrets/db-url`), as
/// compose and Kubernetes provide secrets; a trailing newline is dropped.
pub fn load<T: DeserializeOwned + Serialize + Default>() -> Result<T, ConfigError> {
    let mut builder = Config::builder().add_source(Config::try_from(&T::default())?).add_source(
        Environment::with_prefix(ENV_PREFIX)
            .prefix_separator("_")
            .separator("__")
            .try_parsing(true),
    );
    for (name, path) in secret_files::<T>() {
        let text = std::fs::read_to_string(&path).map_err(|e| ConfigError::Message(format!("{name}_FILE: cannot read {path}: {e}")))?;
        builder = builder.set_override(config_key(&name), text.trim_end_matches(['\n', '\r']).to_owned())?;
    }
    builder.build()?.try_deserialize()
}

/// `(APP_X__Y, path)` for every `APP_X__Y_FILE` in the environment that names a setting of `T`.
fn secret_files<T: Serialize + Default>() -> Vec<(String, String)> {
    let known = env_names::<T>();
    std::env::vars()
        .filter_map(|(k, v)| Some((k.strip_suffix("_FILE")?.to_owned(), v)))
        .filter(|(k, _)| known.contains(k))
        .collect()
}

/// The config key of an environment variable: `APP_AUTH__JWT__ISSUER` → `auth.jwt.issuer`.
fn config_key(name: &str) -> String {
    name.trim_start_matches(ENV_PREFIX).trim_start_matches('_').split("__").map(str::to_lowercase).collect::<Vec<_>>().join(".")
}

/// What every binary does first: loads its settings `T`, installs logging
/// with the part of them `log` picks (an admin command, which prints its
/// results on standard output, logs warnings only), and warns of every
/// `APP_*` variable that is no setting of `T` (usually a typo).
pub fn start<T: DeserializeOwned + Serialize + Default>(
    log: impl Fn(&T) -> &crate::telemetry::LogSettings,
    admin: bool,
) -> Result<T, ConfigError> {
    let settings: T = load()?;
    let mut logging = log(&settings).clone();
    if admin {
        logging.filter = "warn".into();
    }
    crate::telemetry::init(&logging);
    for name in unknown_env_vars::<T>() {
        tracing::warn!(%name, "environment variable is not a setting of this service");
    }
    Ok(settings)
}

/// Every environment variable name that sets a leaf of `T`, e.g. `APP_HTTP__PORT`.
pub fn env_names<T: Serialize + Default>() -> Vec<String> {
    let tree = serde_json::to_value(T::default()).expect("settings serialise to JSON");
    let mut names = Vec::new();
    collect(&tree, ENV_PREFIX.to_owned(), "_", &mut names);
    names.sort();
    names
}

fn collect(value: &serde_json::Value, prefix: String, sep: &str, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, child) in map {
                collect(child, format!("{prefix}{sep}{}", key.to_uppercase()), "__", out);
            }
        }
        _ => out.push(prefix),
    }
}

/// `APP_*` variables in the environment that no leaf of `T` reads: usually a typo.
pub fn unknown_env_vars<T: Serialize + Default>() -> Vec<String> {
    let known = env_names::<T>();
    std::env::vars()
        .map(|(k, _)| k)
        .filter(|k| k.starts_with(&format!("{ENV_PREFIX}_")) && !known.contains(k))
        .filter(|k| !k.strip_suffix("_FILE").is_some_and(|stem| known.iter().any(|n| n == stem)))
        .collect()
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct Inner {
        port: u16,
        host: String,
    }

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct Tree {
        http: Inner,
        name: String,
    }

    impl Default for Tree {
        fn default() -> Self {
            Tree { http: Inner { port: 80, host: "localhost".into() }, name: "x".into() }
        }
    }

    #[test]
    fn env_names_follow_the_tree() {
        assert_eq!(env_names::<Tree>(), vec!["APP_HTTP__HOST", "APP_HTTP__PORT", "APP_NAME"]);
        assert_eq!(config_key("APP_HTTP__HOST"), "http.host");
    }
}
