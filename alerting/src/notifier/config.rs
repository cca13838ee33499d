//! The `alerting:` section of the config, in Prometheus's shape
//! (`alertmanagers` with `static_configs`, `scheme`, `path_prefix`,
//! `timeout`, `basic_auth`, `authorization`/`bearer_token`).

use std::time::Duration;

use base64::Engine as _;
use serde::Deserialize;

/// `alerting:`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertingConfig {
    #[serde(default)]
    pub alertmanagers: Vec<AlertmanagerYaml>,
}

/// One entry of `alertmanagers:` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertmanagerYaml {
    /// `http` (default) or `https` (not supported by this client yet).
    #[serde(default)]
    pub scheme: Option<String>,
    #[serde(default)]
    pub path_prefix: String,
    /// Default `10s`.
    #[serde(default)]
    pub timeout: Option<String>,
    /// Only `v2` is supported (Prometheus 2.42's default).
    #[serde(default)]
    pub api_version: Option<String>,
    #[serde(default)]
    pub basic_auth: Option<BasicAuth>,
    #[serde(default)]
    pub authorization: Option<Authorization>,
    #[serde(default)]
    pub bearer_token: Option<String>,
    #[serde(default)]
    pub static_configs: Vec<StaticConfig>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    pub username: String,
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub password_file: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Authorization {
    /// Default `Bearer`.
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub credentials: Option<String>,
    #[serde(default)]
    pub credentials_file: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticConfig {
    #[serde(default)]
    pub targets: Vec<String>,
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
}

/// One resolved Alertmanager to send to.
#[derive(Debug, Clone)]
pub struct AlertmanagerConfig {
    /// `http://host:port/prefix` without a trailing slash.
    pub base_url: String,
    pub timeout: Duration,
    pub basic_auth: Option<BasicAuth>,
    pub authorization: Option<Authorization>,
}

impl AlertmanagerConfig {
    /// A plain Alertmanager at `base_url` (tests, flags).
    pub fn new(base_url: impl Into<String>) -> Self {
        AlertmanagerConfig {
            base_url: base_url.into().trim_end_matches('/').to_string(),
            timeout: Duration::from_secs(10),
            basic_auth: None,
            authorization: None,
        }
    }

    pub fn alerts_url(&self) -> String {
        format!("{}/api/v2/alerts", self.base_url)
    }

    /// The `Authorization` header, reading credential files now so a
    /// rotated secret is picked up.
    pub(crate) fn authorization_header(&self) -> Result<Option<String>, String> {
        if let Some(b) = &self.basic_auth {
            let pw = match (&b.password, &b.password_file) {
                (Some(p), _) => p.clone(),
                (None, Some(f)) => std::fs::read_to_string(f)
                    .map_err(|e| format!("reading password_file {f}: {e}"))?
                    .trim_end()
                    .to_string(),
                (None, None) => String::new(),
            };
            let enc =
                base64::engine::general_purpose::STANDARD.encode(format!("{}:{pw}", b.username));
            return Ok(Some(format!("Basic {enc}")));
        }
        if let Some(a) = &self.authorization {
            let cred = match (&a.credentials, &a.credentials_file) {
                (Some(c), _) => c.clone(),
                (None, Some(f)) => std::fs::read_to_string(f)
                    .map_err(|e| format!("reading credentials_file {f}: {e}"))?
                    .trim_end()
                    .to_string(),
                (None, None) => String::new(),
            };
            let kind = a.kind.clone().unwrap_or_else(|| "Bearer".into());
            return Ok(Some(format!("{kind} {cred}")));
        }
        Ok(None)
    }
}

impl AlertingConfig {
    /// Every target of every `static_configs` entry, resolved.
    pub fn resolve(&self) -> Result<Vec<AlertmanagerConfig>, String> {
        let mut out = Vec::new();
        for am in &self.alertmanagers {
            let scheme = am.scheme.clone().unwrap_or_else(|| "http".into());
            if scheme != "http" {
                return Err(format!(
                    "alertmanager scheme {scheme:?} is not supported (only http)"
                ));
            }
            if let Some(v) = &am.api_version {
                if v != "v2" {
                    return Err(format!(
                        "alertmanager api_version {v:?} is not supported (only v2)"
                    ));
                }
            }
            let timeout = match &am.timeout {
                None => Duration::from_secs(10),
                Some(t) => Duration::from_millis(crate::rules::parse_duration_ms(t)?.max(1) as u64),
            };
            if am.basic_auth.is_some() && (am.authorization.is_some() || am.bearer_token.is_some())
            {
                return Err(
                    "at most one of basic_auth, authorization and bearer_token may be set".into(),
                );
            }
            let authorization = am.authorization.clone().or_else(|| {
                am.bearer_token.clone().map(|t| Authorization {
                    kind: None,
                    credentials: Some(t),
                    credentials_file: None,
                })
            });
            let prefix = am.path_prefix.trim_end_matches('/');
            let prefix = if prefix.is_empty() || prefix.starts_with('/') {
                prefix.to_string()
            } else {
                format!("/{prefix}")
            };
            for sc in &am.static_configs {
                for t in &sc.targets {
                    out.push(AlertmanagerConfig {
                        base_url: format!("{scheme}://{t}{prefix}"),
                        timeout,
                        basic_auth: am.basic_auth.clone(),
                        authorization: authorization.clone(),
                    });
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_targets_prefix_and_auth() {
        let y = "alertmanagers:\n  - path_prefix: am/\n    timeout: 5s\n    basic_auth:\n      username: u\n      password: p\n    static_configs:\n      - targets: ['a:9093', 'b:9093']\n  - bearer_token: tok\n    static_configs:\n      - targets: ['c:9093']\n";
        let c: AlertingConfig = serde_yaml::from_str(y).unwrap();
        let r = c.resolve().unwrap();
        assert_eq!(r.len(), 3);
        assert_eq!(r[0].alerts_url(), "http://a:9093/am/api/v2/alerts");
        assert_eq!(r[0].timeout, Duration::from_secs(5));
        assert_eq!(
            r[0].authorization_header().unwrap().as_deref(),
            Some("Basic dTpw")
        );
        assert_eq!(
            r[2].authorization_header().unwrap().as_deref(),
            Some("Bearer tok")
        );
        assert!(serde_yaml::from_str::<AlertingConfig>("alertmanagers:\n  - bogus: 1\n").is_err());
    }
}
