//! Checks that run once at start-up, naming the key at fault.

use std::path::Path;
use std::time::Duration;

use crate::acme::settings::{DeviceInventory, PermanentIdentifier};

use super::{Config, ConfigError};

impl Config {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        self.store
            .check()
            .map_err(|(key, message)| ConfigError::Invalid { key, message })?;
        if self.listen.http == self.listen.https && self.listen.http.port() != 0 {
            return Err(ConfigError::Invalid {
                key: "listen.https",
                message: format!("same address as listen.http ({})", self.listen.http),
            });
        }
        for (key, url) in [
            ("listen.public_url", &self.listen.public_url),
            ("listen.public_https_url", &self.listen.public_https_url),
            ("scep.webhook_url", &self.scep.webhook_url),
            ("events.webhook_url", &self.events.webhook_url),
        ] {
            if let Some(url) = url {
                check_url(key, url)?;
            }
        }
        if self.tls.cert.is_some() != self.tls.key.is_some() {
            return Err(ConfigError::Invalid {
                key: "tls.cert",
                message: "tls.cert and tls.key must be set together".into(),
            });
        }
        for (key, path) in [
            ("tls.cert", &self.tls.cert),
            ("tls.key", &self.tls.key),
            ("ca.passphrase_file", &self.ca.passphrase_file),
            ("ca.pkcs11_module", &self.ca.pkcs11_module),
            ("ca.pkcs11_pin_file", &self.ca.pkcs11_pin_file),
            ("store.password_file", &self.store.password_file),
        ] {
            if let Some(path) = path {
                check_file(key, path)?;
            }
        }
        for (name, profile) in &self.acme.profiles {
            let name_ok = !name.is_empty()
                && name.len() <= 32
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !name_ok {
                return Err(ConfigError::Invalid {
                    key: "acme.profiles",
                    message: format!("profile name `{name}`: use 1-32 of a-z, 0-9 and -"),
                });
            }
            if profile.challenges.is_empty() {
                return Err(ConfigError::Invalid {
                    key: "acme.profiles",
                    message: format!("profile `{name}` offers no challenge type"),
                });
            }
            if let Some(url) = &profile.terms_of_service {
                check_url("acme.profiles.terms_of_service", url)?;
            }
            if profile.attests() && profile.challenges.len() > 1 {
                return Err(ConfigError::Invalid {
                    key: "acme.profiles",
                    message: format!(
                        "profile `{name}` offers device-attest-01, which must be its only challenge"
                    ),
                });
            }
            if profile.attests() && profile.attestation_formats.is_empty() {
                return Err(ConfigError::Invalid {
                    key: "acme.profiles",
                    message: format!("profile `{name}` accepts no attestation format"),
                });
            }
            if profile.attests() && profile.attestation_key_types.is_empty() {
                return Err(ConfigError::Invalid {
                    key: "acme.profiles",
                    message: format!("profile `{name}` accepts no attested key type"),
                });
            }
            match (&profile.device_inventory, &profile.inventory_webhook_url) {
                (DeviceInventory::Webhook, None) => {
                    return Err(ConfigError::Invalid {
                        key: "acme.profiles",
                        message: format!(
                            "profile `{name}`: device_inventory = \"webhook\" needs inventory_webhook_url"
                        ),
                    });
                }
                (_, Some(url)) => check_url("acme.profiles.inventory_webhook_url", url)?,
                _ => {}
            }
            if profile.permanent_identifier == PermanentIdentifier::ClientIdentifier
                && (!profile.attests() || profile.device_inventory != DeviceInventory::Registered)
            {
                return Err(ConfigError::Invalid {
                    key: "acme.profiles",
                    message: format!(
                        "profile `{name}`: permanent_identifier = \"client-identifier\" needs device-attest-01 and device_inventory = \"registered\" (the attestation is checked against the serial number and UDID registered for the device)"
                    ),
                });
            }
            if !profile.require_attestation
                && profile.permanent_identifier != PermanentIdentifier::ClientIdentifier
            {
                return Err(ConfigError::Invalid {
                    key: "acme.profiles",
                    message: format!(
                        "profile `{name}`: require_attestation = false needs permanent_identifier = \"client-identifier\" (without an attestation, only a one-time value the MDM minted for the device can vouch for it)"
                    ),
                });
            }
        }
        for path in &self.acme.attestation_roots {
            check_file("acme.attestation_roots", path)?;
        }
        if self.issuance.lifetime < Duration::from_secs(60) {
            return Err(ConfigError::Invalid {
                key: "issuance.lifetime",
                message: "must be at least 1 minute".into(),
            });
        }
        if self.scep.webhook_timeout < Duration::from_millis(100)
            || self.scep.webhook_timeout > Duration::from_secs(60)
        {
            return Err(ConfigError::Invalid {
                key: "scep.webhook_timeout",
                message: "must be between 100ms and 60s".into(),
            });
        }
        if self.issuance.backdate > Duration::from_secs(86_400) {
            return Err(ConfigError::Invalid {
                key: "issuance.backdate",
                message: "must be at most 1 day".into(),
            });
        }
        if self
            .scep
            .challenge
            .as_ref()
            .is_some_and(|s| s.expose().is_empty())
        {
            return Err(ConfigError::Invalid {
                key: "scep.challenge",
                message: "must not be empty (omit the key to disable the static challenge)".into(),
            });
        }
        if self.events.webhook_url.is_some() && self.events.webhook_secret.is_none() {
            return Err(ConfigError::Invalid {
                key: "events.webhook_secret",
                message: "events.webhook_url needs a secret to sign deliveries with".into(),
            });
        }
        let l = &self.limits;
        for (key, value) in [
            ("limits.header_read_timeout", l.header_read_timeout),
            ("limits.idle_timeout", l.idle_timeout),
            ("limits.request_timeout", l.request_timeout),
            ("limits.shutdown_timeout", l.shutdown_timeout),
        ] {
            if value < Duration::from_millis(100) || value > Duration::from_secs(3600) {
                return Err(ConfigError::Invalid {
                    key,
                    message: "must be between 100ms and 1h".into(),
                });
            }
        }
        if l.max_connections == 0 || l.max_connections > 1 << 20 {
            return Err(ConfigError::Invalid {
                key: "limits.max_connections",
                message: "must be between 1 and 1048576".into(),
            });
        }
        for (key, rate) in [
            ("limits.client_rate", l.client_rate),
            ("limits.account_order_rate", l.account_order_rate),
        ] {
            if !(rate.is_finite() && rate >= 0.0) {
                return Err(ConfigError::Invalid {
                    key,
                    message: "must be a number of requests a second, 0 for no limit".into(),
                });
            }
        }
        if l.http2_max_streams == 0 {
            return Err(ConfigError::Invalid {
                key: "limits.http2_max_streams",
                message: "must be at least 1".into(),
            });
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            return Err(ConfigError::Invalid {
                key: "log.level",
                message: e.to_string(),
            });
        }
        Ok(())
    }
}

fn check_url(key: &'static str, url: &str) -> Result<(), ConfigError> {
    let ok = (url.starts_with("http://") || url.starts_with("https://"))
        && url.len() > "https://".len()
        && !url.contains(char::is_whitespace);
    if ok {
        Ok(())
    } else {
        Err(ConfigError::Invalid {
            key,
            message: format!("`{url}` is not an http(s) URL"),
        })
    }
}

fn check_file(key: &'static str, path: &Path) -> Result<(), ConfigError> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => Ok(()),
        Ok(_) => Err(ConfigError::Invalid {
            key,
            message: format!("{} is not a file", path.display()),
        }),
        Err(e) => Err(ConfigError::Invalid {
            key,
            message: format!("{}: {e}", path.display()),
        }),
    }
}
