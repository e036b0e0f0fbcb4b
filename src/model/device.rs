//! Devices: how the MDM names them, and what an attestation proved about one.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The device a certificate belongs to, as the MDM names it (serial number, UDID, or its own id).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DeviceId(String);

impl DeviceId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for DeviceId {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        if s.is_empty() || s.len() > 128 {
            return Err("device id must be 1 to 128 bytes".into());
        }
        if s.chars().any(|c| c.is_control()) {
            return Err("device id must not contain control characters".into());
        }
        Ok(Self(s))
    }
}

impl std::str::FromStr for DeviceId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::try_from(s.to_owned())
    }
}

impl From<DeviceId> for String {
    fn from(d: DeviceId) -> String {
        d.0
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeviceId({})", self.0)
    }
}

/// What an attestation says about the device, kept on the authorization and then on the
/// certificate record. Fields a format does not carry stay `None`.
#[derive(utoipa::ToSchema, Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceFacts {
    /// The attestation format that vouched for these facts.
    pub format: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub udid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sepos_version: Option<String>,
    /// System Integrity Protection status as the device reports it (an integer; macOS only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sip_status: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secure_boot: Option<String>,
    /// Third-party kernel extension status (an integer; macOS only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kext_status: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imei: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meid: Option<String>,
    /// Security patch level, `YYYY-MM` (Android).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patch_level: Option<String>,
    /// Where the key lives: `trusted-environment` or `strongbox` (Android).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_level: Option<String>,
    /// Verified-boot state: `verified` or `self-signed` (Android).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified_boot: Option<String>,
    /// The package(s) that generated the key, comma-separated (Android).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attesting_app: Option<String>,
    /// Firmware version: `major.minor.patch` (YubiKey), as the AIK certificate states it (TPM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firmware: Option<String>,
    /// When the key asks for the PIN: `never`, `once`, `always`, `match-once`,
    /// `match-always` (YubiKey).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin_policy: Option<String>,
    /// When the key asks for a touch: `never`, `always`, `cached` (YubiKey).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub touch_policy: Option<String>,
    /// The TPM's manufacturer as its AIK certificate names it, e.g. `id:4E544300` (TPM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm_manufacturer: Option<String>,
    /// The TPM's model, e.g. `NPCT75x` (TPM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm_model: Option<String>,
    /// The model's form factor, e.g. `usb-c-keychain` (YubiKey).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub form_factor: Option<String>,
}
