//! `config_json` → [`bonghwa_core::Config`].
//!
//! The keys mirror the CLI flags (see ffi/README.md): `name`, `listen`, `bootstrap`, `mdns`,
//! `passphrase`.
//! Every key is optional; an unknown key is an error so that a typo (`"mDNS"`) is not
//! silently ignored on a phone where nobody reads the logs.

#![forbid(unsafe_code)]

use std::path::PathBuf;

use bonghwa_core::{Config, Multiaddr};
use serde::Deserialize;

use crate::error::FfiError;

/// The JSON object a shell passes to `bh_node_open`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigJson {
    /// Display name to set at start (kept for later starts).
    name: Option<String>,
    /// Listen multiaddrs; absent or empty means TCP and QUIC on all interfaces, port 0.
    listen: Option<Vec<String>>,
    /// Peers to dial at start (relays, friends).
    bootstrap: Option<Vec<String>>,
    /// Find peers on the LAN with mDNS (on by default).
    mdns: Option<bool>,
    /// Encrypts the identity key and session state at rest (Argon2id). An app keeps it in
    /// the platform's keystore (Android Keystore, iOS Keychain) and passes it here.
    passphrase: Option<String>,
}

/// Builds the node config for `data_dir` from `config_json` (`None` means the defaults).
pub(crate) fn parse(data_dir: &str, config_json: Option<&str>) -> Result<Config, FfiError> {
    if data_dir.is_empty() {
        return Err(FfiError::Config(
            "data_dir is empty; pass the app's private files directory".to_owned(),
        ));
    }
    let json: ConfigJson = match config_json {
        None => ConfigJson::default(),
        Some(text) => {
            let expected =
                "expected an object with any of the keys name, listen, bootstrap, mdns, passphrase";
            // Through `Value` first: serde would also accept a struct written as an array.
            let value: serde_json::Value = serde_json::from_str(text)
                .map_err(|e| FfiError::Config(format!("invalid JSON ({e}); {expected}")))?;
            if !value.is_object() {
                return Err(FfiError::Config(format!("not an object; {expected}")));
            }
            serde_json::from_value(value)
                .map_err(|e| FfiError::Config(format!("{e}; {expected}")))?
        }
    };
    let mut config = Config::new(PathBuf::from(data_dir));
    config.name = json.name;
    config.listen = multiaddrs("listen", json.listen.unwrap_or_default())?;
    config.bootstrap = multiaddrs("bootstrap", json.bootstrap.unwrap_or_default())?;
    if let Some(mdns) = json.mdns {
        config.mdns = mdns;
    }
    if let Some(passphrase) = json.passphrase {
        if passphrase.is_empty() {
            return Err(FfiError::Config(
                "passphrase is empty; leave the key out to store keys unprotected".to_owned(),
            ));
        }
        config.passphrase = Some(bonghwa_core::node::Passphrase(passphrase));
    }
    Ok(config)
}

fn multiaddrs(key: &str, texts: Vec<String>) -> Result<Vec<Multiaddr>, FfiError> {
    texts
        .into_iter()
        .map(|text| {
            text.parse().map_err(|e| {
                FfiError::Config(format!(
                    "{key}: {text:?} is not a multiaddr ({e}); expected e.g. /ip4/0.0.0.0/tcp/0"
                ))
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_config_means_the_defaults() {
        let config = parse("/data", None).unwrap();
        let defaults = Config::new("/data");
        assert_eq!(config.data_dir, defaults.data_dir);
        assert!(config.mdns);
        assert!(config.listen.is_empty() && config.bootstrap.is_empty());
        assert!(parse("/data", Some("{}")).unwrap().mdns);
    }

    #[test]
    fn every_key_is_read() {
        let config = parse(
            "/data",
            Some(
                r#"{"name":"alice","listen":["/ip4/127.0.0.1/tcp/0"],
                    "bootstrap":["/ip4/10.0.0.1/tcp/4001"],"mdns":false}"#,
            ),
        )
        .unwrap();
        assert_eq!(config.name.as_deref(), Some("alice"));
        assert_eq!(config.listen[0].to_string(), "/ip4/127.0.0.1/tcp/0");
        assert_eq!(config.bootstrap[0].to_string(), "/ip4/10.0.0.1/tcp/4001");
        assert!(!config.mdns);
    }

    #[test]
    fn unknown_keys_bad_types_and_bad_addrs_are_errors() {
        let err = |json: &str| parse("/data", Some(json)).unwrap_err().to_string();
        assert!(err(r#"{"mDNS":false}"#).contains("unknown field `mDNS`"));
        assert!(err(r#"{"mdns":"no"}"#).contains("invalid type"));
        assert!(
            err(r#"{"listen":["nowhere"]}"#).contains("listen: \"nowhere\" is not a multiaddr")
        );
        assert!(err("[null, null, null, false]").contains("not an object"));
        assert!(err("not json").starts_with("config_json: "));
        assert!(
            parse("", None)
                .unwrap_err()
                .to_string()
                .contains("data_dir is empty")
        );
    }
}
