//! The web configuration file in Prometheus's `--web.config.file` format:
//! TLS for the HTTP server and basic-auth users with bcrypt hashes.
//!
//! Owns: the schema and its checks (files readable, hashes well formed).
//! Must not: hold sockets or verify passwords (the HTTP layer does that).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_yaml::Value;

use super::{yaml_error, ConfigError};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebConfig {
    #[serde(default)]
    pub tls_server_config: Option<TlsServerConfig>,
    #[serde(default)]
    pub http_server_config: Option<HttpServerConfig>,
    /// user name → bcrypt hash.
    #[serde(default)]
    pub basic_auth_users: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsServerConfig {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// `NoClientCert` (default), `RequestClientCert`, `RequireAnyClientCert`,
    /// `VerifyClientCertIfGiven`, `RequireAndVerifyClientCert`.
    #[serde(default)]
    pub client_auth_type: Option<String>,
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
    /// `TLS12` (default) or `TLS13`.
    #[serde(default)]
    pub min_version: Option<String>,
    #[serde(default)]
    pub max_version: Option<String>,
    /// Accepted and ignored: rustls's suites and curves are all modern.
    #[serde(default)]
    pub cipher_suites: Option<Value>,
    #[serde(default)]
    pub curve_preferences: Option<Value>,
    #[serde(default)]
    pub prefer_server_cipher_suites: Option<bool>,
    #[serde(default)]
    pub client_allowed_sans: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpServerConfig {
    /// HTTP/2 is not served; `true` is accepted and logged.
    #[serde(default)]
    pub http2: Option<bool>,
    /// Extra response headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

impl WebConfig {
    /// Loads and checks a web config file. Relative certificate paths are
    /// resolved against the file's directory, as Prometheus does.
    pub fn load(path: &Path) -> Result<WebConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut cfg = if text.trim().is_empty() {
            WebConfig::default()
        } else {
            let de = serde_yaml::Deserializer::from_str(&text);
            serde_path_to_error::deserialize::<_, WebConfig>(de).map_err(|e| yaml_error(path, e))?
        };
        let semantic = |msg: String| ConfigError::Semantic {
            path: path.to_path_buf(),
            msg,
        };
        let base = path.parent().unwrap_or(Path::new("."));
        if let Some(tls) = &mut cfg.tls_server_config {
            for p in [&mut tls.cert_file, &mut tls.key_file] {
                if p.as_os_str().is_empty() {
                    return Err(semantic(
                        "tls_server_config: cert_file and key_file are required".into(),
                    ));
                }
                if p.is_relative() {
                    *p = base.join(&*p);
                }
            }
            if let Some(ca) = &mut tls.client_ca_file {
                if ca.is_relative() {
                    *ca = base.join(&*ca);
                }
            }
            let auth = tls.client_auth_type.as_deref().unwrap_or("NoClientCert");
            const AUTH_TYPES: [&str; 5] = [
                "NoClientCert",
                "RequestClientCert",
                "RequireAnyClientCert",
                "VerifyClientCertIfGiven",
                "RequireAndVerifyClientCert",
            ];
            if !AUTH_TYPES.contains(&auth) {
                return Err(semantic(format!(
                    "tls_server_config.client_auth_type: invalid value {auth:?}"
                )));
            }
            if auth.contains("Verify") && tls.client_ca_file.is_none() {
                return Err(semantic(format!(
                    "tls_server_config: client_auth_type {auth} needs client_ca_file"
                )));
            }
            for v in [&tls.min_version, &tls.max_version].into_iter().flatten() {
                if !matches!(v.as_str(), "TLS10" | "TLS11" | "TLS12" | "TLS13") {
                    return Err(semantic(format!(
                        "tls_server_config: unknown TLS version {v:?}"
                    )));
                }
            }
        }
        for (user, hash) in &cfg.basic_auth_users {
            if hash.parse::<bcrypt::HashParts>().is_err() {
                return Err(semantic(format!(
                    "basic_auth_users: the password hash of user {user:?} is not a bcrypt hash"
                )));
            }
        }
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn loads_users_and_resolves_paths() {
        let dir = tempfile::tempdir().unwrap();
        let hash = bcrypt::hash("pw", 4).unwrap();
        let p = write(
            dir.path(),
            "web.yml",
            &format!(
                "tls_server_config:\n  cert_file: c.pem\n  key_file: k.pem\nbasic_auth_users:\n  alice: {hash}\n"
            ),
        );
        let c = WebConfig::load(&p).unwrap();
        assert_eq!(
            c.tls_server_config.unwrap().cert_file,
            dir.path().join("c.pem")
        );
        assert!(c.basic_auth_users.contains_key("alice"));
    }

    #[test]
    fn rejects_plaintext_passwords_and_unknown_fields() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "a.yml", "basic_auth_users:\n  bob: secret\n");
        assert!(WebConfig::load(&p).unwrap_err().to_string().contains("bob"));
        let p = write(dir.path(), "b.yml", "basic_auth_user:\n  bob: x\n");
        let e = WebConfig::load(&p).unwrap_err().to_string();
        assert!(e.contains(":1:"), "{e}");
        let p = write(
            dir.path(),
            "c.yml",
            "tls_server_config:\n  cert_file: c\n  key_file: k\n  client_auth_type: RequireAndVerifyClientCert\n",
        );
        assert!(WebConfig::load(&p).is_err());
    }
}
