//! Authorizations and their challenges (RFC 8555 §7.5): reading and deactivating an
//! authorization, starting a validation, and recording its outcome.

use super::*;

impl AcmeService {
    /// POST to an authorization: read it, or deactivate it.
    pub async fn authorization(&self, req: &Signed, id: &str) -> Result<Authorization, AcmeError> {
        let jws = &req.jws;
        let (_, authz) = self.signed_authz(req, id).await?;
        if jws.is_post_as_get() {
            return Ok(authz.value);
        }
        let req: AuthzUpdate = jws.json()?;
        if req.status != "deactivated" {
            return Err(AcmeError::malformed(
                "an authorization can only be deactivated",
            ));
        }
        let now = self.now();
        if !matches!(
            authz.value.status_at(now),
            AuthzStatus::Pending | AuthzStatus::Valid
        ) {
            return Err(AcmeError::malformed(format!(
                "the authorization is {:?} and cannot be deactivated",
                authz.value.status_at(now)
            )));
        }
        let mut next = authz.value;
        next.status = AuthzStatus::Deactivated;
        self.store()
            .write_docs(vec![AUTHZS.replace(id, authz.version, &next)])
            .await
            .map_err(conflict_is_retryable)?;
        Ok(next)
    }

    /// POST to a challenge: an empty object asks the server to validate it (once); an empty
    /// payload reads it. Validation runs in the background; clients poll.
    pub async fn challenge(
        &self,
        req: &Signed,
        authz_id: &str,
        kind: &str,
    ) -> Result<(Authorization, ChallengeType), AcmeError> {
        let jws = &req.jws;
        let (account, authz) = self.signed_authz(req, authz_id).await?;
        let kind = ChallengeType::parse(kind).ok_or_else(|| AcmeError::not_found("challenge"))?;
        let challenge = authz
            .value
            .challenge(kind)
            .ok_or_else(|| AcmeError::not_found("challenge"))?;
        if jws.is_post_as_get() {
            return Ok((authz.value, kind));
        }
        if kind == ChallengeType::DeviceAttest01 {
            let answer: AttestationAnswer = jws.json()?;
            return self
                .attest(&req.profile, authz, answer, &account.key.thumbprint())
                .await
                .map(|a| (a, kind));
        }
        let _: serde_json::Map<String, serde_json::Value> = jws.json()?;
        let now = self.now();
        if challenge.status != ChallengeStatus::Pending
            || authz.value.status_at(now) != AuthzStatus::Pending
        {
            // Already answered (or no longer answerable): report, do not start again.
            return Ok((authz.value, kind));
        }
        let Some(running) = self.validating.start(authz_id) else {
            // Another request started it; this one reports it.
            return Ok((authz.value, kind));
        };
        let token = challenge.token.clone();
        let key_authorization = format!("{token}.{}", account.key.thumbprint());
        let identifier = authz.value.identifier.clone();
        let (validators, store, clock) = (
            Arc::clone(&self.validators),
            Arc::clone(self.store()),
            Arc::clone(&self.backing.clock),
        );
        let (authz_id, read) = (authz_id.to_owned(), authz.clone());
        let profile = req.profile.name.clone();
        // Spawned, so a client that hangs up does not cancel it.
        let validation = tokio::spawn(async move {
            let outcome = validators
                .validate(&profile, kind, &identifier, &token, &key_authorization)
                .await
                .map(|()| None);
            if let Err(e) = &outcome {
                tracing::info!(authz = %authz_id, %identifier, problem = %e, "challenge failed");
            }
            let now = clock.now();
            let settled = record_outcome(&*store, read, kind, outcome, now)
                .await
                .unwrap_or_else(|e| {
                    tracing::error!(authz = %authz_id, error = %e, "could not record a validation");
                    None
                });
            drop(running);
            settled
        });
        // Most validations take milliseconds: answering with the outcome spares the client a
        // poll (as step-ca does). A slower one goes on and the client polls for it.
        match tokio::time::timeout(SETTLE_WAIT, validation).await {
            Ok(Ok(Some(settled))) => Ok((settled, kind)),
            _ => Ok((authz.value, kind)),
        }
    }

