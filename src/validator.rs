//! External validation (the Intune / step-ca "webhook" model): an enrolment's details go to a
//! URL the operator runs; a 2xx answer allows it, anything else, or no answer in time, refuses
//! it. SCEP asks about each request, device-attest-01 profiles about each device.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::store::DeviceId;

/// What a validator may answer with a 2xx (the body is optional).
#[derive(Debug, Default, Deserialize)]
struct Verdict {
    /// The device the certificate is for, as the MDM knows it.
    device: Option<DeviceId>,
}

#[derive(Debug, thiserror::Error)]
pub enum ValidatorError {
    #[error("the validation webhook refused (HTTP {0})")]
    Refused(u16),
    #[error("the validation webhook did not answer: {0}")]
    Unreachable(String),
}

pub struct Validator {
    url: String,
    client: reqwest::Client,
}

impl Validator {
    /// HTTPS validators are authenticated against the system trust store (`SSL_CERT_FILE`
    /// and `SSL_CERT_DIR` are honoured).
    pub fn new(url: String, timeout: Duration) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self { url, client })
    }

    /// Asks the validator; on approval returns the device it named, if any.
    pub async fn approve(
        &self,
        details: &impl Serialize,
    ) -> Result<Option<DeviceId>, ValidatorError> {
        let resp = self
            .client
            .post(&self.url)
            .json(details)
            .send()
            .await
            .map_err(|e| ValidatorError::Unreachable(e.without_url().to_string()))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(ValidatorError::Refused(status.as_u16()));
        }
        // A body that is not a verdict still approves: the status is the answer.
        let body = resp.bytes().await.unwrap_or_default();
        Ok(serde_json::from_slice::<Verdict>(&body)
            .unwrap_or_default()
            .device)
    }
}
