//! External validation (the Intune / step-ca "webhook" model): an enrolment's details go to a
//! URL the operator runs; a 2xx answer allows it, anything else, or no answer in time, refuses
//! it. SCEP asks about each request, device-attest-01 profiles about each device.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::csr::Names;
use crate::csr::{San, parse_subject};
use crate::model::DeviceId;
use crate::policy::Vouched;

/// What a validator may answer with a 2xx (the body is optional).
#[derive(Debug, Default, Deserialize)]
struct Answer {
    /// The device the certificate is for, as the MDM knows it.
    device: Option<DeviceId>,
    /// The subject the certificate must have, e.g. `CN=dev-42,O=Example`.
    subject: Option<String>,
    /// The subjectAltNames it must have, e.g. `["DNS:dev-42.example"]`.
    sans: Option<Vec<San>>,
}

#[derive(Debug, thiserror::Error)]
pub enum ValidatorError {
    #[error("the validation webhook refused (HTTP {0})")]
    Refused(u16),
    #[error("the validation webhook did not answer: {0}")]
    Unreachable(String),
    #[error("the validation webhook's answer is not usable: {0}")]
    BadAnswer(String),
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

    /// Asks the validator; on approval returns the device and names it stated, if any.
    pub async fn approve(&self, details: &impl Serialize) -> Result<Vouched, ValidatorError> {
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
        // A body that is not JSON still approves: the status is the answer. A JSON answer
        // that states names must state them correctly, or nothing is issued.
        let body = resp.bytes().await.unwrap_or_default();
        let Ok(answer) = serde_json::from_slice::<serde_json::Value>(&body) else {
            return Ok(Vouched::default());
        };
        if !answer.is_object() {
            return Ok(Vouched::default());
        }
        let answer: Answer =
            serde_json::from_value(answer).map_err(|e| ValidatorError::BadAnswer(e.to_string()))?;
        let subject = answer
            .subject
            .map(|s| parse_subject(&s))
            .transpose()
            .map_err(|e| ValidatorError::BadAnswer(format!("subject: {e}")))?;
        Ok(Vouched {
            device: answer.device,
            names: Names {
                subject,
                sans: answer.sans,
            },
        })
    }
}