    /// device-attest-01 (draft-ietf-acme-device-attest §5): the answer carries the evidence,
    /// so it is judged at once. Success stores the proof (the attested key and facts, or, on a
    /// profile that does not require attestation, that the ClientIdentifier alone vouched)
    /// on the authorization; any failure leaves it invalid and is reported as the problem.
    async fn attest(
        &self,
        profile: &Profile,
        authz: Stored<Authorization>,
        answer: AttestationAnswer,
        thumbprint: &str,
    ) -> Result<Authorization, AcmeError> {
        let now = self.now();
        let kind = ChallengeType::DeviceAttest01;
        let challenge = authz
            .value
            .challenge(kind)
            .ok_or_else(|| AcmeError::not_found("challenge"))?;
        if challenge.status != ChallengeStatus::Pending
            || authz.value.status_at(now) != AuthzStatus::Pending
        {
            return Ok(authz.value);
        }
        let Some(running) = self.validating.start(&authz.value.id) else {
            return Ok(authz.value);
        };
        // What the attested serial number or UDID must be: the ordered one, or one of those
        // registered for the device a ClientIdentifier stands for.
        let identifiers = match authz.value.hardware_ids.as_slice() {
            [] => vec![authz.value.identifier.value.clone()],
            registered => registered.to_vec(),
        };
        let outcome = match answer {
            AttestationAnswer {
                att_obj: Some(att_obj),
                ..
            } => {
                let (verifier, token, key_types, formats, android, yubikey, tpm) = (
                    Arc::clone(&self.attestation),
                    challenge.token.clone(),
                    profile.config.attestation_key_types.clone(),
                    profile.config.attestation_formats.clone(),
                    profile.config.android.clone(),
                    profile.config.yubikey.clone(),
                    profile.config.tpm.clone(),
                );
                let key_authorization = format!("{token}.{thumbprint}");
                let identifiers = identifiers.clone();
                // Two P-384 verifications and CBOR/X.509 parsing: off the reactor.
                tokio::task::spawn_blocking(move || {
                    let bytes = URL_SAFE_NO_PAD
                        .decode(att_obj.trim_end_matches('='))
                        .map_err(|_| AttestError::Malformed("`attObj` is not base64url".into()))?;
                    verifier.verify(
                        &bytes,
                        &Expected {
                            nonce: freshness_nonce(&token),
                            key_authorization: &key_authorization,
                            identifiers: &identifiers
                                .iter()
                                .map(String::as_str)
                                .collect::<Vec<_>>(),
                            key_types: &key_types,
                            formats: &formats,
                            android: &android,
                            yubikey: &yubikey,
                            tpm: &tpm,
                            now,
                        },
                    )
                })
                .await
                .map_err(|e| AcmeError::internal(format!("attestation task failed: {e}")))?
            }
            AttestationAnswer { error: Some(e), .. } => {
                Err(AttestError::NotSupplied(format!("the device reported {e}")))
            }
            AttestationAnswer { .. } => Err(AttestError::NotSupplied(
                "the answer has no `attObj`".into(),
            )),
        };
        let outcome = match outcome {
            Ok(attestation) => Ok(DeviceProof::Attested(Box::new(attestation))),
            // A device that cannot attest, on a profile that lets its one-time
            // ClientIdentifier (bound to a registered device) vouch for it instead.
            Err(AttestError::NotSupplied(why))
                if !profile.config.require_attestation && !authz.value.hardware_ids.is_empty() =>
            {
                tracing::info!(authz = %authz.value.id, %why,
                    "no attestation; the ClientIdentifier vouches for the device");
                Ok(DeviceProof::Unattested {
                    permanent_identifier: identifiers[0].clone(),
                })
            }
            // Ours, and passing: the challenge stays pending for the device to retry.
            Err(e @ AttestError::Unavailable(_)) => {
                tracing::warn!(authz = %authz.value.id, problem = %e, "attestation not judged");
                return Err(AcmeError::from(e));
            }
            Err(e) => {
                tracing::info!(authz = %authz.value.id, identifier = %authz.value.identifier,
                    problem = %e, "attestation refused");
                Err(AcmeError::from(e))
            }
        };
        let written = record_outcome(
            &**self.store(),
            authz.clone(),
            kind,
            outcome.clone().map(Some),
            now,
        )
        .await;
        drop(running);
        let written = written?;
        outcome?;
        written.ok_or_else(|| AcmeError::malformed("the authorization changed meanwhile"))
    }
}

/// Writes a validation's result into its authorization (as read before the validation), if
/// it is still waiting for it. Returns the authorization as written, or `None` when it was no longer waiting.
async fn record_outcome(
    store: &dyn Store,
    authz: Stored<Authorization>,
    kind: ChallengeType,
    outcome: Result<Option<DeviceProof>, AcmeError>,
    now: OffsetDateTime,
) -> Result<Option<Authorization>, StoreError> {
    let valid = outcome.is_ok();
    let id = authz.value.id.clone();
    AUTHZS
        .update_from(store, &id, Some(authz), |current| {
            let Some(current) = current.filter(|a| a.status_at(now) == AuthzStatus::Pending) else {
                return Ok(None);
            };
            let mut next = current.clone();
            for c in next.challenges.iter_mut().filter(|c| c.kind == kind) {
                c.status = if valid {
                    ChallengeStatus::Valid
                } else {
                    ChallengeStatus::Invalid
                };
                c.validated = valid.then_some(now);
                c.error = outcome.clone().err();
            }
            next.status = if valid {
                AuthzStatus::Valid
            } else {
                AuthzStatus::Invalid
            };
            next.proof = outcome.clone().ok().flatten();
            Ok(Some(next))
        })
        .await
}
